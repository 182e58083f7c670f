// SPDX-License-Identifier: Apache-2.0

// Package config is relay.yaml: its schema, its defaults (in Default, the one
// place they live), ${ENV} expansion, strict decoding, and validation that
// reports every problem at once, each naming its field.
package config

import (
	"path/filepath"
	"strings"
	"time"
)

// Config is relay.yaml.
type Config struct {
	Listen          string          `yaml:"listen"`
	AdminListen     string          `yaml:"admin_listen"`
	PublicURL       string          `yaml:"public_url"`
	DataDir         string          `yaml:"data_dir"`
	Log             Log             `yaml:"log"`
	Admin           Admin           `yaml:"admin"`
	Storage         Storage         `yaml:"storage"`
	NATS            NATS            `yaml:"nats"`
	Limits          Limits          `yaml:"limits"`
	OAuth           OAuth           `yaml:"oauth"`
	ProvisioningLog ProvisioningLog `yaml:"provisioning_log"`
	Tenants         []Tenant        `yaml:"tenants"`
	Sinks           []Sink          `yaml:"sinks"`
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
}

// Storage tunes the bbolt file.
type Storage struct {
	// BatchDelay is how long a write waits for others to share its fsync.
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
	Stream         Stream   `yaml:"stream"`
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
}

// OAuth configures each tenant's OAuth 2.0 token endpoint,
// <public_url>/oauth2/<tenant>/token (client credentials grant), and HTTP
// Basic with an OAuth client's id and secret.
type OAuth struct {
	// TokenLifetime is how long an access token lives.
	TokenLifetime Duration `yaml:"token_lifetime"`
	// Rate and Burst limit token requests per tenant (token bucket); 0 disables.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
	// BasicAuth accepts Authorization: Basic with a client's id and secret
	// on the SCIM endpoints (Okta's "Basic Auth" option).
	BasicAuth bool `yaml:"basic_auth"`
}

// ProvisioningLog configures the record of SCIM requests and deliveries.
type ProvisioningLog struct {
	Retention Duration `yaml:"retention"`
}

// Tenant is one SCIM base path, /scim/v2/<name>, with its own tokens and index.
type Tenant struct {
	Name string `yaml:"name"`
	// Tokens are static bearer tokens (GitOps); empty entries are ignored.
	Tokens []string `yaml:"tokens"`
	// Unique is what makes a user unique: userName or email (the work email).
	Unique string `yaml:"unique"`
	// Required lists attributes every User must carry, e.g. [emails].
	Required []string `yaml:"required"`
	// Rate and Burst override limits.rate and limits.burst when non-zero.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// Sink is a delivery target.
type Sink struct {
	Name   string `yaml:"name"`
	Type   string `yaml:"type"`
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
	// Events selects event types: "*", "user.*", "group.member_added" …; empty = all.
	Events []string `yaml:"events"`
	// Tenants selects tenants; empty = all.
	Tenants      []string          `yaml:"tenants"`
	Format       string            `yaml:"format"` // binary or structured
	Timeout      Duration          `yaml:"timeout"`
	Headers      map[string]string `yaml:"headers"`
	AllowPrivate bool              `yaml:"allow_private"`
	Concurrency  int               `yaml:"concurrency"`
	// Retry overrides the default retry schedule (sinks.DefaultSchedule):
	// the delay before each retry.
	Retry []Duration `yaml:"retry"`
}

// Unique modes.
const (
	UniqueUserName = "userName"
	UniqueEmail    = "email"
)

// Default returns the configuration every relay.yaml starts from.
func Default() *Config {
	return &Config{
		Listen:      "127.0.0.1:8080",
		AdminListen: "127.0.0.1:8081",
		DataDir:     "./data",
		Log:         Log{Level: "info", Format: "text"},
		Storage:     Storage{BatchDelay: Duration(time.Millisecond), BatchSize: 1000},
		NATS: NATS{
			Listen:         "127.0.0.1:4222",
			ConnectTimeout: Duration(5 * time.Second),
			Stream:         Stream{MaxAge: Duration(7 * 24 * time.Hour), Duplicates: Duration(10 * time.Minute)},
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
		ProvisioningLog: ProvisioningLog{Retention: Duration(30 * 24 * time.Hour)},
	}
}

// Defaults applied to each tenant and sink that leaves a field unset.
const (
	defaultSinkFormat      = "binary"
	defaultSinkTimeout     = 10 * time.Second
	defaultSinkConcurrency = 16
)

// applyListDefaults fills in per-tenant and per-sink defaults, which a
// decoder cannot pre-populate the way it does the top-level ones.
func (c *Config) applyListDefaults() {
	for i := range c.Tenants {
		t := &c.Tenants[i]
		if t.Unique == "" {
			t.Unique = UniqueUserName
		}
	}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		if s.Type == "" {
			s.Type = "webhook"
		}
		if s.Format == "" {
			s.Format = defaultSinkFormat
		}
		if s.Timeout == 0 {
			s.Timeout = Duration(defaultSinkTimeout)
		}
		if s.Concurrency == 0 {
			s.Concurrency = defaultSinkConcurrency
		}
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

// Embedded reports whether the relay runs its own NATS server.
func (c *Config) Embedded() bool { return strings.TrimSpace(c.NATS.URL) == "" }

// StreamReplicas resolves nats.stream.replicas: 1 embedded, 3 on a cluster.
func (c *Config) StreamReplicas() int {
	switch {
	case c.NATS.Stream.Replicas > 0:
		return c.NATS.Stream.Replicas
	case c.Embedded():
		return 1
	}
	return 3
}

// Tenant returns the tenant called name.
func (c *Config) Tenant(name string) (Tenant, bool) {
	for _, t := range c.Tenants {
		if t.Name == name {
			return t, true
		}
	}
	return Tenant{}, false
}

// Sink returns the sink called name.
func (c *Config) Sink(name string) (Sink, bool) {
	for _, s := range c.Sinks {
		if s.Name == name {
			return s, true
		}
	}
	return Sink{}, false
}

// StaticTokens returns the tenant's non-empty static tokens.
func (t Tenant) StaticTokens() []string {
	var out []string
	for _, tok := range t.Tokens {
		if tok = strings.TrimSpace(tok); tok != "" {
			out = append(out, tok)
		}
	}
	return out
}
