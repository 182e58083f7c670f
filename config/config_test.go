// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

const minimal = "tenants:\n  - name: acme\n"

func parse(t *testing.T, text string, vars map[string]string) (*Config, Problems) {
	t.Helper()
	cfg, err := Parse([]byte(text), env(vars))
	if err == nil {
		return cfg, nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse returned %T %v, want Problems", err, err)
	}
	return nil, ps
}

// TestRepositoryFile checks that the relay.yaml a newcomer runs is valid and
// means what its comments say.
func TestRepositoryFile(t *testing.T) {
	data, err := os.ReadFile("../relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data, env(nil))
	if err != nil {
		t.Fatalf("relay.yaml does not validate: %v", err)
	}
	if !cfg.Embedded() || cfg.NATS.Listen != "127.0.0.1:4222" || cfg.StreamReplicas() != 1 || cfg.Admin.Token != "" {
		t.Errorf("relay.yaml: embedded %v, listen %q, replicas %d, admin token %q", cfg.Embedded(), cfg.NATS.Listen, cfg.StreamReplicas(), cfg.Admin.Token)
	}
	if len(cfg.Tenants) != 1 || cfg.Tenants[0].Name != "default" || len(cfg.Tenants[0].StaticTokens()) != 0 || len(cfg.Sinks) != 0 {
		t.Errorf("relay.yaml tenants %+v sinks %+v", cfg.Tenants, cfg.Sinks)
	}
	with, err := Parse(data, env(map[string]string{"DEFAULT_SCIM_TOKEN": "abcdefghijklmnopqrstuvwxyz"}))
	if err != nil || with.Tenants[0].StaticTokens()[0] != "abcdefghijklmnopqrstuvwxyz" {
		t.Errorf("DEFAULT_SCIM_TOKEN not picked up: %v", err)
	}
	// Everything the file sets explicitly equals the defaults it documents.
	d := Default()
	if cfg.Limits != d.Limits || cfg.OAuth != d.OAuth || cfg.NATS.Stream != d.NATS.Stream || cfg.Storage != d.Storage || cfg.ProvisioningLog != d.ProvisioningLog {
		t.Errorf("relay.yaml drifted from Default():\n%+v\n%+v", cfg.Limits, d.Limits)
	}
}

func TestDefaults(t *testing.T) {
	cfg, ps := parse(t, minimal, nil)
	if ps != nil {
		t.Fatal(ps)
	}
	want := Default()
	want.Tenants = []Tenant{{Name: "acme", Unique: UniqueUserName}}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
	if cfg.DBPath() != "data/scimrelay.db" || cfg.NATSDir() != "data/nats" || cfg.AdminTokenPath() != "data/admin.token" {
		t.Errorf("paths: %s %s %s", cfg.DBPath(), cfg.NATSDir(), cfg.AdminTokenPath())
	}
	s, ps := parse(t, minimal+"sinks:\n  - name: crm\n    url: https://crm.example.com/h\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", nil)
	if ps != nil {
		t.Fatal(ps)
	}
	sink := s.Sinks[0]
	if sink.Type != "webhook" || sink.Format != "binary" || time.Duration(sink.Timeout) != 10*time.Second || sink.Concurrency != 16 ||
		sink.Retry != nil {
		t.Errorf("sink defaults: %+v", sink)
	}
}

func TestEnvExpansion(t *testing.T) {
	vars := map[string]string{"TOKEN": "tok-0123456789abcdefghij", "RATE": "50", "EMPTY": "", "HOSTILE": "x\nadmin_listen: 0.0.0.0:1 # injected"}
	cfg, ps := parse(t, `
public_url: "${URL:-https://relay.example.com}"
data_dir: "/var/lib/$$scimrelay"
limits:
  rate: ${RATE}
admin:
  token: ${HOSTILE}
tenants:
  - name: acme
    tokens: ["${TOKEN}", "${EMPTY}", "${UNSET}"]
`, vars)
	if ps != nil {
		t.Fatal(ps)
	}
	if cfg.PublicURL != "https://relay.example.com" || cfg.DataDir != "/var/lib/$scimrelay" || cfg.Limits.Rate != 50 {
		t.Errorf("public_url %q data_dir %q rate %v", cfg.PublicURL, cfg.DataDir, cfg.Limits.Rate)
	}
	if got := cfg.Tenants[0].StaticTokens(); len(got) != 1 || got[0] != vars["TOKEN"] {
		t.Errorf("static tokens %q", got)
	}
	// A variable's content is a value, never YAML structure.
	if cfg.Admin.Token != vars["HOSTILE"] || cfg.AdminListen != "127.0.0.1:8081" {
		t.Errorf("expansion changed the file's structure: admin token %q, admin_listen %q", cfg.Admin.Token, cfg.AdminListen)
	}
	// Expansion does not happen inside comments.
	if _, ps := parse(t, minimal+"# ${NOT_CLOSED\n", nil); ps != nil {
		t.Errorf("a comment was expanded: %v", ps)
	}
	_, ps = parse(t, minimal+"public_url: ${BROKEN\n", nil)
	wantProblem(t, ps, "public_url", "unterminated")
	_, ps = parse(t, minimal+"public_url: ${1X}\n", nil)
	wantProblem(t, ps, "public_url", "not a valid environment variable")
}

func TestNATSListenAbsentVersusEmpty(t *testing.T) {
	absent, _ := parse(t, minimal+"nats:\n  url: \"\"\n", nil)
	empty, _ := parse(t, minimal+"nats:\n  listen: \"\"\n", nil)
	null, _ := parse(t, minimal+"nats:\n", nil)
	if absent.NATS.Listen != "127.0.0.1:4222" || null.NATS.Listen != "127.0.0.1:4222" || empty.NATS.Listen != "" {
		t.Errorf("absent %q, null %q, explicit empty %q", absent.NATS.Listen, null.NATS.Listen, empty.NATS.Listen)
	}
	if null.NATS.ConnectTimeout != Default().NATS.ConnectTimeout {
		t.Error("a null nats: wiped the nested defaults")
	}
}

func TestProblems(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	tests := []struct {
		name, yaml, field, message string
	}{
		{"unknown key", minimal + "listne: x\n", "listne", "unknown key"},
		{"misspelt key suggests", minimal + "adminListen: x\n", "adminListen", `did you mean "admin_listen"`},
		{"unknown nested key", minimal + "nats:\n  urll: x\n", "nats.urll", "unknown key"},
		{"unknown tenant key", "tenants:\n  - name: a\n    token: x\n", "tenants[0].token", "unknown key"},
		{"wrong type", minimal + "limits:\n  burst: lots\n", "", "cannot unmarshal"},
		{"bad duration", minimal + "provisioning_log:\n  retention: forever\n", "", "duration"},
		{"bad size", minimal + "limits:\n  max_body: big\n", "", "size"},
		{"sort limit", minimal + "limits:\n  max_sort_matches: 0\n", "limits.max_sort_matches", "positive"},
		{"no tenants", "listen: 127.0.0.1:8080\n", "tenants", "at least one"},
		{"bad listen", minimal + "listen: 8080\n", "listen", "host:port"},
		{"same listeners", minimal + "admin_listen: 127.0.0.1:8080\n", "admin_listen", "must differ"},
		{"bad public_url", minimal + "public_url: relay.example.com\n", "public_url", "absolute"},
		{"public_url query", minimal + "public_url: https://x/?a=b\n", "public_url", "query"},
		{"empty data_dir", minimal + "data_dir: \"\"\n", "data_dir", "empty"},
		{"log level", minimal + "log:\n  level: loud\n", "log.level", "debug, info, warn, error"},
		{"batch delay", minimal + "storage:\n  batch_delay: 1s\n", "storage.batch_delay", "100ms"},
		{"nats url scheme", minimal + "nats:\n  url: http://x:4222\n", "nats.url", "scheme"},
		{"embedded replicas", minimal + "nats:\n  stream:\n    replicas: 3\n", "nats.stream.replicas", "embedded"},
		{"odd replicas", minimal + "nats:\n  url: nats://a:4222\n  stream:\n    replicas: 2\n", "nats.stream.replicas", "0 (automatic), 1, 3 or 5"},
		{"creds without url", minimal + "nats:\n  credentials: /x.creds\n", "nats.credentials", "external"},
		{"nkey without url", minimal + "nats:\n  nkey: /relay.nk\n", "nats.nkey", "external"},
		{"embedded tls without a listener", minimal + "nats:\n  listen: \"\"\n  tls:\n    cert_file: c.pem\n    key_file: k.pem\n", "nats.tls", "nats.listen is empty"},
		{"embedded client CA without a certificate", minimal + "nats:\n  tls:\n    ca_file: ca.pem\n", "nats.tls.ca_file", "needs cert_file"},
		{"cert without key", minimal + "nats:\n  url: tls://a:4222\n  tls:\n    cert_file: c.pem\n", "nats.tls", "together"},
		{"dup window", minimal + "nats:\n  stream:\n    max_age: 1m\n    duplicates: 1h\n", "nats.stream.duplicates", "max_age"},
		{"rate without burst", minimal + "limits:\n  burst: 0\n", "limits.burst", "at least 1"},
		{"json depth", minimal + "limits:\n  max_json_depth: 1\n", "limits.max_json_depth", "between"},
		{"bulk operations", minimal + "limits:\n  bulk_max_operations: 0\n", "limits.bulk_max_operations", "between 1 and 100000"},
		{"bulk payload", minimal + "limits:\n  bulk_max_payload: 10\n", "limits.bulk_max_payload", "1KiB"},
		{"token lifetime", minimal + "oauth:\n  token_lifetime: 30d\n", "oauth.token_lifetime", "between 1m and 24h"},
		{"oauth rate without burst", minimal + "oauth:\n  burst: 0\n", "oauth.burst", "at least 1"},
		{"negative oauth rate", minimal + "oauth:\n  rate: -1\n", "oauth.rate", "negative"},
		{"tenant name", "tenants:\n  - name: Acme Corp\n", "tenants[0].name", "[a-z0-9]"},
		{"duplicate tenant", "tenants:\n  - name: a\n  - name: a\n", "tenants[1].name", "also tenants[0]"},
		{"short token", "tenants:\n  - name: a\n    tokens: [short]\n", "tenants[0].tokens[0]", "at least 20"},
		{"unique mode", "tenants:\n  - name: a\n    unique: phone\n", "tenants[0].unique", "userName or email"},
		{"required attribute", "tenants:\n  - name: a\n    required: [shoeSize]\n", "tenants[0].required[0]", "shoeSize"},
		{"sink name", minimal + "sinks:\n  - name: CRM\n    url: https://x\n    secret: " + secret + "\n", "sinks[0].name", "[a-z0-9]"},
		{"duplicate sink", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: " + secret + "\n  - name: a\n    url: https://y\n    secret: " + secret + "\n", "sinks[1].name", "also sinks[0]"},
		{"sink type", minimal + "sinks:\n  - name: a\n    type: kafka\n    url: https://x\n    secret: " + secret + "\n", "sinks[0].type", "webhook"},
		{"sink url", minimal + "sinks:\n  - name: a\n    url: ftp://x\n    secret: " + secret + "\n", "sinks[0].url", "http(s)"},
		{"sink secret missing", minimal + "sinks:\n  - name: a\n    url: https://x\n", "sinks[0].secret", "required"},
		{"sink secret prefix", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: abc\n", "sinks[0].secret", "whsec_"},
		{"sink secret short", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: whsec_c2hvcnQ=\n", "sinks[0].secret", "24 to 64"},
		{"sink events", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: " + secret + "\n    events: [users]\n", "sinks[0].events[0]", "users"},
		{"sink tenant", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: " + secret + "\n    tenants: [globex]\n", "sinks[0].tenants[0]", "globex"},
		{"sink format", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: " + secret + "\n    format: xml\n", "sinks[0].format", "binary, structured"},
		{"sink timeout", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: " + secret + "\n    timeout: 1h\n", "sinks[0].timeout", "5m"},
		{"reserved header", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: " + secret + "\n    headers: {webhook-signature: x}\n", "sinks[0].headers.webhook-signature", "cannot be overridden"},
		{"concurrency", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: " + secret + "\n    concurrency: 5000\n", "sinks[0].concurrency", "1024"},
		{"retry", minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: " + secret + "\n    retry: [5s, 0]\n", "sinks[0].retry[1]", "positive"},
		{"not a mapping", "- a\n- b\n", "", "mapping"},
		{"not yaml", "tenants: [\n", "", "not valid YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := parse(t, tt.yaml, nil)
			wantProblem(t, ps, tt.field, tt.message)
		})
	}
}

func wantProblem(t *testing.T, ps Problems, field, message string) {
	t.Helper()
	for _, p := range ps {
		if p.Field == field && strings.Contains(p.Message, message) {
			return
		}
	}
	t.Fatalf("no problem %s: ...%s...; got %v", field, message, ps)
}

func TestEveryProblemAtOnce(t *testing.T) {
	_, ps := parse(t, `
listen: nope
public_url: ftp://x
tenants:
  - name: Bad Name
    unique: phone
sinks:
  - name: a
    url: https://x
`, nil)
	if len(ps) != 5 {
		t.Fatalf("%d problems, want 5 (listen, public_url, tenant name, unique, sink secret): %v", len(ps), ps)
	}
	msg := ps.Error()
	if !strings.HasPrefix(msg, "configuration has 5 problems:") || strings.Count(msg, "\n  - ") != 5 {
		t.Errorf("message:\n%s", msg)
	}
	// Unknown keys carry their line.
	_, ps = parse(t, "tenants:\n  - name: a\nlisten_addr: x\n", nil)
	if len(ps) != 1 || ps[0].Line != 3 || !strings.Contains(ps[0].String(), "(line 3)") {
		t.Errorf("unknown key problem: %v", ps)
	}
}

func TestLoad(t *testing.T) {
	if _, err := Load("testdata/does-not-exist.yaml"); err == nil || !strings.Contains(err.Error(), "reading configuration") {
		t.Errorf("missing file: %v", err)
	}
	cfg, err := Load("../relay.yaml")
	if err != nil || cfg.Tenants[0].Name != "default" {
		t.Errorf("Load(../relay.yaml): %v", err)
	}
}

func TestDurationAndSize(t *testing.T) {
	for in, want := range map[string]time.Duration{"10s": 10 * time.Second, "90d": 90 * 24 * time.Hour, "1d12h": 36 * time.Hour, "0": 0, "1h30m": 90 * time.Minute} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "-1d", "5", "1.5d", "1d-1h", "999999d", "10 s"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted it", bad)
		}
	}
	for in, want := range map[string]int64{"4MiB": 4 << 20, "64KiB": 64 << 10, "1048576": 1 << 20, "1GB": 1e9, "2 MiB": 2 << 20, "10B": 10} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1.5MiB", "1TB", "99999999999GiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted it", bad)
		}
	}
	if Duration(7*24*time.Hour).String() != "7d" || Duration(90*time.Second).String() != "1m30s" || Size(4<<20).String() != "4MiB" || Size(1000).String() != "1000" {
		t.Error("String forms are not what relay.yaml spells")
	}
}

// TestDefaultRoundTrip marshals Default() and parses it back.
func TestDefaultRoundTrip(t *testing.T) {
	d := Default()
	d.Tenants = []Tenant{{Name: "acme", Unique: UniqueUserName}}
	b, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	got, ps := parse(t, string(b), nil)
	if ps != nil {
		t.Fatalf("%v\n%s", ps, b)
	}
	again, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(b) {
		t.Errorf("round trip changed the configuration:\n%s\nbecame\n%s", b, again)
	}
}

func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("../relay.yaml"); err == nil {
		f.Add(string(data))
	}
	f.Add(minimal + "sinks:\n  - name: a\n    url: https://x\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    retry: [5s]\n")
	f.Add("nats:\n  url: ${X:-nats://a:4222}\n  stream: {replicas: 3, max_age: 1d}\n" + minimal)
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := Parse([]byte(s), env(map[string]string{"X": "y"}))
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("Parse returned %v, want Problems", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("a parsed configuration does not validate again: %v", err)
		}
	})
}
