// SPDX-License-Identifier: Apache-2.0

// Package config reads relay.yaml: its schema, the defaults of its
// top-level settings (Default, the one place they live), ${ENV} expansion,
// and a strict decoding that reports every problem of the file at once,
// each naming its field ("limits.rate: want a number, got \"fast\"").
//
// It owns no rule of another package. Whether a value makes sense (a
// tenant's name, a sink's URL, the NATS options) is checked by the package
// that uses it, when the composition layer (cmd/scimrelay) builds the
// components; `scimrelay check` and `serve` run that same build, so they
// cannot disagree. List entries (tenants, sinks) keep the zero value where
// a key is left out, and the component that reads them applies its default.
package config

import (
	"path/filepath"
	"strings"
	"time"
)

// Config is relay.yaml.
type Config struct {
	Listen          string          `yaml:"listen"`
	TLS             ListenerTLS     `yaml:"tls"`
	AdminListen     string          `yaml:"admin_listen"`
	PublicURL       string          `yaml:"public_url"`
	DataDir         string          `yaml:"data_dir"`
	Log             Log             `yaml:"log"`
	Admin           Admin           `yaml:"admin"`
	Storage         Storage         `yaml:"storage"`
	Memory          Memory          `yaml:"memory"`
	NATS            NATS            `yaml:"nats"`
	Limits          Limits          `yaml:"limits"`
	OAuth           OAuth           `yaml:"oauth"`
	ProvisioningLog ProvisioningLog `yaml:"provisioning_log"`
	Tenants         []Tenant        `yaml:"tenants"`
	Sinks           []Sink          `yaml:"sinks"`

	lines map[string]int // field path → line in the file it was read from
	// syncAssumed: nats.sync_interval was left out with nats.url set (resolve).
	syncAssumed bool
}

// Log configures the process log.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// Admin guards the admin API.
type Admin struct {
	// Token is the admin API's bearer token. Empty: serve generates one and
	// writes it to data_dir/admin.token, where the CLI finds it.
	Token string `yaml:"token"`
	// Console serves the web console under /ui/ on the admin listener.
	Console bool `yaml:"console"`
	// SessionIdle signs a console session out after this long unused.
	SessionIdle Duration `yaml:"session_idle"`
	// Hosts are the DNS names the admin listener answers besides
	// localhost (and any IP address): those a reverse proxy sends as Host
	// (Caddy and Traefik pass the client's) or a scraper uses (a
	// Service's name). Other names get 421, against DNS rebinding.
	Hosts []string `yaml:"hosts"`
	// TLS makes the admin listener speak HTTPS only.
	TLS ListenerTLS `yaml:"tls"`
}

// ListenerTLS makes a listener speak HTTPS only, with the certificate
// (PEM, the server's first, then any intermediates) and private key in
// these files, read again when they change. Both empty: plain HTTP.
type ListenerTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// On says whether the listener speaks TLS.
func (t ListenerTLS) On() bool { return t.CertFile != "" || t.KeyFile != "" }

// Memory tunes the Go runtime's memory use in serve.
type Memory struct {
	// GCFloor is the heap below which the garbage collector does not run;
	// above it the collector paces as GOGC=100 does. 0 turns the floor off.
	// GOGC in the environment, when set, wins.
	GCFloor Size `yaml:"gc_floor"`
}

// Storage tunes the bbolt file.
type Storage struct {
	// BatchDelay is how long a write that finds no commit under way waits
	// for others to share its fsync (writes arriving during a commit share
	// the next one anyway).
	BatchDelay Duration `yaml:"batch_delay"`
	// BatchSize caps the writes that share one transaction.
	BatchSize int `yaml:"batch_size"`
	// NoSync disables fsync: acknowledged writes can be lost on power loss.
	// For throwaway benchmarks only.
	NoSync bool `yaml:"no_sync"`
}

// NATS says where events go.
type NATS struct {
	// URL of an external server or cluster; empty runs the embedded server.
	URL string `yaml:"url"`
	// Listen is the embedded server's client listener; "" keeps it in-process.
	Listen string `yaml:"listen"`
	// Credentials (a .creds file), Nkey (a file holding a user nkey seed),
	// Token, and User with Password authenticate to an external NATS.
	Credentials    string   `yaml:"credentials"`
	Nkey           string   `yaml:"nkey"`
	Token          string   `yaml:"token"`
	User           string   `yaml:"user"`
	Password       string   `yaml:"password"`
	TLS            TLS      `yaml:"tls"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// SyncInterval is how often the NATS server writes its store to disk
	// (fsync): the embedded server is run with it, and the relay keeps each
	// event JetStream acknowledged in its outbox for three times as long,
	// so that a crash of the machine cannot lose one the server held only
	// in memory. 0: every message is written to disk before it is
	// acknowledged (nats-server's sync_always), and the relay keeps none.
	// For an external server it is what the relay assumes of it, not a
	// setting it applies; unset, the relay assumes nats-server's own
	// default, ExternalSyncInterval.
	SyncInterval Duration `yaml:"sync_interval"`
	Stream       Stream   `yaml:"stream"`
}

// TLS configures TLS. With an external NATS: ca_file is the CA that signed
// the server's certificate, cert_file and key_file the relay's client
// certificate. With the embedded server: cert_file and key_file are its
// listener's certificate (subscribers must then use TLS), and ca_file,
// when set, the CA that subscribers' client certificates must chain to.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Stream tunes the SCIMRELAY stream.
type Stream struct {
	// Replicas: 0 picks 1 for the embedded server or a single external
	// server, and 3 for a cluster.
	Replicas   int      `yaml:"replicas"`
	MaxAge     Duration `yaml:"max_age"`
	Duplicates Duration `yaml:"duplicates"`
	// Partitions is how many partitions the stream spreads resources over;
	// each is a consumer per sink, delivered by one worker at a time.
	Partitions int `yaml:"partitions"`
}

// Limits protect the SCIM listener.
type Limits struct {
	// Rate is the requests per second each tenant may make (token bucket); 0 disables.
	Rate         float64 `yaml:"rate"`
	Burst        int     `yaml:"burst"`
	MaxBody      Size    `yaml:"max_body"`
	MaxJSONDepth int     `yaml:"max_json_depth"`
	MaxHeader    Size    `yaml:"max_header"`
	// BulkMaxOperations and BulkMaxPayload bound a /Bulk request; both are
	// advertised in ServiceProviderConfig.
	BulkMaxOperations int  `yaml:"bulk_max_operations"`
	BulkMaxPayload    Size `yaml:"bulk_max_payload"`
	// MaxSortMatches bounds a SCIM list with sortBy: more matches get 400
	// tooMany (each match is held, as its sort key and id, to sort).
	MaxSortMatches    int      `yaml:"max_sort_matches"`
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	ReadTimeout       Duration `yaml:"read_timeout"`
	WriteTimeout      Duration `yaml:"write_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	// ShutdownDelay is how long the SCIM listener goes on answering after
	// a stop signal, /readyz failing meanwhile, before it stops taking
	// requests: a load balancer's time to see it leave. 0: none.
	ShutdownDelay Duration `yaml:"shutdown_delay"`
}

// OAuth configures each tenant's OAuth 2.0 token endpoint,
// <public_url>/oauth2/<tenant>/token (client credentials grant), and HTTP
// Basic with an OAuth client's id and secret.
type OAuth struct {
	// TokenLifetime is how long an access token lives.
	TokenLifetime Duration `yaml:"token_lifetime"`
	// Rate and Burst limit token requests (token buckets): per client for
	// the tokens issued to it, per caller address for the rest; 0 disables.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
	// BasicAuth accepts Authorization: Basic with a client's id and secret
	// on the SCIM endpoints (Okta's "Basic Auth" option).
	BasicAuth bool `yaml:"basic_auth"`
}

// ProvisioningLog configures the record of SCIM requests and deliveries.
type ProvisioningLog struct {
	Retention Duration `yaml:"retention"`
	// MaxBytes bounds the log's space in the data file, and apart the
	// delivery attempts' stream in the NATS store; past it the oldest
	// entries go.
	MaxBytes Size `yaml:"max_bytes"`
	// Reads is how successful reads are recorded: aggregate (per minute)
	// or all (one by one).
	Reads string `yaml:"reads"`
}

// Tenant is one SCIM base path, /scim/v2/<name>, with its own tokens and index.
type Tenant struct {
	Name string `yaml:"name"`
	// Tokens are static bearer tokens (GitOps); empty entries are ignored.
	Tokens []string `yaml:"tokens"`
	// Unique is what makes a user unique: userName (the default) or email
	// (the work email).
	Unique string `yaml:"unique"`
	// Required lists attributes every User must carry, e.g. [emails].
	Required []string `yaml:"required"`
	// Rate and Burst, each when not zero, replace limits.rate and
	// limits.burst for this tenant.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// Sink is a delivery target.
// Left-out keys stay zero; the sinks package applies its defaults.
type Sink struct {
	Name   string `yaml:"name"`
	Type   string `yaml:"type"` // webhook (the default and only type)
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
	// PreviousSecret signs too while Secret replaces it; PreviousSecretExpires
	// (RFC 3339) ends that overlap.
	PreviousSecret        string `yaml:"previous_secret"`
	PreviousSecretExpires string `yaml:"previous_secret_expires"`
	// Events selects event types: "*", "user.*", "group.member_added" …; empty = all.
	Events []string `yaml:"events"`
	// Tenants selects tenants; empty = all.
	Tenants      []string          `yaml:"tenants"`
	Format       string            `yaml:"format"` // binary (the default) or structured
	Timeout      Duration          `yaml:"timeout"`
	Headers      map[string]string `yaml:"headers"`
	AllowPrivate bool              `yaml:"allow_private"`
	// AllowPrivateProxy lets a proxy from HTTPS_PROXY/HTTP_PROXY be on a
	// loopback or private address.
	AllowPrivateProxy bool `yaml:"allow_private_proxy"`
	Concurrency       int  `yaml:"concurrency"`
	// Batch, when present, sends several events per request.
	Batch *SinkBatch `yaml:"batch"`
	// Retry replaces the sink's retry schedule: the delay before each retry.
	Retry []Duration `yaml:"retry"`
}

// SinkBatch is a sink's batched delivery.
type SinkBatch struct {
	MaxEvents int      `yaml:"max_events"`
	MaxWait   Duration `yaml:"max_wait"`
	MaxBytes  Size     `yaml:"max_bytes"`
}

// Default returns the configuration every relay.yaml starts from.
func Default() *Config {
	return &Config{
		Listen:      "127.0.0.1:8080",
		AdminListen: "127.0.0.1:8081",
		DataDir:     "./data",
		Admin:       Admin{Console: true, SessionIdle: Duration(30 * time.Minute), Hosts: []string{}},
		Log:         Log{Level: "info", Format: "text"},
		Storage:     Storage{BatchDelay: 0, BatchSize: 1000},
		Memory:      Memory{GCFloor: 128 << 20},
		NATS: NATS{
			Listen:         "127.0.0.1:4222",
			ConnectTimeout: Duration(5 * time.Second),
			SyncInterval:   Duration(250 * time.Millisecond),
			Stream:         Stream{MaxAge: Duration(7 * 24 * time.Hour), Duplicates: Duration(10 * time.Minute), Partitions: 16},
		},
		Limits: Limits{
			Rate:              200,
			Burst:             400,
			MaxBody:           4 << 20,
			MaxJSONDepth:      32,
			MaxHeader:         64 << 10,
			MaxSortMatches:    50_000,
			ReadHeaderTimeout: Duration(10 * time.Second),
			ReadTimeout:       Duration(30 * time.Second),
			WriteTimeout:      Duration(60 * time.Second),
			IdleTimeout:       Duration(120 * time.Second),
			BulkMaxOperations: 1000,
			BulkMaxPayload:    1 << 20,
		},
		OAuth:           OAuth{TokenLifetime: Duration(time.Hour), Rate: 5, Burst: 20, BasicAuth: true},
		ProvisioningLog: ProvisioningLog{Retention: Duration(30 * 24 * time.Hour), MaxBytes: 512 << 20, Reads: "aggregate"},
	}
}

// DBPath is the bbolt file.
func (c *Config) DBPath() string { return filepath.Join(c.DataDir, "scimrelay.db") }

// NATSDir is the embedded NATS server's store.
func (c *Config) NATSDir() string { return filepath.Join(c.DataDir, "nats") }

// AdminTokenPath is where serve writes a generated admin token.
func (c *Config) AdminTokenPath() string { return filepath.Join(c.DataDir, "admin.token") }

// InitialTokenPath is where serve writes the tokens it creates on first
// start when its output is not a terminal.
func (c *Config) InitialTokenPath() string { return filepath.Join(c.DataDir, "initial-token") }

// ExternalSyncInterval is what the relay assumes of an external NATS
// server when nats.sync_interval does not say: nats-server's own default
// sync_interval. Assuming the embedded server's shorter default would let
// the relay delete events that server had not yet written to disk.
const ExternalSyncInterval = 2 * time.Minute

// resolve sets the defaults that depend on other keys.
func (c *Config) resolve() {
	// A token from an environment variable filled from a file (a
	// Kubernetes Secret) often ends in a newline, which no client sends.
	c.Admin.Token = strings.TrimSpace(c.Admin.Token)
	if !c.Embedded() && !c.Sets("nats.sync_interval") {
		c.NATS.SyncInterval = Duration(ExternalSyncInterval)
		c.syncAssumed = true
	}
}

// SyncIntervalAssumed reports whether nats.sync_interval is
// ExternalSyncInterval because the file names an external NATS and leaves
// the key out.
func (c *Config) SyncIntervalAssumed() bool { return c.syncAssumed }

// Sets reports whether the file sets field (a path such as
// "nats.sync_interval"), as opposed to leaving it at its default.
func (c *Config) Sets(field string) bool {
	_, ok := c.lines[field]
	return ok
}

// Embedded reports whether the relay runs its own NATS server.
func (c *Config) Embedded() bool { return strings.TrimSpace(c.NATS.URL) == "" }

// Line returns the line of the file on which field (a path such as
// "sinks[0].url") or, when the file does not set it, its nearest parent was
// set; 0 when neither was, or the configuration was not read from a file.
func (c *Config) Line(field string) int {
	for field != "" {
		if n, ok := c.lines[field]; ok {
			return n
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			break
		}
		field = field[:i]
	}
	return 0
}
