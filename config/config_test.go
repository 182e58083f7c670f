// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"fmt"
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
	return cfg, ps
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
	if !cfg.Embedded() || cfg.NATS.Listen != "127.0.0.1:4222" || cfg.NATS.Stream.Replicas != 0 || cfg.Admin.Token != "" {
		t.Errorf("relay.yaml: embedded %v, listen %q, replicas %d, admin token %q", cfg.Embedded(), cfg.NATS.Listen, cfg.NATS.Stream.Replicas, cfg.Admin.Token)
	}
	if len(cfg.Tenants) != 1 || cfg.Tenants[0].Name != "default" || cfg.Tenants[0].Tokens[0] != "" || len(cfg.Sinks) != 0 {
		t.Errorf("relay.yaml tenants %+v sinks %+v", cfg.Tenants, cfg.Sinks)
	}
	with, err := Parse(data, env(map[string]string{"DEFAULT_SCIM_TOKEN": "abcdefghijklmnopqrstuvwxyz", "SCIMRELAY_ADMIN_TOKEN": "admin"}))
	if err != nil || with.Tenants[0].Tokens[0] != "abcdefghijklmnopqrstuvwxyz" || with.Admin.Token != "admin" {
		t.Errorf("DEFAULT_SCIM_TOKEN and SCIMRELAY_ADMIN_TOKEN not picked up: %v", err)
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
	want.Tenants = []Tenant{{Name: "acme"}}
	if cfg.Line("tenants[0].name") != 2 || cfg.Line("tenants[0].unique") != 2 || cfg.Line("tenants") != 1 || cfg.Line("listen") != 0 {
		t.Errorf("lines: %v", cfg.lines)
	}
	cfg.lines = nil
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
	// List entries keep what the file says; the sinks package fills in the rest.
	if sink := s.Sinks[0]; !reflect.DeepEqual(sink, Sink{Name: "crm", URL: "https://crm.example.com/h", Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}) {
		t.Errorf("sink: %+v", sink)
	}
	// An optional block: absent or null is nil, present (even empty) is set.
	for text, want := range map[string]*SinkBatch{
		"":                                   nil,
		"    batch: ~\n":                     nil,
		"    batch: {}\n":                    {},
		"    batch: {max_events: 5}\n":       {MaxEvents: 5},
		"    batch:\n      max_wait: 20ms\n": {MaxWait: Duration(20 * time.Millisecond)},
		"    batch: {max_bytes: 4MiB}\n":     {MaxBytes: 4 << 20},
	} {
		s, ps := parse(t, minimal+"sinks:\n  - name: crm\n"+text, nil)
		if ps != nil {
			t.Fatal(ps)
		}
		if got := s.Sinks[0].Batch; !reflect.DeepEqual(got, want) {
			t.Errorf("%q: batch %+v, want %+v", text, got, want)
		}
	}
	if _, ps := parse(t, minimal+"sinks:\n  - name: crm\n    batch: 5\n", nil); ps == nil || !strings.Contains(ps.Error(), "sinks[0].batch") {
		t.Errorf("a batch that is not a mapping: %v", ps)
	}
}

// TestExternalNATSSyncInterval: with nats.url and no nats.sync_interval,
// the relay assumes nats-server's own default of an external server, not
// the interval it runs its embedded server with; a value the file gives,
// 0 included, is taken as given.
func TestExternalNATSSyncInterval(t *testing.T) {
	const external = "nats:\n  url: nats://n1:4222\n"
	for _, tt := range []struct {
		name, text string
		want       time.Duration
		set        bool
	}{
		{"embedded", "", 250 * time.Millisecond, false},
		{"embedded, url empty", "nats:\n  url: ${SCIMRELAY_TEST_UNSET:-}\n", 250 * time.Millisecond, false},
		{"external", external, ExternalSyncInterval, false},
		{"external, set", external + "  sync_interval: 1s\n", time.Second, true},
		{"external, sync_always", external + "  sync_interval: 0\n", 0, true},
		{"external, set to the embedded default", external + "  sync_interval: 250ms\n", 250 * time.Millisecond, true},
		{"external, set to nats-server's default", external + "  sync_interval: 2m\n", ExternalSyncInterval, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, ps := parse(t, minimal+tt.text, nil)
			if ps != nil {
				t.Fatal(ps)
			}
			if got := time.Duration(cfg.NATS.SyncInterval); got != tt.want {
				t.Errorf("nats.sync_interval is %s, want %s", got, tt.want)
			}
			if cfg.SyncIntervalAssumed() != (tt.want == ExternalSyncInterval && !tt.set) {
				t.Errorf("SyncIntervalAssumed is %t", cfg.SyncIntervalAssumed())
			}
			if cfg.Sets("nats.sync_interval") != tt.set || cfg.Sets("nats.stream.duplicates") {
				t.Errorf("Sets: nats.sync_interval %t (want %t), nats.stream.duplicates %t (want false)", cfg.Sets("nats.sync_interval"), tt.set, cfg.Sets("nats.stream.duplicates"))
			}
		})
	}
	if ExternalSyncInterval != 2*time.Minute {
		t.Errorf("ExternalSyncInterval is %s; nats-server's default sync_interval is 2m", ExternalSyncInterval)
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
    tokens: ["${TOKEN}", "${EMPTY}", "${UNSET:-}", "${EMPTY:-fallback}", "${TOKEN:?needed}"]
`, vars)
	if ps != nil {
		t.Fatal(ps)
	}
	if cfg.PublicURL != "https://relay.example.com" || cfg.DataDir != "/var/lib/$scimrelay" || cfg.Limits.Rate != 50 {
		t.Errorf("public_url %q data_dir %q rate %v", cfg.PublicURL, cfg.DataDir, cfg.Limits.Rate)
	}
	if got := cfg.Tenants[0].Tokens; !reflect.DeepEqual(got, []string{vars["TOKEN"], "", "", "fallback", vars["TOKEN"]}) {
		t.Errorf("tokens %q", got)
	}
	// A variable's content is a value, never YAML structure.
	if cfg.Admin.Token != vars["HOSTILE"] || cfg.AdminListen != "127.0.0.1:8081" {
		t.Errorf("expansion changed the file's structure: admin token %q, admin_listen %q", cfg.Admin.Token, cfg.AdminListen)
	}
	// An admin token from a variable filled from a file keeps no newline.
	if cfg, _ := parse(t, minimal+"admin:\n  token: ${FROM_FILE}\n", map[string]string{"FROM_FILE": "admin-token-0123456789abcdef\n"}); cfg.Admin.Token != "admin-token-0123456789abcdef" {
		t.Errorf("admin token %q, want it without the file's newline", cfg.Admin.Token)
	}
	// Expansion does not happen inside comments.
	if _, ps := parse(t, minimal+"# ${NOT_CLOSED\n", nil); ps != nil {
		t.Errorf("a comment was expanded: %v", ps)
	}
	// An alias's target is expanded once per use, never twice.
	cfg, ps = parse(t, minimal+"public_url: &u \"https://x/$${A}\"\nlog:\n  level: *u\n", nil)
	if ps != nil || cfg.PublicURL != "https://x/${A}" || cfg.Log.Level != cfg.PublicURL {
		t.Errorf("aliased value: %q %q %v", cfg.PublicURL, cfg.Log.Level, ps)
	}
}

// TestRead checks that the CLI's reading of relay.yaml tolerates the
// server's secrets being absent, except in the keys the CLI uses.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/relay.yaml"
	write := func(text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(minimal + "sinks:\n  - name: crm\n    secret: ${SCIMRELAY_TEST_UNSET_SECRET}\n")
	if cfg, err := Read(path, "admin_listen", "admin.token"); err != nil || cfg.Sinks[0].Secret != "" {
		t.Errorf("Read with an unset sink secret: %v", err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "sinks[0].secret: ${SCIMRELAY_TEST_UNSET_SECRET} is not set") {
		t.Errorf("Load with an unset sink secret: %v", err)
	}
	write(minimal + "admin:\n  token: ${SCIMRELAY_TEST_UNSET_TOKEN}\n")
	if _, err := Read(path, "admin_listen", "admin.token"); err == nil || !strings.Contains(err.Error(), "admin.token: ${SCIMRELAY_TEST_UNSET_TOKEN} is not set") {
		t.Errorf("Read with an unset admin token: %v", err)
	}
	if _, err := Read(path, "admin_listen"); err != nil {
		t.Errorf("Read for admin_listen alone, with an unset admin token: %v", err)
	}
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
	tests := []struct {
		name, yaml, field, message string
	}{
		{"unknown key", minimal + "listne: x\n", "listne", "unknown key"},
		{"swapped letters suggest", minimal + "listne: x\n", "listne", `did you mean "listen"`},
		// With nothing after it, as well (it was taken silently).
		{"unknown key with no value", minimal + "listne:\n", "listne", `unknown key; did you mean "listen"`},
		{"unknown nested key with no value", minimal + "nats:\n  sync_intervall:\n", "nats.sync_intervall", `did you mean "sync_interval"`},
		{"unknown tenant key with no value", "tenants:\n  - name: a\n    tokenz:\n", "tenants[0].tokenz", `did you mean "tokens"`},
		{"a letter left out suggests", "tenants:\n  - name: a\n    token: x\n", "tenants[0].token", `did you mean "tokens"`},
		{"misspelt key suggests", minimal + "adminListen: x\n", "adminListen", `did you mean "admin_listen"`},
		{"unknown nested key", minimal + "nats:\n  urll: x\n", "nats.urll", "unknown key"},
		{"unknown tenant key", "tenants:\n  - name: a\n    token: x\n", "tenants[0].token", "unknown key"},
		{"key set twice", minimal + "listen: a:1\nlisten: b:2\n", "listen", "set twice (also on line 3)"},
		// Read as an unknown key, with the keys its anchor gave reported
		// missing.
		{"merge key", minimal + "sinks:\n  - &crm {name: crm, url: \"https://crm.example.com/h\"}\n  - <<: *crm\n    name: crm2\n", "sinks[1].<<", "a YAML merge key (<<: *anchor), which relay.yaml does not read"},
		{"number", minimal + "limits:\n  rate: fast\n", "limits.rate", `want a number, got "fast"`},
		{"quoted number", minimal + "limits:\n  burst: \"40\"\n", "limits.burst", "remove the quotes"},
		{"whole number", minimal + "limits:\n  burst: lots\n", "limits.burst", `want a whole number, got "lots"`},
		{"infinite number", minimal + "limits:\n  rate: .inf\n", "limits.rate", "finite"},
		{"out of range", minimal + "limits:\n  burst: 99999999999999999999\n", "limits.burst", "whole number"},
		// yaml.v3 decodes a float into an int cut to its whole part.
		{"fraction for a whole number", minimal + "limits:\n  burst: 2.9\n", "limits.burst", "want a whole number, got 2.9"},
		{"fraction below 1", minimal + "sinks:\n  - name: a\n    concurrency: 0.5\n", "sinks[0].concurrency", "want a whole number, got 0.5"},
		{"fraction in a block", minimal + "sinks:\n  - name: a\n    batch: {max_events: 0.9}\n", "sinks[0].batch.max_events", "want a whole number, got 0.9"},
		{"fraction reported whole", minimal + "limits:\n  max_json_depth: 3.9\n", "limits.max_json_depth", "want a whole number, got 3.9"},
		{"exponent", minimal + "limits:\n  max_sort_matches: 5e4\n", "limits.max_sort_matches", "got 5e4; write 50000"},
		{"whole float", minimal + "storage:\n  batch_size: 100.0\n", "storage.batch_size", "got 100.0; write 100"},
		{"fraction from a variable", minimal + "limits:\n  burst: ${FRACTION}\n", "limits.burst", "want a whole number, got 2.5"},
		{"boolean", minimal + "storage:\n  no_sync: maybe\n", "storage.no_sync", "true or false"},
		{"string given a list", minimal + "listen: [a, b]\n", "listen", "want a string, got a list"},
		{"section given a value", minimal + "nats: embedded\n", "nats", "want a mapping of keys to values"},
		{"list given a value", "tenants: acme\n", "tenants", "want a list"},
		{"list item", minimal + "sinks:\n  - name: a\n    events: [user.*, {x: 1}]\n", "sinks[0].events[1]", "want a string, got a mapping"},
		{"header value", minimal + "sinks:\n  - name: a\n    headers: {X-A: [1]}\n", "sinks[0].headers.X-A", "want a string"},
		{"bad duration", minimal + "provisioning_log:\n  retention: forever\n", "provisioning_log.retention", "duration"},
		{"duration without unit", minimal + "sinks:\n  - name: a\n    retry: [5s, 10]\n", "sinks[0].retry[1]", "unit"},
		{"bad size", minimal + "limits:\n  max_body: big\n", "limits.max_body", "size"},
		{"unset variable", minimal + "public_url: ${NOPE}\n", "public_url", "${NOPE} is not set"},
		{"required variable", minimal + "admin:\n  token: ${NOPE:?the admin token}\n", "admin.token", "${NOPE}: the admin token"},
		{"required variable empty", minimal + "admin:\n  token: ${EMPTY:?}\n", "admin.token", "${EMPTY}: must be set"},
		{"unterminated variable", minimal + "public_url: ${BROKEN\n", "public_url", "a ${ without its }"},
		{"variable inside a default", minimal + "public_url: ${A_UNSET:-${B}}\n", "public_url", "inside another one's default"},
		{"bad variable name", minimal + "public_url: ${1X}\n", "public_url", "not a valid environment variable"},
		// $NAME is how a shell writes a variable; it was taken as text.
		{"shell variable", minimal + "admin:\n  token: $SCIMRELAY_ADMIN_TOKEN\n", "admin.token",
			"$SCIMRELAY_ADMIN_TOKEN looks like a shell variable; write ${SCIMRELAY_ADMIN_TOKEN} to expand it, or $$ for a literal $"},
		{"shell variable in a list", "tenants:\n  - name: default\n    tokens: [$DEFAULT_SCIM_TOKEN_VALUE]\n", "tenants[0].tokens[0]", "write ${DEFAULT_SCIM_TOKEN_VALUE}"},
		{"shell variable in a header", minimal + "sinks:\n  - name: a\n    headers: {Authorization: Bearer $CRM_TOKEN}\n", "sinks[0].headers.Authorization", "write ${CRM_TOKEN}"},
		{"shell variable in a URL", minimal + "sinks:\n  - name: a\n    url: https://$CRM_HOST/hook\n", "sinks[0].url", "write ${CRM_HOST}"},
		{"shell variable after text", minimal + "data_dir: /var/lib/$_DIR\n", "data_dir", "write ${_DIR}"},
		{"shell variable in lower case", minimal + "data_dir: $home/data\n", "data_dir", "a $ before a letter or _ looks like a shell variable"},
		{"shell variable in a default", minimal + "admin:\n  token: ${ADMIN_UNSET:-$FALLBACK}\n", "admin.token", "${ADMIN_UNSET:-...}: a $ before a letter or _ in a default"},
		{"not a mapping", "- a\n- b\n", "", "mapping"},
		{"not yaml", "tenants: [\n", "", "not valid YAML"},
		{"tab indent", "limits:\n\trate: 5\n", "", "line 2 is indented with a tab, and YAML indents with spaces only"},
		{"two documents", minimal + "---\nlisten: bad\n", "", "one YAML document"},
		{"a document after an empty one", minimal + "---\n---\nlisten: bad\n", "", "one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := parse(t, tt.yaml, map[string]string{"EMPTY": "", "FRACTION": "2.5", "SCIMRELAY_ADMIN_TOKEN": "admin-token-0123456789abcdef"})
			wantProblem(t, ps, tt.field, tt.message)
		})
	}
}

// TestEmptyDocumentAfterTheFirstIsTaken: a --- with nothing but comments
// after it (an editor's or a template's habit) ends the file; it was
// refused as a second document, where README refuses only "a --- with
// more after it".
func TestEmptyDocumentAfterTheFirstIsTaken(t *testing.T) {
	for _, tail := range []string{"---\n", "---\n# the end\n", "...\n", "---\n---\n"} {
		cfg, ps := parse(t, minimal+"limits:\n  burst: 7\n"+tail, nil)
		if ps != nil {
			t.Errorf("%q after the document: %v", tail, ps)
		} else if cfg.Limits.Burst != 7 {
			t.Errorf("%q after the document: burst %d, want 7", tail, cfg.Limits.Burst)
		}
	}
}

// TestSuggestsOnlyWhatIsClose: a key far from every known one is named
// unknown with no guess.
func TestSuggestsOnlyWhatIsClose(t *testing.T) {
	_, ps := parse(t, minimal+"colour: x\n", nil)
	wantProblem(t, ps, "colour", "unknown key")
	if ps != nil && strings.Contains(ps.Error(), "did you mean") {
		t.Errorf("a guess for a key close to none: %v", ps)
	}
}

// TestWholeNumbers: a whole-number key takes every form YAML writes an
// integer in, and no number with a fraction or an exponent (TestProblems).
func TestWholeNumbers(t *testing.T) {
	for value, want := range map[string]int{"7": 7, "+7": 7, "1_000": 1000, "0x10": 16, "0o17": 15, "0b101": 5, "!!int 9": 9, "${N}": 12, "-0": 0} {
		cfg, ps := parse(t, minimal+"limits:\n  burst: "+value+"\n", map[string]string{"N": "12"})
		if ps != nil || cfg.Limits.Burst != want {
			t.Errorf("burst: %s is %d, %v; want %d", value, cfg.Limits.Burst, ps, want)
		}
	}
}

// TestProblemsQuoteNoSecret: a problem names the key and what is wrong,
// never the value of a key that may hold a secret: a token given where a
// list of tokens belongs, a "${" inside a password, a $ before letters in
// one (which a shell variable's name in capitals, "$ADMIN_TOKEN" after a
// separator, is not).
func TestProblemsQuoteNoSecret(t *testing.T) {
	const secret = "Sup3rS3cretTokenValue1234567"
	for _, yaml := range []string{
		"tenants:\n  - name: acme\n    tokens: " + secret + "\n",
		"tenants: [{name: acme}]\nnats:\n  password: \"" + secret + "${x\"\n",
		"tenants: [{name: acme}]\nnats:\n  password: \"" + secret + "${x-y}\"\n",
		// A $ inside a secret is not a variable's name to quote.
		"tenants: [{name: acme}]\nnats:\n  password: \"" + secret[:5] + "$" + secret[5:] + "\"\n",
		"tenants: [{name: acme}]\nnats:\n  password: \"" + secret[:5] + "$" + strings.ToUpper(secret[5:]) + "\"\n",
		"tenants: [{name: acme}]\nnats:\n  password: \"$" + secret + "\"\n",
		"tenants: [{name: acme}]\nnats:\n  password: \"${X:-" + secret + "$" + secret + "}\"\n",
	} {
		_, ps := parse(t, yaml, nil)
		if len(ps) == 0 {
			t.Fatalf("%q: no problem", yaml)
		}
		for _, part := range []string{secret, secret[5:], strings.ToUpper(secret[5:])} {
			if strings.Contains(ps.Error(), part) {
				t.Errorf("a problem quotes the secret: %v", ps)
			}
		}
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
	cfg, ps := parse(t, `
listen: [nope]
limits:
  rate: fast
  burst: lots
tenants:
  - name: acme
    tokens: ["${UNSET}"]
sinks:
  - name: a
    timeout: soon
`, nil)
	if len(ps) != 5 {
		t.Fatalf("%d problems, want 5 (listen, rate, burst, token, timeout): %v", len(ps), ps)
	}
	msg := ps.Error()
	if !strings.HasPrefix(msg, "configuration has 5 problems:") || strings.Count(msg, "\n  - ") != 5 ||
		!strings.Contains(msg, `limits.rate: want a number, got "fast" (line 4)`) {
		t.Errorf("message:\n%s", msg)
	}
	// What could be decoded is there, with defaults for the wrong values,
	// so that the components can check the rest.
	if cfg == nil || cfg.Limits.Rate != Default().Limits.Rate || len(cfg.Tenants) != 1 || cfg.Tenants[0].Name != "acme" || cfg.Sinks[0].Name != "a" {
		t.Errorf("partial configuration: %+v", cfg)
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
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/bad.yaml", []byte("limits:\n  rate: fast\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir + "/bad.yaml"); err == nil || !strings.HasPrefix(err.Error(), dir+"/bad.yaml: configuration has 1 problem") {
		t.Errorf("Load names the file: %v", err)
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
	// What each is told: a word is no count of days.
	for in, want := range map[string]string{"yesterday": "want a number with a unit", "1.5d": `"1.5" is not a whole number of days`} {
		if _, err := ParseDuration(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDuration(%q): %v; want %q", in, err, want)
		}
	}
	for in, want := range map[string]int64{"4MiB": 4 << 20, "64KiB": 64 << 10, "1048576": 1 << 20, "1GB": 1e9, "2 MiB": 2 << 20, "10B": 10,
		// gc_floor's bound, as relay.yaml writes it (refused until 2026-12-04).
		"1TiB": 1 << 40, "2TB": 2e12} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1.5MiB", "1PB", "99999999999GiB", "99999999TiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted it", bad)
		}
	}
	if Duration(7*24*time.Hour).String() != "7d" || Duration(90*time.Second).String() != "1m30s" || Size(4<<20).String() != "4MiB" || Size(1000).String() != "1000" || Size(1<<40).String() != "1TiB" {
		t.Error("String forms are not what relay.yaml spells")
	}
}

// TestDefaultRoundTrip marshals Default() and parses it back.
func TestDefaultRoundTrip(t *testing.T) {
	d := Default()
	d.Tenants = []Tenant{{Name: "acme", Unique: "email", Required: []string{"emails"}, Tokens: []string{"t"}, Rate: 1.5, Burst: 3}}
	d.Sinks = []Sink{{Name: "crm", Type: "webhook", URL: "https://x", Secret: "s", Events: []string{"user.*"}, Tenants: []string{"acme"},
		Format: "structured", Timeout: Duration(time.Second), Headers: map[string]string{"X-A": "b"}, AllowPrivate: true, Concurrency: 2,
		Retry: []Duration{Duration(time.Minute)}, PreviousSecret: "p", PreviousSecretExpires: "2026-12-31T00:00:00Z",
		AllowPrivateProxy: true, Batch: &SinkBatch{MaxEvents: 10, MaxWait: Duration(time.Second)}}}
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
	f.Add(minimal + "limits:\n  rate: fast\n  burst: \"4\"\n  max_body: 1.5MiB\nlisten: [a]\n")
	f.Add(minimal + "admin:\n  token: ${Y:?set Y}\npublic_url: ${X}$${X}${Z:-z}\n")
	f.Add("a: &a [*a]\n" + minimal)
	f.Add("x: &x {y: *x}\ntenants: &t [{name: a}]\nsinks: *t\n")
	f.Add(minimal + "listen: a\nlisten: b\nsinks:\n  - ~\n  - {headers: {a: b, a: c}}\n")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := Parse([]byte(s), env(map[string]string{"X": "y"}))
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("Parse returned %v, want Problems", err)
			}
			return
		}
		// What Parse accepted, written back out (with each $ written $$,
		// as a file must to mean a $), reads the same.
		b, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(escapeDollars(t, b), env(nil))
		if err != nil {
			t.Fatalf("a parsed configuration does not parse again: %v\n%s", err, b)
		}
		if b2, _ := yaml.Marshal(again); string(b2) != string(b) {
			t.Fatalf("round trip changed the configuration:\n%s\n%s", b, b2)
		}
	})
}

// escapeDollars writes every $ in the values of a YAML text as $$.
func escapeDollars(t *testing.T, text []byte) []byte {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c)
			}
		case yaml.MappingNode:
			for i := 1; i < len(n.Content); i += 2 {
				walk(n.Content[i])
			}
		case yaml.ScalarNode:
			n.Value = strings.ReplaceAll(n.Value, "$", "$$")
		}
	}
	walk(&doc)
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExpansionToNothingKeepsTheDefault checks that an unquoted value
// whose variables expand to nothing keeps its key's default, as a key
// with nothing after it does, whatever the key's type: "rate: ${RATE:-}"
// with RATE empty once turned the SCIM rate limit off (0), and a boolean
// false.
func TestExpansionToNothingKeepsTheDefault(t *testing.T) {
	def := Default()
	text := minimal + `limits:
  rate: ${EMPTY}
  burst: ${UNSET:-}
storage:
  batch_size: ${EMPTY:-}
nats:
  connect_timeout: ${EMPTY:-}
  sync_interval: ${EMPTY}
oauth:
  basic_auth: ${EMPTY}
public_url: ${EMPTY}
`
	cfg, ps := parse(t, text, map[string]string{"EMPTY": ""})
	if ps != nil {
		t.Fatal(ps)
	}
	if cfg.Limits.Rate != def.Limits.Rate || cfg.Limits.Burst != def.Limits.Burst {
		t.Errorf("limits: rate %v burst %v, want the defaults %v and %v", cfg.Limits.Rate, cfg.Limits.Burst, def.Limits.Rate, def.Limits.Burst)
	}
	if cfg.Storage.BatchSize != def.Storage.BatchSize || cfg.NATS.ConnectTimeout != def.NATS.ConnectTimeout || cfg.NATS.SyncInterval != def.NATS.SyncInterval {
		t.Errorf("storage.batch_size %v nats.connect_timeout %v nats.sync_interval %v, want the defaults", cfg.Storage.BatchSize, cfg.NATS.ConnectTimeout, cfg.NATS.SyncInterval)
	}
	if cfg.OAuth.BasicAuth != def.OAuth.BasicAuth || cfg.PublicURL != def.PublicURL {
		t.Errorf("oauth.basic_auth %t public_url %q, want the defaults", cfg.OAuth.BasicAuth, cfg.PublicURL)
	}
	// With nats.url, sync_interval's default is the external server's
	// (2m, assumed), as for the key with nothing after it; before, the
	// key counted as set and kept the embedded 250ms, and the relay
	// deleted published events that server had not yet written.
	left, ps := parse(t, minimal+"nats:\n  url: nats://nats-1:4222\n  sync_interval:\n", nil)
	if ps != nil {
		t.Fatal(ps)
	}
	empty, ps := parse(t, minimal+"nats:\n  url: nats://nats-1:4222\n  sync_interval: ${EMPTY:-}\n", map[string]string{"EMPTY": ""})
	if ps != nil {
		t.Fatal(ps)
	}
	if time.Duration(empty.NATS.SyncInterval) != ExternalSyncInterval || !empty.SyncIntervalAssumed() || empty.NATS.SyncInterval != left.NATS.SyncInterval {
		t.Errorf("sync_interval expanding to nothing with nats.url: %s (assumed %t); want %s, assumed, as left out", time.Duration(empty.NATS.SyncInterval), empty.SyncIntervalAssumed(), ExternalSyncInterval)
	}
	// In quotes it is an empty string: a problem where a number belongs.
	_, ps = parse(t, minimal+"limits:\n  rate: \"${EMPTY}\"\n", map[string]string{"EMPTY": ""})
	if len(ps) != 1 || ps[0].Field != "limits.rate" {
		t.Errorf("a quoted empty expansion for a number: %v, want one problem of limits.rate", ps)
	}
}

// TestAliasBombIsOneProblem: a file whose aliases expand past maxNodes is
// refused with that one problem, and no configuration: the values left
// undecoded were each reported again by the components (thousands of
// empty tenant names) and buried it.
func TestAliasBombIsOneProblem(t *testing.T) {
	var b strings.Builder
	b.WriteString("tenants:\n  - &t\n    name: acme\n    tokens: [")
	for i := range 20 {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "token-%02d-of-twenty-characters", i)
	}
	b.WriteString("]\n")
	for range maxNodes / 20 {
		b.WriteString("  - *t\n")
	}
	cfg, err := Parse([]byte(b.String()), env(nil))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || !strings.Contains(ps[0].Message, "expands to more than 100000 values") || ps[0].Line == 0 {
		t.Fatalf("problems %.300v; want the one saying the file expands to more than 100000 values, with its line", err)
	}
	if cfg != nil {
		t.Errorf("a configuration came back beside the problem: %d tenants", len(cfg.Tenants))
	}
}

// TestUnknownTagsAreRefused: a value given a tag the decoder does not read
// is refused, naming its field and line; it was taken as its text (a
// token "secret/data/x" from "!vault secret/data/x", the base64 of
// "!!binary"). The core tags keep their meaning.
func TestUnknownTagsAreRefused(t *testing.T) {
	for _, tt := range []struct{ text, field string }{
		{"admin:\n  token: !vault secret/data/admin-token\n", "admin.token"},
		{"admin:\n  token: !!binary ZGVidWctdG9rZW4tb2YtdHdlbnR5LWNoYXJz\n", "admin.token"},
		{"limits:\n  rate: !!timestamp 2026-12-03\n", "limits.rate"},
		{"limits: !custom\n  rate: 5\n", "limits"},
		{"admin:\n  hosts: [!host console.example.com]\n", "admin.hosts[0]"},
	} {
		_, ps := parse(t, minimal+tt.text, nil)
		if len(ps) != 1 || ps[0].Field != tt.field || !strings.Contains(ps[0].Message, "is not one relay.yaml reads") || ps[0].Line == 0 {
			t.Errorf("%q: problems %v; want one of %s saying the tag is not read, with its line", tt.text, ps, tt.field)
		}
	}
	cfg, ps := parse(t, minimal+"admin:\n  token: !!str 12345678901234567890\nlimits: !!map\n  rate: !!float 5\n  burst: !!int 10\n  max_body: !!str 4MiB\nstorage:\n  no_sync: !!bool true\nlog: !!null\n", nil)
	if ps != nil || cfg.Admin.Token != "12345678901234567890" || cfg.Limits.Rate != 5 || cfg.Limits.Burst != 10 || !cfg.Storage.NoSync {
		t.Errorf("core tags: %v; token %q, rate %v, burst %v, no_sync %v", ps, cfg.Admin.Token, cfg.Limits.Rate, cfg.Limits.Burst, cfg.Storage.NoSync)
	}
}

// TestLeadingZeroIsRefused: a whole number with a leading zero is
// refused, naming its field, where YAML 1.1's octal took "partitions:
// 016" as 14 without a word; 0o16 (octal said so), a quoted "016" for a
// string and 0 itself are taken.
func TestLeadingZeroIsRefused(t *testing.T) {
	_, ps := parse(t, minimal+"nats:\n  stream:\n    partitions: 016\nlimits:\n  max_json_depth: -032\n", nil)
	if len(ps) != 2 || ps[0].Field != "nats.stream.partitions" || !strings.Contains(ps[0].Message, "016 has a leading zero, which YAML reads as octal (14): write 16, or 0o16 for octal") ||
		ps[1].Field != "limits.max_json_depth" || !strings.Contains(ps[1].Message, "write -32, or -0o32") {
		t.Fatalf("problems: %v", ps)
	}
	// On number keys too, tagged, or with _ (which YAML passes over):
	// each was taken as 14 without a word.
	for _, text := range []string{
		minimal + "limits: {rate: 016}\n",
		minimal + "oauth: {rate: 016}\n",
		"tenants: [{name: acme, rate: 016}]\n",
		minimal + "nats: {stream: {partitions: !!int 016}}\n",
		minimal + "nats: {stream: {partitions: 0_16}}\n",
	} {
		if _, ps := parse(t, text, nil); len(ps) != 1 || !strings.Contains(ps[0].Message, "has a leading zero, which YAML reads as octal (14): write 16, or 0o16 for octal") {
			t.Errorf("%q: problems %v, want the leading zero refused", text, ps)
		}
	}
	cfg, ps := parse(t, minimal+"nats:\n  stream:\n    partitions: 0o16\nlimits:\n  burst: 0\n  rate: 0.5\n", nil)
	if ps != nil || cfg.NATS.Stream.Partitions != 14 || cfg.Limits.Burst != 0 || cfg.Limits.Rate != 0.5 {
		t.Fatalf("0o16, 0 and 0.5: %v %v", cfg, ps)
	}
}
