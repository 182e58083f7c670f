// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestCheckAgreesWithServe feeds the same invalid files to check and to
// serve: both refuse each of them, with the same problems, each naming its
// field, and serve refuses before it opens anything.
func TestCheckAgreesWithServe(t *testing.T) {
	const tenant = "tenants:\n  - name: acme\n"
	sink := func(extra string) string {
		return tenant + "sinks:\n  - name: crm\n    url: https://crm.example.com/h\n    secret: " + sinkSecret + "\n" + extra
	}
	tests := []struct {
		name, yaml, role string
		want             []string // in the order of the file
	}{
		// The file itself: keys, types, variables.
		{"types and variables", "listen: [a]\nlimits:\n  rate: fast\n  burst: lots\npublic_url: ${SCIMRELAY_TEST_UNSET}\n" + tenant, roleAll, []string{
			`listen: want a string, got a list (line 1)`,
			`limits.rate: want a number, got "fast" (line 3)`,
			`limits.burst: want a whole number, got "lots" (line 4)`,
			`public_url: ${SCIMRELAY_TEST_UNSET} is not set`,
		}},
		{"required variable", "admin:\n  token: ${SCIMRELAY_TEST_UNSET:?the admin token must come from the vault}\n" + tenant, roleAll, []string{
			`admin.token: ${SCIMRELAY_TEST_UNSET}: the admin token must come from the vault (line 2)`,
		}},
		{"unknown key", "listne: x\n" + tenant, roleAll, []string{`listne: unknown key; did you mean "listen"? (line 1)`}},
		// A tenant's identity provider, holding its SCIM token, would
		// have the admin API, every tenant's tokens and events included.
		{"admin token is a tenant's", "admin: {token: " + acmeToken + "}\ntenants: [{name: acme, tokens: [\"" + acmeToken + " \"]}]\n", roleAll, []string{
			"tenants[0].tokens[0]: is admin.token; a tenant's SCIM token must not open the admin API",
		}},
		// A shell's $NAME was taken as text: the admin API accepted the
		// token "$SCIMRELAY_ADMIN_TOKEN" and refused the variable's value.
		{"shell variables", "admin: {token: $SCIMRELAY_ADMIN_TOKEN}\ntenants: [{name: default, tokens: [$DEFAULT_SCIM_TOKEN_VALUE]}]\n" +
			"sinks:\n  - name: crm\n    url: https://crm.example.com/h\n    secret: " + sinkSecret + "\n    headers: {Authorization: Bearer $CRM_TOKEN}\n", roleAll, []string{
			"admin.token: $SCIMRELAY_ADMIN_TOKEN looks like a shell variable; write ${SCIMRELAY_ADMIN_TOKEN} to expand it, or $$ for a literal $ (line 1)",
			"tenants[0].tokens[0]: $DEFAULT_SCIM_TOKEN_VALUE looks like a shell variable; write ${DEFAULT_SCIM_TOKEN_VALUE} to expand it, or $$ for a literal $ (line 2)",
			"sinks[0].headers.Authorization: $CRM_TOKEN looks like a shell variable; write ${CRM_TOKEN} to expand it, or $$ for a literal $ (line 7)",
		}},
		// yaml.v3 cut a fraction to its whole part: 0.5 workers were 0.
		{"fractions", "limits: {burst: 2.9, max_json_depth: 3.9}\n" + sink("    concurrency: 0.5\n    batch: {max_events: 0.9}\n"), roleAll, []string{
			"limits.burst: want a whole number, got 2.9 (line 1)",
			"limits.max_json_depth: want a whole number, got 3.9 (line 1)",
			"sinks[0].concurrency: want a whole number, got 0.5 (line 8)",
			"sinks[0].batch.max_events: want a whole number, got 0.9 (line 9)",
		}},
		// A value the file's decoding refuses is said once: the sinks'
		// check saw the zero left in its place and said "got 0s" again.
		{"retry", sink("    retry: [5s, -1m, soon]\n"), roleAll, []string{
			`sinks[0].retry[1]: duration "-1m" is out of range (line 7)`,
			`sinks[0].retry[2]: duration "soon": want a number with a unit such as 10s, 5m, 2h or 7d (line 7)`,
		}},
		// A sink at a loopback address without allow_private: check used to
		// call this valid while serve refused it.
		{"private sink", tenant + "sinks:\n  - name: crm\n    url: http://127.0.0.1:9000/h\n    secret: " + sinkSecret + "\n", roleAll, []string{
			"sinks[0].url: 127.0.0.1 is a loopback, private or link-local address; set allow_private: true to deliver there (line 5)",
		}},
		// The sinks' own rules, and what spans sinks and tenants.
		{"sinks", sink("    events: [user.*, user.exploded]\n    tenants: [globex]\n    headers: {webhook-id: x}\n    format: xml\n  - name: crm\n    url: ftp://x\n    secret: abc\n"), roleAll, []string{
			`sinks[0].events[1]: event pattern "user.exploded": no such event`,
			`sinks[0].tenants[0]: no tenant "globex" is configured; remove the name from tenants, or the sink: tenants left empty (or out) sends the sink every tenant's events (line 8)`,
			"sinks[0].headers.webhook-id: is set by scimrelay on every delivery and cannot be overridden (line 9)",
			`sinks[0].format: must be binary or structured, got "xml" (line 10)`,
			`sinks[1].name: "crm" is also sinks[0] (line 11)`,
			`sinks[1].url: must be an absolute http(s) URL, got "ftp://x" (line 12)`,
			"sinks[1].secret: must be whsec_ followed by base64 (the Standard Webhooks format) (line 13)",
		}},
		// The tenants' rules, which the identity index owns.
		{"tenants", "storage:\n  batch_delay: 1s\ntenants:\n  - name: Acme Corp\n  - name: b\n    unique: phone\n    required: [shoeSize, groups]\n    tokens: [short]\n    rate: -1\n", roleAll, []string{
			"storage.batch_delay: must be between 0 and 100ms, got 1s (line 2)",
			`tenants[0].name: must match [a-z0-9][a-z0-9_-]* (at most 64 characters), got "Acme Corp" (line 4)`,
			`tenants[1].unique: must be userName or email, got "phone" (line 6)`,
			`tenants[1].required[0]: required attribute "shoeSize"`,
			`tenants[1].required[1]: required attribute "groups" is not one a client writes and the relay keeps (line 7)`,
			"tenants[1].tokens[0]: is 5 characters; a bearer token needs at least 20 (line 8)",
			"tenants[1].rate: must not be negative (line 9)",
		}},
		// NATS and the stream.
		{"nats", "nats:\n  credentials: /x.creds\n  password: p\n  stream:\n    replicas: 3\n    max_age: 1m\n    duplicates: 1h\n" + tenant, roleAll, []string{
			"nats.credentials: applies only to an external NATS (set nats.url); the embedded server gives the relay a credential of its own",
			"nats.password: needs nats.user (line 3)",
			"nats.stream.replicas: the embedded server keeps 1 replica; replicas > 1 need nats.url pointing at a cluster (line 5)",
			"nats.stream.duplicates: must not exceed nats.stream.max_age (1m0s) (line 7)",
		}},
		{"nats url", "nats:\n  url: http://n1:4222\n  stream:\n    replicas: 2\n    partitions: 1000\n" + tenant, roleAll, []string{
			`nats.url: scheme "http" is not one of nats, tls, ws, wss (line 2)`,
			"nats.stream.replicas: must be 0 (automatic), 1, 3 or 5, got 2 (line 4)",
			"nats.stream.partitions: must be between 1 and 256 (0 is the default, 16), got 1000 (line 5)",
		}},
		// Unset with an external NATS, the interval is nats-server's
		// default, 2m: kept 6m, longer than this window.
		{"external NATS without sync_interval", "nats:\n  url: nats://127.0.0.1:1\n  stream:\n    duplicates: 2m\n" + tenant, roleAll, []string{
			"nats.sync_interval: the relay keeps a published event in its outbox for three times it (6m0s), longer than nats.stream.duplicates (2m0s): a copy published again after a crash would not be recognised (not set: with nats.url the relay assumes nats-server's default, 2m0s; set it to the server's sync_interval, or 0 for sync_always or a cluster with replicas on other machines) (line 1)",
		}},
		// Serve could not open two listeners on one port, and said
		// "address already in use" without naming either field.
		{"listeners on one port", "listen: 127.0.0.1:18080\nadmin_listen: 0.0.0.0:18080\nnats:\n  listen: \"[::]:18080\"\n" + tenant, roleAll, []string{
			"admin_listen: shares port 18080 with listen (127.0.0.1:18080); serve cannot listen on both: give each listener a port of its own (line 2)",
			"nats.listen: shares port 18080 with listen (127.0.0.1:18080)",
			"nats.listen: shares port 18080 with admin_listen (0.0.0.0:18080)",
		}},
		{"admin and NATS on one port", "admin_listen: 127.0.0.1:18091\nnats:\n  listen: 127.0.0.1:18091\n" + tenant, roleSCIM, []string{
			"nats.listen: shares port 18091 with admin_listen (127.0.0.1:18091); serve cannot listen on both: give each listener a port of its own (line 3)",
		}},
		// Serve failed to read them, after opening the data file.
		{"NATS files missing", "nats:\n  url: nats://127.0.0.1:1\n  credentials: /nonexistent/relay.creds\n  nkey: /\n  tls:\n    ca_file: /nonexistent/ca.pem\n    cert_file: /nonexistent/cert.pem\n    key_file: /nonexistent/key.pem\n" + tenant, roleAll, []string{
			"nats.credentials: /nonexistent/relay.creds does not exist (line 3)",
			"nats.nkey: goes with nats.credentials: give the relay one credential (credentials, nkey, token, or user with password) (line 4)",
			"nats.nkey: / is a directory, not a file (line 4)",
			"nats.tls.ca_file: /nonexistent/ca.pem does not exist (line 6)",
			"nats.tls.cert_file: /nonexistent/cert.pem does not exist (line 7)",
			"nats.tls.key_file: /nonexistent/key.pem does not exist (line 8)",
		}},
		{"embedded NATS listener's files missing", "nats:\n  listen: 127.0.0.1:14222\n  tls:\n    cert_file: /nonexistent/cert.pem\n    key_file: /nonexistent/key.pem\n" + tenant, roleAll, []string{
			"nats.tls.cert_file: /nonexistent/cert.pem does not exist (line 4)",
			"nats.tls.key_file: /nonexistent/key.pem does not exist (line 5)",
		}},
		// Delivery workers publish nothing: no keep to check. Nor do they
		// listen for SCIM or run the NATS server: those ports are free.
		{"sinks role on an external NATS without sync_interval", "listen: 127.0.0.1:18094\nadmin_listen: 127.0.0.1:18094\nnats:\n  url: nats://127.0.0.1:1\n  listen: 127.0.0.1:18094\n  stream:\n    duplicates: 2m\n  password: p\n" + tenant, roleSinks, []string{
			"nats.password: needs nats.user (line 8)",
		}},
		{"sinks role on the embedded NATS", tenant, roleSinks, []string{
			"nats.url: --role sinks needs an external NATS: delivery workers share the SCIM front end's stream",
		}},
		// What the composition layer applies itself.
		{"listeners and limits", "listen: 8080\nadmin_listen: 127.0.0.1:8081\npublic_url: relay.example.com\nlog:\n  level: loud\nlimits:\n  max_json_depth: 1\n  read_timeout: 0\nprovisioning_log:\n  retention: 0\n", roleAll, []string{
			`listen: must be host:port, e.g. 127.0.0.1:8080, got "8080" (line 1)`,
			`public_url: must be an absolute http(s) URL such as https://relay.example.com, got "relay.example.com" (line 3)`,
			`log.level: must be one of debug, info, warn, error, got "loud" (line 5)`,
			"limits.max_json_depth: must be between 4 and 1000, got 1 (line 7)",
			"limits.read_timeout: must be positive (line 8)",
			"provisioning_log.retention: must be positive, e.g. 30d (line 10)",
			"tenants: at least one tenant is needed; its SCIM base path is /scim/v2/<name>",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			path := filepath.Join(dir, "relay.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml+"data_dir: "+data+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			checkCode, _, checkErr := cli(t, "check", "--role", tt.role, "--config", path)
			serveCode, _, serveErr := cli(t, "serve", "--role", tt.role, "--config", path)
			if checkCode != exitError || serveCode != exitError {
				t.Fatalf("check exited %d, serve %d; want both %d\ncheck: %s\nserve: %s", checkCode, serveCode, exitError, checkErr, serveErr)
			}
			if checkErr != serveErr {
				t.Fatalf("check and serve disagree:\ncheck: %s\nserve: %s", checkErr, serveErr)
			}
			lines := strings.Split(strings.TrimSpace(checkErr), "\n  - ")[1:]
			if !strings.Contains(checkErr, fmt.Sprintf("has %d problem", len(tt.want))) || len(lines) != len(tt.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(lines), len(tt.want), checkErr)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("problem %d is\n  %s\nwant it to start with\n  %s", i, lines[i], w)
				}
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("serve created %s before refusing the file: %v", data, err)
			}
		})
	}
}

// TestCheckAcceptsWhatServeRuns checks the other direction: a file check
// calls valid, with a tenant, a sink and every section set, is one serve
// starts with.
func TestCheckAcceptsWhatServeRuns(t *testing.T) {
	dir := t.TempDir()
	addrs := freeAddrs(t, 2)
	admin := addrs[1]
	text := fmt.Sprintf(`listen: %s
admin_listen: %s
public_url: https://relay.example.com/
data_dir: %s
log: {level: warn, format: json}
admin: {token: %q}
nats: {listen: ""}
limits: {rate: 50, burst: 10, max_body: 1MiB}
tenants:
  - name: acme
    unique: email
    required: [emails, name.givenName, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"]
    tokens: ["${SCIMRELAY_TEST_UNSET:-}", %q]
sinks:
  - name: crm
    url: http://127.0.0.1:1/h
    allow_private: true
    secret: %s
    events: ["user.*", io.scimrelay.group.member_added]
    tenants: [acme]
    headers: {Authorization: Bearer x}
    retry: [1s, 1m]
`, addrs[0], admin, filepath.Join(dir, "data"), adminSecret, acmeToken, sinkSecret)
	path := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := cli(t, "check", "--config", path); code != exitOK || !strings.Contains(out, "is valid for role all: 1 tenant(s), 1 sink(s)") {
		t.Fatalf("check: %d %s %s", code, out, stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() { done <- execute(ctx, []string{"serve", "--config", path}, &bytes.Buffer{}, &stderr) }()
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		default:
		}
		res, err := http.Get("http://" + admin + "/healthz")
		if err != nil {
			return err
		}
		res.Body.Close()
		return nil
	})
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("serve exited %d: %s", code, stderr.String())
	}
}

// TestEachRoleNeedsOnlyItsSecrets: a delivery worker serves no SCIM, so
// its process need not hold the tenants' tokens (nor the SCIM listener's
// certificate) (a deployment gives the
// workers, which call out to other parties' webhooks, no token that writes
// to the directory); the front end and role all still refuse an unset one.
// The sinks' secrets are needed in every role (the front end's replays
// and redrives sign).
func TestEachRoleNeedsOnlyItsSecrets(t *testing.T) {
	text := `admin_listen: 127.0.0.1:0
tls: {cert_file: "${SCIMRELAY_TEST_TLS}/cert.pem", key_file: "${SCIMRELAY_TEST_TLS}/key.pem"}
nats: {url: "nats://127.0.0.1:4222", sync_interval: 0}
tenants:
  - name: acme
    tokens: ["${SCIMRELAY_TEST_SCIM_TOKEN}", "${SCIMRELAY_TEST_REQUIRED:?the token comes from the vault}", "scim-${SCIMRELAY_TEST_PART}"]
sinks:
  - name: crm
    url: https://crm.example.com/h
    secret: ${SCIMRELAY_TEST_SINK_SECRET}
`
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SCIMRELAY_TEST_SINK_SECRET", sinkSecret)
	if code, out, stderr := cli(t, "check", "--role", roleSinks, "--config", path); code != exitOK {
		t.Errorf("check --role sinks without the tenants' tokens: %d %s %s", code, out, stderr)
	}
	for _, role := range []string{roleSCIM, roleAll} {
		code, _, stderr := cli(t, "check", "--role", role, "--config", path)
		for _, want := range []string{
			"tenants[0].tokens[0]: ${SCIMRELAY_TEST_SCIM_TOKEN} is not set",
			"tenants[0].tokens[1]: ${SCIMRELAY_TEST_REQUIRED}: the token comes from the vault",
			"tls.cert_file: ${SCIMRELAY_TEST_TLS} is not set",
		} {
			if code == exitOK || !strings.Contains(stderr, want) {
				t.Errorf("check --role %s without the tenants' tokens: %d, want %q in %s", role, code, want, stderr)
			}
		}
	}
	os.Unsetenv("SCIMRELAY_TEST_SINK_SECRET")
	t.Setenv("SCIMRELAY_TEST_SCIM_TOKEN", acmeToken)
	t.Setenv("SCIMRELAY_TEST_REQUIRED", acmeToken)
	t.Setenv("SCIMRELAY_TEST_PART", acmeToken)
	for _, role := range []string{roleSinks, roleSCIM} {
		if code, _, stderr := cli(t, "check", "--role", role, "--config", path); code == exitOK || !strings.Contains(stderr, "sinks[0].secret: ${SCIMRELAY_TEST_SINK_SECRET} is not set") {
			t.Errorf("check --role %s without the sink's secret: %d %s", role, code, stderr)
		}
	}
}

// TestListenersAndNamedFiles holds check to what serve can open: no two
// listeners of the role on one port where their addresses overlap, and
// the files NATS reads there (looked at, not opened), while listeners
// that do not clash, or that the role or NATS mode does not open, and
// files that are there pass.
func TestListenersAndNamedFiles(t *testing.T) {
	dir := t.TempDir()
	creds, cert := filepath.Join(dir, "relay.creds"), filepath.Join(dir, "cert.pem")
	for _, f := range []string{creds, cert} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing.pem")
	const external = "nats:\n  url: nats://n1:4222\n"
	tests := []struct {
		name, yaml, role string
		want             []string // problems of listeners and files, in order
	}{
		{"other hosts", "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.2:8080\nnats: {listen: \"[::1]:8080\"}\n", roleAll, nil},
		{"port 0", "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nnats: {listen: 127.0.0.1:0}\n", roleAll, nil},
		{"same host", "listen: 127.0.0.1:9000\nadmin_listen: 127.0.0.1:9000\n", roleSCIM, []string{"admin_listen: shares port 9000 with listen (127.0.0.1:9000)"}},
		{"same IPv6 host written twice", "listen: \"[::1]:9000\"\nadmin_listen: \"[0:0::1]:9000\"\n", roleAll, []string{"admin_listen: shares port 9000 with listen ([::1]:9000)"}},
		// A zone names a link-local address's interface only: ::1%lo is ::1.
		{"same IPv6 host, one with a zone", "listen: \"[::1%lo]:9000\"\nadmin_listen: \"[::1]:9000\"\n", roleAll, []string{"admin_listen: shares port 9000 with listen ([::1%lo]:9000)"}},
		{"IPv6 wildcard with a zone", "listen: \"[::%lo]:9000\"\nadmin_listen: 127.0.0.5:9000\n", roleAll, []string{"admin_listen: shares port 9000 with listen"}},
		{"link-local on two interfaces", "listen: \"[fe80::1%eth0]:9000\"\nadmin_listen: \"[fe80::1%eth1]:9000\"\n", roleAll, nil},
		{"same name", "listen: localhost:9000\nadmin_listen: LOCALHOST:9000\n", roleAll, []string{"admin_listen: shares port 9000 with listen"}},
		// localhost is not resolved: it is taken to be 127.0.0.1 or ::1, a clash with either.
		{"localhost and 127.0.0.1", "listen: localhost:9000\nadmin_listen: 127.0.0.1:9000\n", roleAll, []string{"admin_listen: shares port 9000 with listen (localhost:9000)"}},
		{"::1 and localhost.", "listen: \"[::1]:9000\"\nadmin_listen: Localhost.:9000\n", roleAll, []string{"admin_listen: shares port 9000 with listen ([::1]:9000)"}},
		{"localhost and another loopback address", "admin_listen: 127.0.0.5:9000\nnats: {listen: \"localhost:9000\"}\n", roleAll, nil}, // both bind
		{"localhost and another host", "listen: localhost:9000\nadmin_listen: 192.0.2.1:9000\n", roleAll, nil},
		{"localhost on another port", "listen: localhost:9000\nadmin_listen: 127.0.0.1:9001\n", roleAll, nil},
		{"no host", "admin_listen: 127.0.0.1:9000\nnats: {listen: \":9000\"}\n", roleAll, []string{"nats.listen: shares port 9000 with admin_listen"}},
		{"IPv6 wildcard", "listen: \"[::]:9000\"\nadmin_listen: 127.0.0.1:9000\n", roleAll, []string{"admin_listen: shares port 9000 with listen"}},
		// The problem is the key the file sets, not the default it clashes with.
		{"against a default", "listen: 0.0.0.0:8081\n", roleAll, []string{"listen: shares port 8081 with admin_listen (127.0.0.1:8081)"}},
		{"against NATS's default", "admin_listen: 127.0.0.1:4222\n", roleAll, []string{"admin_listen: shares port 4222 with nats.listen (127.0.0.1:4222)"}},
		{"NATS in-process", "admin_listen: 127.0.0.1:4222\nnats: {listen: \"\"}\n", roleAll, nil},
		{"external NATS: nats.listen unused", "admin_listen: 127.0.0.1:4222\n" + external, roleAll, nil},
		{"sinks: no SCIM listener", "listen: 127.0.0.1:9000\nadmin_listen: 127.0.0.1:9000\n" + external, roleSinks, nil},
		{"files there", external + "  credentials: " + creds + "\n  tls: {ca_file: " + cert + ", cert_file: " + cert + ", key_file: " + cert + "}\n", roleAll, nil},
		{"files missing", external + "  credentials: " + missing + "\n  nkey: " + dir + "\n  tls: {ca_file: " + missing + "}\n", roleSinks, []string{
			"nats.credentials: " + missing + " does not exist",
			"nats.nkey: " + dir + " is a directory, not a file",
			"nats.tls.ca_file: " + missing + " does not exist",
		}},
		// Where nats.credentials does not apply its own problem says so.
		{"embedded: credentials not read", "nats: {credentials: " + missing + "}\n", roleAll, nil},
		{"embedded in-process: no listener's files", "nats: {listen: \"\", tls: {cert_file: " + missing + ", key_file: " + missing + "}}\n", roleAll, nil},
		{"embedded listener's files", "nats: {listen: 127.0.0.1:14222, tls: {ca_file: " + cert + ", cert_file: " + cert + ", key_file: " + missing + "}}\n", roleAll, []string{
			"nats.tls.key_file: " + missing + " does not exist",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tt.yaml+"tenants: [{name: acme}]\n"), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range checkConfig(cfg, tt.role) {
				if strings.Contains(p.Field, "listen") || strings.HasSuffix(p.Message, " does not exist") || strings.HasSuffix(p.Message, "not a file") {
					got = append(got, p.String())
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("problems %q, want %q", got, tt.want)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("problem %d is %q, want it to start with %q", i, got[i], w)
				}
			}
		})
	}
}

// TestPlainHTTPSinksAreSaid: a sink whose url is plain http to a host
// that is not, by its address or name, on this machine or a private
// network is accepted, and said: by check on stderr, by serve at Warn,
// once. A Compose service's name, a Kubernetes service's and https are
// not.
func TestPlainHTTPSinksAreSaid(t *testing.T) {
	dir := t.TempDir()
	text := fmt.Sprintf(`data_dir: %s
admin: {token: %q}
tenants: [{name: acme, tokens: [%q]}]
sinks:
  - {name: public, url: "http://crm.example.com/h", secret: %s}
  - {name: compose, url: "http://receiver:9000/h", secret: %s}
  - {name: kube, url: "http://crm.default.svc.cluster.local/h", secret: %s}
  - {name: tls, url: "https://crm.example.com/h", secret: %s}
`, filepath.Join(dir, "data"), adminSecret, acmeToken, sinkSecret, sinkSecret, sinkSecret, sinkSecret)
	path := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := cli(t, "check", "--config", path)
	if code != exitOK || !strings.Contains(out, "is valid") {
		t.Fatalf("check: %d %s %s", code, out, stderr)
	}
	if n := strings.Count(stderr, "note: "); n != 1 || !strings.Contains(stderr, "note: sinks[0].url: its url is plain http to crm.example.com") {
		t.Errorf("check said %d notes, want the public sink's alone:\n%s", n, stderr)
	}

	cfg := testConfig(t, t.TempDir())
	for _, u := range []string{"http://crm.example.com/h", "http://receiver:9000/h", "https://crm.example.com/h"} {
		withSink(cfg, fmt.Sprintf("s%d", len(cfg.Sinks)), u, func(s *config.Sink) { s.AllowPrivate = false })
	}
	var log eventstest.Log
	startRelayWith(t, cfg, roleAll, slog.New(slog.NewTextHandler(&log, nil)), io.Discard)
	if n := strings.Count(log.String(), "cross the network unencrypted"); n != 1 || !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "sink=s0") {
		t.Errorf("serve said a clear-text sink %d times, want s0's once:\n%s", n, log.String())
	}
}

// TestPlainHTTPPublicURLIsSaid: a public_url that is plain http to a host
// not on this machine or a private network is accepted, and said: by
// check on stderr, by serve at Warn, once. https, loopback and a private
// network's name are not.
func TestPlainHTTPPublicURLIsSaid(t *testing.T) {
	for public, said := range map[string]bool{
		"http://relay.example.com":  true,
		"https://relay.example.com": false,
		"http://127.0.0.1:8080":     false,
		"http://relay.internal":     false,
	} {
		dir := t.TempDir()
		text := fmt.Sprintf("data_dir: %s\nadmin: {token: %q}\ntenants: [{name: acme, tokens: [%q]}]\npublic_url: %s\n",
			filepath.Join(dir, "data"), adminSecret, acmeToken, public)
		path := filepath.Join(dir, "relay.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := cli(t, "check", "--config", path)
		if code != exitOK || !strings.Contains(out, "is valid") {
			t.Fatalf("check with public_url %s: %d %s %s", public, code, out, stderr)
		}
		want := 0
		if said {
			want = 1
		}
		if n := strings.Count(stderr, "note: public_url: it is plain http to relay.example.com"); n != want || strings.Count(stderr, "note: ") != want {
			t.Errorf("check with public_url %s said:\n%s\nwant %d note of it", public, stderr, want)
		}
	}

	cfg := testConfig(t, t.TempDir())
	cfg.PublicURL = "http://relay.example.com"
	var log eventstest.Log
	startRelayWith(t, cfg, roleAll, slog.New(slog.NewTextHandler(&log, nil)), io.Discard)
	if n := strings.Count(log.String(), `level=WARN msg="public_url: it is plain http to relay.example.com`); n != 1 {
		t.Errorf("serve said a plain http public_url %d times at Warn, want once:\n%s", n, log.String())
	}
}

// TestCheckAliasBombIsOneProblem: check refuses a file whose aliases
// expand past the bound on values with that one problem; the components
// reported every value left undecoded as well (3,319 problems for a file
// of tenants, the bound's among them).
func TestCheckAliasBombIsOneProblem(t *testing.T) {
	text := "tenants:\n  - &t\n    name: acme\n    tokens: [" + strings.Repeat(acmeToken+", ", 19) + acmeToken + "]\n" +
		strings.Repeat("  - *t\n", 5000)
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path, roleAll)
	var problems config.Problems
	if !errors.As(err, &problems) || len(problems) != 1 || !strings.Contains(problems[0].Message, "expands to more than 100000 values") {
		t.Fatalf("check: %.500v; want the one problem that the file expands to more than 100000 values", err)
	}
}

// TestSinkHeaderOfASchemeAloneIsRefused: README, Headers of your own: "a
// header without a value (`X-Api-Key:`, or a variable that expanded to
// nothing) is refused". The Helm chart's own example,
// `headers: {Authorization: "Bearer ${CRM_API_KEY}"}`, with the variable
// set but empty, left "Bearer " alone: check took it, and every delivery
// carried `Authorization: Bearer` with no credential.
func TestSinkHeaderOfASchemeAloneIsRefused(t *testing.T) {
	text := `tenants:
  - name: acme
    tokens: [` + acmeToken + `]
sinks:
  - name: crm
    url: https://crm.example.com/h
    secret: ` + sinkSecret + `
    headers: {Authorization: "Bearer ${SCIMRELAY_TEST_CRM_API_KEY}"}
`
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SCIMRELAY_TEST_CRM_API_KEY", "")
	code, out, stderr := cli(t, "check", "--config", path)
	if code == exitOK || !strings.Contains(stderr, "sinks[0].headers.Authorization") {
		t.Errorf("check of Authorization: \"Bearer ${SCIMRELAY_TEST_CRM_API_KEY}\" with the variable empty: %d %s %s; want it refused, naming the header", code, out, stderr)
	}
}

// TestLinkLocalListenersWrittenTwoWays: README, check: "no two listeners
// the role opens a port where their addresses overlap (... a zone counts
// only on a link-local address". One link-local address on one interface,
// written with the interface's index or another spelling of the address,
// is one address to the kernel: serve could not open both.
func TestLinkLocalListenersWrittenTwoWays(t *testing.T) {
	var ip net.IP
	var ifi net.Interface
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() == nil && n.IP.IsLinkLocalUnicast() {
				ip, ifi = n.IP, i
			}
		}
	}
	if ip == nil {
		t.Skip("no IPv6 link-local address")
	}
	first := "[" + ip.String() + "%" + ifi.Name + "]"
	for _, second := range []string{"[" + ip.String() + "%" + strconv.Itoa(ifi.Index) + "]", "[" + strings.Replace(ip.String(), "fe80::", "fe80:0::", 1) + "%" + ifi.Name + "]"} {
		ln, err := net.Listen("tcp", first+":0")
		if err != nil {
			t.Skip(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln2, bindErr := net.Listen("tcp", second+":"+port)
		ln.Close()
		if bindErr == nil {
			ln2.Close()
			t.Logf("%s and %s both bound: not one address", first, second)
			continue
		}
		yaml := "listen: \"" + first + ":" + port + "\"\nadmin_listen: \"" + second + ":" + port + "\"\ntenants: [{name: acme}]\n"
		cfg, err := config.Parse([]byte(yaml), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range checkConfig(cfg, roleAll) {
			if strings.Contains(p.String(), "shares port") {
				found = true
			}
		}
		if !found {
			t.Errorf("check took listen %s:%s beside admin_listen %s:%s, which serve cannot open (%v)", first, port, second, port, bindErr)
		}
	}
}
