// SPDX-License-Identifier: Apache-2.0

package main

import (
	"cmp"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/scimrelay/scimrelay/config"
)

// badValue is a value a relay.yaml key refuses, and the problem it gets.
type badValue struct {
	value string // YAML
	field string // the field the problem names; "" is the key itself
	says  string // what the problem says
}

// keyRules holds every relay.yaml key (config.Keys) to a value that
// scimrelay check refuses beyond its type, or says why any value of its
// type is right. A key added to the configuration fails the test until it
// is given one or the other.
var keyRules = map[string][]badValue{
	"listen":                     {{"8080", "", "must be host:port"}, {"127.0.0.1:65536", "", "must be host:port"}},
	"tls.cert_file":              {{"cert.pem", "tls.key_file", "must be set with tls.cert_file"}},
	"tls.key_file":               {{"key.pem", "tls.cert_file", "must be set with tls.key_file"}},
	"admin_listen":               {{"nope", "", "must be host:port"}, {"127.0.0.1:8080", "", "shares port 8080 with listen"}, {"127.0.0.1:65536", "", "must be host:port"}},
	"public_url":                 {{"relay.example.com", "", "must be an absolute http(s) URL"}, {"https://relay.example.com/?a=b", "", "must not have a query"}, {"https://user:s3cretpw@relay.example.com", "", "must not hold a user or password"}, {"https://relay.example.com/a//b", "", "must not have an empty path segment"}, {"https://:443", "", "must be an absolute http(s) URL"}, {"https://relay.example.com:99999", "", "port 99999 is not a port from 1 to 65535"}},
	"data_dir":                   {{`""`, "", "must not be empty"}, {"~/scimrelay-data", "", "starts with ~, which only a shell expands"}, {"~scimrelay/data", "", "starts with ~, which only a shell expands"}},
	"log.level":                  {{"loud", "", "must be one of debug, info, warn, error"}},
	"log.format":                 {{"xml", "", "must be one of text, json"}},
	"admin.token":                {{"short-admin-token", "", "is 17 characters; a bearer token needs at least 20"}},
	"admin.console":              nil, // on or off
	"admin.session_idle":         {{"30s", "", "must be from 1m to 12h"}, {"13h", "", "must be from 1m to 12h"}},
	"admin.hosts":                {{"[https://console.example.com]", "admin.hosts[0]", "must be a host name"}},
	"admin.tls.cert_file":        {{"cert.pem", "admin.tls.key_file", "must be set with admin.tls.cert_file"}},
	"admin.tls.key_file":         {{"key.pem", "admin.tls.cert_file", "must be set with admin.tls.key_file"}},
	"storage.batch_delay":        {{"1s", "", "must be between 0 and 100ms"}},
	"storage.batch_size":         {{"-1", "", "must not be negative"}},
	"storage.no_sync":            nil,                                                                                      // on or off
	"memory.gc_floor":            {{"1025GiB", "", "must be at most 1TiB"}, {"8589934591GiB", "", "must be at most 1TiB"}}, // 0 turns the floor off
	"nats.url":                   {{"http://n1:4222", "", `scheme "http" is not one of nats, tls, ws, wss`}, {"nats://n1:4222,n2", "", `"n2" is not a URL`}, {"nats://127.0.0.1:99999", "", "port 99999 is not a port from 1 to 65535"}},
	"nats.listen":                {{"4222", "", "must be host:port"}, {"0.0.0.0:8081", "", "shares port 8081 with admin_listen"}, {"127.0.0.1:65536", "", "must be host:port"}},
	"nats.credentials":           {{"/etc/relay.creds", "", "applies only to an external NATS"}},
	"nats.nkey":                  {{"/etc/relay.nk", "", "applies only to an external NATS"}},
	"nats.token":                 {{"a-nats-token", "", "applies only to an external NATS"}},
	"nats.user":                  {{"relay", "", "applies only to an external NATS"}},
	"nats.password":              {{"secret", "", "needs nats.user"}},
	"nats.tls.ca_file":           {{"ca.pem", "", "verifies subscribers' client certificates"}},
	"nats.tls.cert_file":         {{"cert.pem", "nats.tls", "cert_file and key_file go together"}},
	"nats.tls.key_file":          {{"key.pem", "nats.tls", "cert_file and key_file go together"}},
	"nats.connect_timeout":       nil,                                                                                    // any duration; 0 is the default, 5s (docs/decisions.md, Configuration)
	"nats.sync_interval":         {{"6m", "", "longer than nats.stream.duplicates"}, {"1ns", "", "or from 10ms to 24h"}}, // 0 is sync_always
	"nats.stream.replicas":       {{"2", "", "must be 0 (automatic), 1, 3 or 5"}, {"3", "", "the embedded server keeps 1 replica"}},
	"nats.stream.max_age":        {{"0s", "", "must be positive"}, {"50ms", "", "must be at least 100ms"}},
	"nats.stream.duplicates":     {{"0s", "", "must be positive"}, {"50ms", "", "must be at least 100ms"}, {"30d", "", "must not exceed nats.stream.max_age"}},
	"nats.stream.partitions":     {{"1000", "", "must be between 1 and 256"}, {"-1", "", "must be between 1 and 256"}},
	"limits.rate":                {{"-1", "", "must not be negative"}},
	"limits.burst":               {{"0", "", "must be at least 1 when limits.rate is set"}},
	"limits.max_body":            {{"0", "", "must be positive"}, {"257MiB", "", "must be at most 256MiB"}, {"3000000TiB", "", "must be at most 256MiB"}}, // four of it overflowed the bodies in flight
	"limits.max_json_depth":      {{"1", "", "must be between 4 and 1000"}, {"1001", "", "must be between 4 and 1000"}},
	"limits.max_header":          {{"1KiB", "", "must be between 4KiB and 16MiB"}, {"9223372036854775807", "", "must be between 4KiB and 16MiB"}},
	"limits.bulk_max_operations": {{"0", "", "must be between 1 and 100000"}, {"100001", "", "must be between 1 and 100000"}},
	"limits.bulk_max_payload":    {{"100", "", "must be between 1KiB and 256MiB"}, {"257MiB", "", "must be between 1KiB and 256MiB"}},
	"limits.max_sort_matches":    {{"0", "", "must be positive"}},
	"limits.read_header_timeout": {{"0s", "", "must be positive"}, {"99ms", "", "must be at least 100ms"}},
	"limits.read_timeout":        {{"0s", "", "must be positive"}, {"99ms", "", "must be at least 100ms"}},
	"limits.write_timeout":       {{"0s", "", "must be positive"}, {"99ms", "", "must be at least 100ms"}},
	"limits.idle_timeout":        {{"0s", "", "must be positive"}, {"99ms", "", "must be at least 100ms"}},
	"limits.shutdown_delay":      {{"11s", "", "must be between 0 and 10s"}},
	"oauth.token_lifetime":       {{"30s", "", "must be between 1m and 24h"}, {"25h", "", "must be between 1m and 24h"}},
	"oauth.rate":                 {{"-1", "", "must not be negative"}},
	"oauth.burst":                {{"0", "", "must be at least 1 when oauth.rate is set"}},
	"oauth.basic_auth":           nil, // on or off
	"provisioning_log.retention": {{"0s", "", "must be positive"}, {"50ms", "", "must be at least 100ms"}},
	"provisioning_log.max_bytes": {{"1000", "", "must be at least 1MiB"}, {"0", "", "must be at least 1MiB"}},
	"provisioning_log.reads":     {{"some", "", "must be aggregate or all"}},
	"tenants[].name":             {{`"Acme Corp"`, "", "must match [a-z0-9][a-z0-9_-]*"}},
	"tenants[].tokens":           {{"[short]", "tenants[0].tokens[0]", "is 5 characters; a bearer token needs at least 20"}},
	"tenants[].unique":           {{"phone", "", "must be userName or email"}},
	"tenants[].required":         {{"[shoeSize]", "tenants[0].required[0]", `required attribute "shoeSize"`}},
	"tenants[].rate":             {{"-1", "", "must not be negative"}},
	"tenants[].burst":            {{"-1", "", "must not be negative"}},
	"sinks[].name":               {{"CRM", "", "must match [a-z0-9][a-z0-9_-]*"}},
	"sinks[].type":               {{"kafka", "", "must be webhook"}},
	"sinks[].url":                {{"ftp://x", "", "must be an absolute http(s) URL"}, {"http://127.0.0.1:9000/h", "", "is a loopback, private or link-local address"}},
	"sinks[].secret":             {{"abc", "", "must be whsec_"}},
	"sinks[].previous_secret":    {{"abc", "", "must be whsec_"}, {sinkSecret, "", "is the same as secret"}},
	"sinks[].previous_secret_expires": {{"soon", "", "want an RFC 3339 time"},
		{"2026-12-31T00:00:00Z", "", "set without previous_secret"}},
	"sinks[].events":              {{"[user.exploded]", "sinks[0].events[0]", `event pattern "user.exploded": no such event`}},
	"sinks[].tenants":             {{"[globex]", "sinks[0].tenants[0]", `no tenant "globex" is configured`}, {"[Acme]", "sinks[0].tenants[0]", "must be a tenant name"}},
	"sinks[].format":              {{"xml", "", "must be binary or structured"}},
	"sinks[].timeout":             {{"1h", "", "between 100ms and 5m0s"}, {"99ms", "", "between 100ms and 5m0s"}},
	"sinks[].headers":             {{"{webhook-signature: x}", "sinks[0].headers.webhook-signature", "is set by scimrelay on every delivery"}, {"{X Bad: v}", "sinks[0].headers", `"X Bad" is not an HTTP header name`}, {"{X-Api-Key: }", "sinks[0].headers.X-Api-Key", "has no value"}},
	"sinks[].allow_private":       nil, // on or off
	"sinks[].allow_private_proxy": nil, // on or off
	"sinks[].concurrency":         {{"5000", "", "must be between 1 and 1024"}},
	"sinks[].batch.max_events":    {{"5000", "", "must be between 1 and 1000"}, {"-1", "", "must be between 1 and 1000"}},
	"sinks[].batch.max_wait":      {{"1m", "", "or at most 10s"}},
	"sinks[].batch.max_bytes":     {{"1000", "", "must be between 64KiB and 64MiB"}, {"65MiB", "", "must be between 64KiB and 64MiB"}},
	"sinks[].retry":               {{"[5s, 0s]", "sinks[0].retry[1]", "must be positive"}, {"[]", "sinks[0].retry", "is an empty schedule"}},
}

// setKey sets the key at a field path ("sinks[0].batch.max_wait") of a
// YAML document to value, adding the mappings on its way that are missing.
func setKey(t *testing.T, doc *yaml.Node, path, value string) {
	t.Helper()
	var v yaml.Node
	if err := yaml.Unmarshal([]byte(value), &v); err != nil {
		t.Fatalf("%s: %v", value, err)
	}
	n := doc.Content[0]
	segs := strings.Split(path, ".")
	for i, seg := range segs {
		name, item := strings.CutSuffix(seg, "[0]")
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == name {
				next = n.Content[j+1]
			}
		}
		if i == len(segs)-1 {
			if next == nil {
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, v.Content[0])
			} else {
				*next = *v.Content[0]
			}
			return
		}
		if next == nil {
			next = &yaml.Node{Kind: yaml.MappingNode}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, next)
		}
		if item {
			next = next.Content[0]
		}
		n = next
	}
}

// TestEveryKeyIsChecked holds the Configuration section's "each component
// checks its own ..., and every problem is listed at once, naming its
// field and line" for every key relay.yaml can hold: a value of the right
// type that the relay cannot run with is refused by check (and so by serve,
// which runs the same checks), with a problem naming the key and its line.
func TestEveryKeyIsChecked(t *testing.T) {
	base := "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\nsinks:\n  - name: crm\n    url: https://crm.example.com/h\n    secret: " + sinkSecret + "\n"
	for _, key := range config.Keys() {
		rules, ok := keyRules[key]
		if !ok {
			t.Errorf("%s has no entry in keyRules: give it a value check must refuse, or nil and say why any value of its type is right", key)
			continue
		}
		for _, bad := range rules {
			path := strings.ReplaceAll(key, "[]", "[0]")
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(base), &doc); err != nil {
				t.Fatal(err)
			}
			setKey(t, &doc, path, bad.value)
			text, err := yaml.Marshal(&doc)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse(text, func(string) (string, bool) { return "", false })
			if err != nil {
				t.Errorf("%s: %s: the file itself was refused: %v", key, bad.value, err)
				continue
			}
			field := cmp.Or(bad.field, path)
			problems := checkConfig(cfg, roleAll)
			if !slices.ContainsFunc(problems, func(p config.Problem) bool {
				return p.Field == field && strings.Contains(p.Message, bad.says) && p.Line > 0
			}) {
				t.Errorf("%s: %s: problems %v; want one of %s saying %q, with its line\n%s", key, bad.value, problems, field, bad.says, text)
			}
		}
	}
	for key := range keyRules {
		if !slices.Contains(config.Keys(), key) {
			t.Errorf("keyRules names %s, which is not a relay.yaml key", key)
		}
	}
}

// TestREADMECheckOutput holds the example in the README's Configuration
// section: a relay.yaml with those two mistakes on those lines gets, from
// scimrelay check run beside it, exactly the lines the README shows.
func TestREADMECheckOutput(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```\n(scimrelay: relay.yaml: configuration has .*?\n)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("the README's Configuration section has no example of check's output")
	}
	dir := t.TempDir()
	text := "tenants:\n  - name: acme\nlimits:\n  rate: fast\nsinks:\n  - name: crm\n    secret: " + sinkSecret +
		"\n    events: [\"user.*\"]\n    url: http://127.0.0.1:9000/hook\n"
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	code, _, stderr := cli(t, "check")
	if code != exitError || stderr != string(m[1]) {
		t.Errorf("check exited %d and printed\n%s\nthe README shows\n%s", code, stderr, m[1])
	}
}

// TestCheckOpensNothing holds "scimrelay check reads the file the way
// serve does and builds every component's options without opening a file
// or a socket", and "what only starting can show (a port another process
// holds, NATS out of reach, ..., a named file that cannot be read or does
// not hold what it should) serve reports when it starts": check accepts a
// file whose ports are taken and whose data directory does not exist, and
// creates nothing; serve, given the same file, says which listener it
// could not open. With a NATS that nothing answers, check accepts the file
// and serve names NATS when it fails; so with a CA file that holds no
// certificate, which serve names.
func TestCheckOpensNothing(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text+"data_dir: "+data+"\ntenants:\n  - name: acme\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	busy := write("busy.yaml", "listen: "+taken.Addr().String()+"\nadmin_listen: "+freeAddr(t)+"\nnats:\n  listen: \"\"\n")
	if code, out, stderr := cli(t, "check", "--config", busy); code != exitOK || !strings.Contains(out, "is valid") {
		t.Fatalf("check of a file whose SCIM port is taken: %d %s %s", code, out, stderr)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("check created %s: %v", data, err)
	}
	if code, _, stderr := cli(t, "serve", "--config", busy); code != exitError || !strings.Contains(stderr, "SCIM listener") || !strings.Contains(stderr, taken.Addr().String()) {
		t.Errorf("serve on a taken port: exit %d, %s", code, stderr)
	}

	unreachable := write("nats.yaml", "nats:\n  url: nats://"+freeAddr(t)+"\n  connect_timeout: 1s\n")
	if code, out, stderr := cli(t, "check", "--config", unreachable); code != exitOK {
		t.Fatalf("check of a file naming a NATS that is not there: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := cli(t, "serve", "--config", unreachable); code != exitError || !strings.Contains(strings.ToLower(stderr), "nats") {
		t.Errorf("serve with NATS out of reach: exit %d, %s", code, stderr)
	}

	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbled := write("ca.yaml", "nats:\n  url: nats://"+freeAddr(t)+"\n  tls:\n    ca_file: "+ca+"\n")
	if code, out, stderr := cli(t, "check", "--config", garbled); code != exitOK {
		t.Fatalf("check of a file naming a CA file that holds no certificate: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := cli(t, "serve", "--config", garbled); code != exitError || !strings.Contains(stderr, "nats.tls.ca_file") {
		t.Errorf("serve with a CA file that holds no certificate: exit %d, %s", code, stderr)
	}
}

// TestCommandsReadOnlyTheirKeys holds "Commands other than serve and check
// read only the keys they use (admin_listen, admin.token and data_dir;
// client create and rotate also public_url and listen, for the token
// endpoint they print; healthcheck only admin_listen), and do not need
// the server's other secrets in their environment": with every other
// value a variable that is not set, each command works.
func TestCommandsReadOnlyTheirKeys(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	admin := strings.TrimPrefix(p.adminURL, "http://")
	const unset = "${SCIMRELAY_TEST_UNSET}"
	others := "log:\n  level: " + unset + "\nnats:\n  url: " + unset + "\n  password: " + unset +
		"\ntenants:\n  - name: acme\n    tokens: [\"" + unset + "\"]\nsinks:\n  - name: crm\n    url: " + unset + "\n    secret: " + unset + "\n"
	write := func(text string) string {
		path := filepath.Join(t.TempDir(), "relay.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cfg := write("admin_listen: " + admin + "\nadmin:\n  token: " + adminSecret + "\ndata_dir: " + t.TempDir() +
		"\npublic_url: https://relay.example.com\nlisten: " + unset + "\n" + others)
	for _, args := range [][]string{
		{"token", "list"}, {"client", "list"}, {"subscriber", "list"}, {"log", "--since", "1m"},
		{"events", "tail", "--no-follow"}, {"backup", "--out", filepath.Join(t.TempDir(), "copy.db")},
		{"client", "create", "--tenant", "acme"},
	} {
		code, out, stderr := cli(t, append(args, "--config", cfg)...)
		if code != exitOK {
			t.Errorf("%s with the server's other values unset: exit %d, %s", strings.Join(args, " "), code, stderr)
		}
		if args[1] == "create" && !strings.Contains(out, "token_endpoint: https://relay.example.com/oauth2/acme/token") {
			t.Errorf("client create printed %q, want the token endpoint under public_url", out)
		}
	}
	// healthcheck needs admin_listen alone: not even the admin token.
	health := write("admin_listen: " + admin + "\nadmin:\n  token: " + unset + "\ndata_dir: " + unset + "\n" + others)
	if code, _, stderr := cli(t, "healthcheck", "--config", health); code != exitOK {
		t.Errorf("healthcheck with everything but admin_listen unset: exit %d, %s", code, stderr)
	}
	if code, _, stderr := cli(t, "token", "list", "--config", health); code != exitError || !strings.Contains(stderr, "admin.token: "+unset+" is not set") {
		t.Errorf("token list with the admin token unset: exit %d, %s", code, stderr)
	}
}

// TestTenantOwnLimits holds relay.yaml's "rate, burst: this tenant's own
// SCIM requests/s and burst, each in place of limits.rate and limits.burst
// where not 0": a tenant given only a burst gets that burst at limits.rate;
// a tenant given only a rate gets limits.burst, not a burst of 1.
func TestTenantOwnLimits(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.Rate, cfg.Limits.Burst = 0.001, 2 // no token comes back during the test
	cfg.Tenants[0].Burst = 3                     // acme
	cfg.Tenants[1].Rate = 0.002                  // globex
	p := startRelay(t, cfg, roleAll)
	if got := p.answered("acme", acmeToken, 9); got != 3 {
		t.Errorf("acme (burst 3 of its own, limits.rate): %d answered before a 429, want 3", got)
	}
	if got := p.answered("globex", globexToken, 9); got != 2 {
		t.Errorf("globex (a rate of its own, limits.burst 2): %d answered before a 429, want 2", got)
	}
	// A tenant rate with no burst anywhere is refused rather than made 1.
	cfg = testConfig(t, t.TempDir())
	cfg.Limits.Rate, cfg.Limits.Burst, cfg.Tenants[0].Rate = 0, 0, 5
	if srv, err := newServer(context.Background(), cfg, roleAll, nil, nil); err == nil || !strings.Contains(err.Error(), "tenants[0].burst: must be at least 1") {
		if srv != nil {
			_ = srv.close()
		}
		t.Errorf("a tenant rate without a burst: %v", err)
	}
}

// TestPublicURLProblemsQuoteNoPassword holds "a problem never quotes a
// value that may be a secret" for public_url: a user and password in it
// are refused (every resource's location and every event's source would
// carry them), and a public_url refused for another reason is shown with
// its user information redacted.
func TestPublicURLProblemsQuoteNoPassword(t *testing.T) {
	for value, says := range map[string]string{
		"https://user:s3cretpw@relay.example.com": "must not hold a user or password",
		"https://s3cretpw@relay.example.com":      "must not hold a user or password",
		"ftp://u:s3cretpw@relay.example.com":      "must be an absolute http(s) URL",
	} {
		cfg, err := config.Parse([]byte("public_url: "+value+"\ntenants: [{name: acme}]\n"), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		problems := checkConfig(cfg, roleAll)
		if !slices.ContainsFunc(problems, func(p config.Problem) bool {
			return p.Field == "public_url" && strings.Contains(p.Message, says)
		}) {
			t.Errorf("public_url %s: problems %v; want public_url saying %q", value, problems, says)
		}
		if strings.Contains(problems.Error(), "s3cretpw") {
			t.Errorf("public_url %s: a problem quotes the password: %v", value, problems)
		}
	}
}
