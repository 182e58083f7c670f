// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestAdminTokenFileIsItsOwners: the generated admin token is read only
// from a regular file, never through a link someone put in its place; a
// file others could read is made its owner's alone, with a warning.
func TestAdminTokenFileIsItsOwners(t *testing.T) {
	var logBuf eventstest.Log
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := testConfig(t, t.TempDir())
	cfg.Admin.Token = ""
	path := cfg.AdminTokenPath()

	// A token file others can read.
	if err := os.WriteFile(path, []byte("scimrelay_admin_known-to-others\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if tok, err := adminToken(cfg, log); err != nil || tok != "scimrelay_admin_known-to-others" {
		t.Fatalf("admin token from a 0644 file: %q, %v", tok, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the token file after it was read: %v, %v; want mode 0600", fi.Mode().Perm(), err)
	}
	if !strings.Contains(logBuf.String(), "readable by others") {
		t.Errorf("no warning that the token file was readable by others:\n%s", logBuf.String())
	}

	// A link in the token file's place, to a file others can read.
	elsewhere := filepath.Join(t.TempDir(), "planted")
	if err := os.WriteFile(elsewhere, []byte("scimrelay_admin_planted\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, path); err != nil {
		t.Fatal(err)
	}
	if tok, err := adminToken(cfg, log); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("admin token through a link: %q, %v; want it refused", tok, err)
	}

	// None there: a new one, its owner's alone.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	tok, err := adminToken(cfg, log)
	if err != nil || !strings.HasPrefix(tok, "scimrelay_admin_") {
		t.Fatalf("generated admin token: %q, %v", tok, err)
	}
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("the generated token file: %v, %v; want a regular file of mode 0600", fi.Mode(), err)
	}
}

// TestShortAdminTokenFileRefused: data_dir/admin.token is held to the
// minimum of relay.yaml's admin.token (20 characters); serve refuses to
// start with a shorter one, empty included, naming the file and the
// minimum.
func TestShortAdminTokenFileRefused(t *testing.T) {
	for _, content := range []string{"short-admin-token\n", "\n"} {
		cfg := testConfig(t, t.TempDir())
		cfg.Admin.Token = ""
		if err := os.WriteFile(cfg.AdminTokenPath(), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard)
		if err == nil {
			_ = srv.close()
			t.Fatalf("serve started with a %d-character admin token file", len(strings.TrimSpace(content)))
		}
		if !strings.Contains(err.Error(), cfg.AdminTokenPath()) || !strings.Contains(err.Error(), "at least 20") {
			t.Fatalf("a short admin token file refused with %q; want it to name %s and the minimum", err, cfg.AdminTokenPath())
		}
	}
}

// TestGeneratedAdminToken holds the README's Operating section to who can
// reach the admin listener: with admin.token empty, serve writes a token
// of its own to data_dir/admin.token (readable by its owner only, never
// logged, kept across restarts) that the CLI on the same machine reads;
// the admin API and the profiles refuse a request without it, with a
// wrong one or with a tenant's SCIM token, while /healthz, /readyz and
// /metrics answer anyone. The SCIM listener serves none of the admin
// listener's routes, not even to the admin token.
func TestGeneratedAdminToken(t *testing.T) {
	if host, _, err := net.SplitHostPort(config.Default().AdminListen); err != nil || !net.ParseIP(host).IsLoopback() {
		t.Fatalf("admin_listen defaults to %q, want a loopback address", config.Default().AdminListen)
	}
	var logBuf eventstest.Log
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := testConfig(t, t.TempDir())
	cfg.Admin.Token = ""
	// More wrong tokens than a guesser may send (TestWrongAdminTokensAreLimited).
	p := startRelayWith(t, cfg, roleAll, log, io.Discard, withTokenLimits(httpmw.Limit{}, httpmw.Limit{}))

	fi, err := os.Stat(cfg.AdminTokenPath())
	if err != nil {
		t.Fatalf("serve without admin.token wrote no %s: %v", cfg.AdminTokenPath(), err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", cfg.AdminTokenPath(), fi.Mode().Perm())
	}
	raw, err := os.ReadFile(cfg.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	if len(token) < 32 {
		t.Fatalf("the generated admin token %q is too short to be a secret", token)
	}

	admin := func(method, path, authorization string) reply {
		t.Helper()
		req, err := http.NewRequest(method, p.adminURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		return do(t, req)
	}
	// An attacker on the admin listener's network, without the token.
	for _, path := range []string{"/admin/v1/tokens", "/admin/v1/backup", "/admin/v1/log", "/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine"} {
		for _, authz := range []string{"", "Bearer wrong-" + token[6:], "Bearer " + token + "x", "Bearer " + acmeToken, "Basic " + token, token} {
			if r := admin("GET", path, authz); r.status != http.StatusUnauthorized || r.header.Get("X-Request-Id") == "" {
				t.Errorf("GET %s with Authorization %q: %d (request id %q), want 401", path, authz, r.status, r.header.Get("X-Request-Id"))
			}
		}
		if r := admin("GET", path, "Bearer "+token); r.status != http.StatusOK || r.header.Get("X-Request-Id") == "" {
			t.Errorf("GET %s with the generated admin token: %d (request id %q), want 200: %s", path, r.status, r.header.Get("X-Request-Id"), r.raw)
		}
	}
	// Probes and scrapers need nothing.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		p.wantStatus(path, http.StatusOK, 10e9)
		if r := admin("GET", path, ""); r.header.Get("X-Request-Id") == "" {
			t.Errorf("GET %s: no X-Request-Id", path)
		}
	}
	// The SCIM listener, the one exposed to the identity provider, serves
	// none of it.
	for _, path := range []string{"/admin/v1/tokens", "/debug/pprof/", "/metrics", "/ui/"} {
		req, _ := http.NewRequest("GET", p.scimURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if r := do(t, req); r.status == http.StatusOK || strings.Contains(string(r.raw), "scimrelay_") {
			t.Errorf("GET %s on the SCIM listener with the admin token: %d %.200s", path, r.status, r.raw)
		}
	}

	// The CLI on the same machine: relay.yaml without admin.token.
	cliConf := func() string {
		path := filepath.Join(t.TempDir(), "relay.yaml")
		text := fmt.Sprintf("admin_listen: %s\ndata_dir: %s\n", strings.TrimPrefix(p.adminURL, "http://"), cfg.DataDir)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if code, out, stderr := cli(t, "token", "create", "--tenant", "acme", "--name", "cli", "--config", cliConf()); code != exitOK || strings.TrimSpace(out) == "" {
		t.Fatalf("token create with the generated admin token: %d %s %s", code, out, stderr)
	}
	p.stop()

	// A restart keeps the token: the CLI and scripts go on working.
	p = startRelayWith(t, cfg, roleAll, log, io.Discard)
	if code, _, stderr := cli(t, "token", "list", "--config", cliConf()); code != exitOK {
		t.Fatalf("token list after a restart: %d %s", code, stderr)
	}
	if again, _ := os.ReadFile(cfg.AdminTokenPath()); strings.TrimSpace(string(again)) != token {
		t.Error("a restart replaced the generated admin token")
	}
	p.stop()
	if strings.Contains(logBuf.String(), token) {
		t.Errorf("the log holds the generated admin token:\n%s", logBuf.String())
	}
	if !strings.Contains(logBuf.String(), cfg.AdminTokenPath()) {
		t.Errorf("the log does not say where the admin token is:\n%s", logBuf.String())
	}
}

// TestReloadChangesTenantsAndLimits holds what the README says a reload
// applies beyond TestReload: a tenant's tokens from the file (the one
// taken out stops working at once: an operator rotating a leaked static
// token must not need a restart), its unique and required, a tenant
// removed keeping its data (it is back when the tenant is), and
// limits.max_body, max_json_depth, max_sort_matches and
// bulk_max_operations.
func TestReloadChangesTenantsAndLimits(t *testing.T) {
	const leaked, fresh = "acme-leaked-token-0123456789abcdef", "acme-fresh-token-0123456789abcdef"
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	write := func(acme, limits string, globex bool) {
		text := "limits:\n  rate: 0\n" + limits + "tenants:\n  - name: acme\n" + acme
		if globex {
			text += "  - name: globex\n    tokens: [" + globexToken + "]\n"
		}
		f.write(text)
	}
	write("    tokens: ["+leaked+"]\n", "", true)
	cfg, err := loadConfig(f.path, roleAll)
	if err != nil {
		t.Fatal(err)
	}
	p := startRelay(t, cfg, roleAll, withReload(f.path, nil))
	user := func(token, name, extra string) reply {
		t.Helper()
		return p.scim("acme", token, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"`+extra+`}`)
	}
	user(leaked, "ann", `,"emails":[{"value":"shared@acme.com","primary":true}]`).want(t, 201)
	bob := p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`).want(t, 201).str("id")

	// The leaked token is replaced in the file; globex is removed; acme
	// becomes unique by email and requires emails.
	write("    tokens: ["+fresh+"]\n    unique: email\n    required: [emails]\n", "", false)
	applied := reloadNow(t, p)
	if !strings.Contains(strings.Join(applied, "\n"), "tenant acme changed") || !strings.Contains(strings.Join(applied, "\n"), "tenant globex removed") {
		t.Errorf("reload applied %q", applied)
	}
	if r := p.scim("acme", leaked, "GET", "/Users", ""); r.status != http.StatusUnauthorized {
		t.Errorf("the token taken out of relay.yaml after a reload: %d, want 401", r.status)
	}
	p.scim("acme", fresh, "GET", "/Users", "").want(t, http.StatusOK)
	if r := user(fresh, "cid", ""); r.status != http.StatusBadRequest || !strings.Contains(r.str("detail"), "emails") {
		t.Errorf("a user without emails after required: [emails]: %d %s", r.status, r.raw)
	}
	if r := user(fresh, "dee", `,"emails":[{"value":"shared@acme.com","primary":true}]`); r.status != http.StatusConflict || r.str("scimType") != "uniqueness" {
		t.Errorf("a second user with ann's email after unique: email: %d %s", r.status, r.raw)
	}
	removed := p.scim("globex", globexToken, "GET", "/Users/"+bob, "")
	unknown := p.scim("initech", globexToken, "GET", "/Users/"+bob, "")
	if removed.status != http.StatusUnauthorized || removed.str("detail") != unknown.str("detail") {
		t.Errorf("a removed tenant answers %d %s; an unknown one %d %s", removed.status, removed.raw, unknown.status, unknown.raw)
	}

	// The limits, and globex back with its data.
	write("    tokens: ["+fresh+"]\n", "  max_body: 400\n  max_json_depth: 6\n  max_sort_matches: 1\n  bulk_max_operations: 1\n  bulk_max_payload: 1KiB\n", true)
	applied = reloadNow(t, p)
	for _, key := range []string{"limits.max_body", "limits.max_json_depth", "limits.max_sort_matches", "limits.bulk_max_operations", "limits.bulk_max_payload", "tenant globex added"} {
		if !strings.Contains(strings.Join(applied, "\n"), key) {
			t.Errorf("reload applied %q, without %s", applied, key)
		}
	}
	p.scim("globex", globexToken, "GET", "/Users/"+bob, "").want(t, http.StatusOK)
	if r := user(fresh, "eve", `,"title":"`+strings.Repeat("x", 500)+`"`); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a 600-byte body after max_body: 400: %d %s", r.status, r.raw)
	}
	if r := user(fresh, "fay", `,"x":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}`); r.status != http.StatusBadRequest || r.str("scimType") != "invalidSyntax" {
		t.Errorf("JSON 8 deep after max_json_depth: 6: %d %s", r.status, r.raw)
	}
	user(fresh, "gus", "").want(t, http.StatusCreated)
	if r := p.scim("acme", fresh, "GET", "/Users?sortBy=userName", ""); r.status != http.StatusBadRequest || r.str("scimType") != "tooMany" {
		t.Errorf("sorting 2 users after max_sort_matches: 1: %d %s", r.status, r.raw)
	}
	op := func(name string) string {
		return `{"method":"POST","path":"/Users","data":{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"` + name + `"}}`
	}
	if r := p.scim("acme", fresh, "POST", "/Bulk", bulkRequest(0, op("h1"), op("h2"))); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a /Bulk of 2 operations after bulk_max_operations: 1: %d %s", r.status, r.raw)
	}
	if r := p.scim("acme", fresh, "POST", "/Bulk", bulkRequest(0, op("h3"+strings.Repeat("x", 1024)))); r.status != http.StatusRequestEntityTooLarge || !strings.Contains(r.str("detail"), "maxPayloadSize (1024 bytes)") {
		t.Errorf("a /Bulk of more than 1KiB after bulk_max_payload: 1KiB: %d %s", r.status, r.raw)
	}
}

// operatingParagraph returns the README's paragraph of the Operating
// section that starts with start, up to the line starting with end.
func operatingParagraph(t *testing.T, start, end string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i := strings.Index(text, "\n## Operating\n")
	if i < 0 {
		t.Fatal("the README has no Operating section")
	}
	text = text[i:]
	i = strings.Index(text, "\n"+start)
	if i < 0 {
		t.Fatalf("the README's Operating section has no paragraph starting %q", start)
	}
	text = text[i:]
	j := strings.Index(text, "\n"+end)
	if j < 0 {
		t.Fatalf("the README's paragraph %q does not end with %q", start, end)
	}
	return text[:j]
}

var metricMention = regexp.MustCompile("`(scimrelay_[a-z_]+)(?:\\{([a-z_,]+)\\})?`")

// metricsOfTheirOwnTest are the metrics the README names that a relay of
// testConfig does not export, each with the test that scrapes it.
var metricsOfTheirOwnTest = map[string]string{
	"scimrelay_tls_certificate_expiry_timestamp_seconds": "TestListenersSpeakTLS",                    // with tls and admin.tls set
	"scimrelay_tls_handshake_errors_total":               "TestClientsCannotWriteTheServerLogAtWill", // the same
	"scimrelay_scim_error_timestamp_seconds":             "TestDiskFullDataFile",                     // after a server error
}

// TestAlertRulesNameREADMEMetrics: deploy/prometheus/alerts.yaml, the
// rules README's Alerts paragraph offers, is a Prometheus rules file
// whose every rule has an alert name, an expression, a severity, a
// summary and a description, and whose expressions name only metrics
// README's Metrics paragraph names (which TestMetricsTheREADMENames
// finds in a live relay's scrape, with their labels); a label a rule
// reads is one README gives its metric. An aggregation is "without" the
// per-process labels (instance, pod) and labels of the metric's own,
// never "by" a list, which would drop the labels that tell installations
// apart (job, namespace, cluster) and merge two releases' alerts; a label
// the annotations read is not dropped. So a metric renamed in the code
// fails here too. It covers each metric README says to alert on.
func TestAlertRulesNameREADMEMetrics(t *testing.T) {
	paragraph := operatingParagraph(t, "**Metrics**", "*Renamed in this release*")
	documented := map[string][]string{}
	for _, m := range metricMention.FindAllStringSubmatch(paragraph, -1) {
		if m[2] != "" || documented[m[1]] == nil {
			documented[m[1]] = strings.Split(m[2], ",")
		}
	}
	raw, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	named := regexp.MustCompile(`scimrelay_[a-z_]+`)
	labelUse := regexp.MustCompile(`(?:\$labels\.([a-z_]+)|[{,] *([a-z_]+) *[=!]~?")`)
	aggregation := regexp.MustCompile(`\b(by|without) *\(([a-z_, ]*)\)`)
	perProcess := []string{"instance", "pod"} // what one installation spreads series over
	alerted := map[string]bool{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("rule %+v lacks a name, expression, severity, summary or description", r)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			metrics := named.FindAllString(r.Expr, -1)
			if len(metrics) == 0 {
				t.Errorf("%s: %q names no metric of the relay's", r.Alert, r.Expr)
				continue
			}
			// A rule naming several metrics (one compared with another)
			// reads only labels every one of them has.
			var labels []string
			for i, m := range metrics {
				has, ok := documented[m]
				if !ok {
					t.Errorf("%s: %s is not in README's Metrics paragraph", r.Alert, m)
				}
				alerted[m] = true
				if i == 0 {
					labels = has
				} else {
					labels = slices.DeleteFunc(slices.Clone(labels), func(l string) bool { return !slices.Contains(has, l) })
				}
			}
			// An aggregation drops only what one installation spreads
			// series over, and labels of the metric's own: never "by" a
			// list, which would drop job, namespace, cluster and the
			// like, and merge two installations' alerts.
			var dropped []string
			for _, agg := range aggregation.FindAllStringSubmatch(r.Expr, -1) {
				if agg[1] == "by" {
					t.Errorf("%s: %q aggregates by a list, dropping the labels that tell installations apart; use without", r.Alert, agg[0])
					continue
				}
				for _, l := range strings.Split(agg[2], ",") {
					l = strings.TrimSpace(l)
					if !slices.Contains(perProcess, l) && !slices.Contains(labels, l) {
						t.Errorf("%s: %q drops %q, neither a per-process label %v nor one README gives %v (%v)", r.Alert, agg[0], l, perProcess, metrics, labels)
					}
					dropped = append(dropped, l)
				}
			}
			for _, use := range labelUse.FindAllStringSubmatch(r.Expr+" "+r.Annotations["summary"]+" "+r.Annotations["description"], -1) {
				l := use[1] + use[2]
				if !slices.Contains(labels, l) {
					t.Errorf("%s: label %q is not one README gives %v (%v)", r.Alert, l, metrics, labels)
				}
				if use[1] != "" && slices.Contains(dropped, l) {
					t.Errorf("%s: the annotations read label %q, which the expression drops", r.Alert, l)
				}
			}
		}
	}
	// What README's Metrics paragraph says to alert on has a rule.
	for _, m := range regexp.MustCompile("`(scimrelay_[a-z_]+)[^`]*`(?: \\([^()]*?|[^`;]*?)alert").FindAllStringSubmatch(paragraph, -1) {
		if !alerted[m[1]] {
			t.Errorf("README says to alert on %s, and alerts.yaml has no rule on it", m[1])
		}
	}
}

// TestMetricsTheREADMENames scrapes /metrics on the admin listener, with no
// token, of a relay that took a write, delivered it to a sink and has a
// token that expires: every series the README's Metrics paragraph names is
// there, with exactly the labels it names, and scimrelay_stream_* cover
// the four streams it lists. A metric renamed, dropped or relabelled in
// the code, or named wrong in the README, fails here.
func TestMetricsTheREADMENames(t *testing.T) {
	paragraph := operatingParagraph(t, "**Metrics**", "*Renamed in this release*")
	named := map[string]string{} // name → its labels, sorted, comma-separated
	for _, m := range metricMention.FindAllStringSubmatch(paragraph, -1) {
		labels := strings.Split(m[2], ",")
		slices.Sort(labels)
		if m[2] == "" {
			labels = nil
		}
		if prev, ok := named[m[1]]; !ok || prev == "" {
			named[m[1]] = strings.Join(labels, ",")
		}
	}
	if len(named) < 20 {
		t.Fatalf("found only %d metrics in the README's Metrics paragraph: %v", len(named), named)
	}

	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	if code, _, stderr := cli(t, "token", "create", "--tenant", "acme", "--expires", "30d", "--config", cliConfig(t, p, adminSecret)); code != exitOK {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	p.createUser(t, "ann")
	waitDelivered(t, h, 1)

	scrape := &adminclient.Client{BaseURL: p.adminURL, Timeout: 10 * time.Second}
	var families map[string]*dto.MetricFamily
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var err error
		if families, err = scrape.Metrics(context.Background()); err != nil {
			return err
		}
		// The stream and backlog gauges are read in the background (the
		// backlog every 5 s).
		if f := families["scimrelay_stream_messages"]; f == nil || len(f.GetMetric()) < 4 {
			return fmt.Errorf("scimrelay_stream_messages not there for every stream yet")
		}
		if families["scimrelay_sink_backlog"] == nil {
			return fmt.Errorf("scimrelay_sink_backlog not read yet")
		}
		return nil
	})
	for name, labels := range named {
		if test, ok := metricsOfTheirOwnTest[name]; ok {
			if testFuncs(t, ".")[test] == nil {
				t.Errorf("%s is left to %s, which is not there", name, test)
			}
			continue
		}
		f := families[name]
		if f == nil || len(f.GetMetric()) == 0 {
			t.Errorf("the README names %s; /metrics has no such series", name)
			continue
		}
		for _, m := range f.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
			}
			slices.Sort(got)
			if strings.Join(got, ",") != labels {
				t.Errorf("%s has labels {%s}; the README says {%s}", name, strings.Join(got, ","), labels)
				break
			}
		}
	}
	streams := map[string]bool{}
	for _, m := range families["scimrelay_stream_bytes"].GetMetric() {
		streams[labelValue(m, "stream")] = true
	}
	for _, s := range []string{"SCIMRELAY", "SCIMRELAY_DLQ", "SCIMRELAY_DELIVERIES", "SCIMRELAY_WORKERS"} {
		if !streams[s] {
			t.Errorf("scimrelay_stream_bytes has no series for the stream %s: %v", s, streams)
		}
	}
	// "Go and process metrics".
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if families[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if v := sumSeries(families["scimrelay_scim_requests_total"], "tenant", "acme", "operation", "create", "status", "201"); v != 1 {
		t.Errorf("scimrelay_scim_requests_total{tenant=acme,operation=create,status=201} = %v, want 1", v)
	}
}

// TestNoSecretsInOperatorLogs holds "tokens and secrets never appear above
// Debug" for what TestNoSecretsInLogs does not do: an operator's work on
// the admin API. It creates and rotates tokens and OAuth clients, adds a
// subscriber (its nkey seed), tries the admin API with a guessed token and
// SCIM with a revoked one, reloads relay.yaml with a static token
// replaced, and reloads a file whose token is too short (refused, logged
// at Error): none of those secrets is in the Info log.
func TestNoSecretsInOperatorLogs(t *testing.T) {
	const (
		newStatic  = "acme-rotated-static-token-0123456789"
		shortToken = "short-secret-x9"
		guess      = "guessed-admin-token-0123456789abcdef"
	)
	h := newHook(t)
	path := filepath.Join(t.TempDir(), "relay.yaml")
	write := func(token string) {
		text := fmt.Sprintf(`listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
data_dir: %s
admin:
  token: %s
nats:
  listen: 127.0.0.1:%d
log:
  level: info
  format: json
limits:
  rate: 0
tenants:
  - name: acme
    tokens: [%s]
sinks:
%s`, filepath.Dir(path), adminSecret, eventstest.FreePort(t), token, sinkYAML("crm", h.URL))
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(acmeToken)
	var out eventstest.Log
	p := startReloadable(t, path, &out)
	cliConf := cliConfig(t, p, adminSecret)
	secrets := []string{adminSecret, acmeToken, newStatic, shortToken, guess, sinkSecret}
	run := func(args ...string) string { t.Helper(); return cliOK(t, cliConf, args...) }
	secrets = append(secrets, strings.TrimSpace(run("token", "create", "--tenant", "acme", "--expires", "30d")))
	secrets = append(secrets, strings.TrimSpace(run("token", "rotate", "--tenant", "acme", "--overlap", "1h")))
	for _, args := range [][]string{{"client", "create", "--tenant", "acme"}, {"client", "rotate", "--tenant", "acme", "--overlap", "1h"}} {
		stdout := run(args...)
		for _, line := range strings.Split(stdout, "\n") {
			if v, ok := strings.CutPrefix(line, "client_secret: "); ok {
				secrets = append(secrets, strings.TrimSpace(v))
			}
		}
	}
	secrets = append(secrets, strings.TrimSpace(run("subscriber", "add", "billing", "--stdout")))
	if len(secrets) != 11 {
		t.Fatalf("collected %d secrets, want 11: %q", len(secrets), secrets)
	}
	req, _ := http.NewRequest("GET", p.adminURL+"/admin/v1/tokens", nil)
	req.Header.Set("Authorization", "Bearer "+guess)
	do(t, req).want(t, http.StatusUnauthorized)
	p.createUser(t, "ann@acme.example")

	write(newStatic)
	if stdout := run("reload"); !strings.Contains(stdout, "tenant acme changed") {
		t.Fatalf("reload: %s", stdout)
	}
	p.scim("acme", acmeToken, "GET", "/Users", "").want(t, http.StatusUnauthorized)
	p.scim("acme", newStatic, "GET", "/Users", "").want(t, http.StatusOK)
	write(shortToken)
	if code, _, stderr := cli(t, "reload", "--config", cliConf); code != exitError || !strings.Contains(stderr, "tenants[0].tokens[0]") {
		t.Fatalf("reload of a too-short token: %d %s", code, stderr)
	}
	waitDelivered(t, h, 1)
	p.stop()

	text := out.String()
	if !strings.Contains(text, "reloading relay.yaml refused") || !strings.Contains(text, "serving SCIM") {
		t.Fatalf("the log is not what this test thinks it is:\n%s", text)
	}
	for _, secret := range append(secrets, "ann@acme.example") {
		if strings.Contains(text, secret) {
			t.Errorf("the Info log holds %q", secret)
		}
	}
	if strings.Contains(text, `"level":"DEBUG"`) {
		t.Error("a Debug line at level info")
	}
}

// TestDeliveryAttemptsKeptForTheRetention holds the README's "every
// delivery attempt … kept provisioning_log.retention": the attempts live
// in the stream SCIMRELAY_DELIVERIES, which drops them at that age, and
// past provisioning_log.max_bytes (in the NATS store, apart from the
// data file's log) drops the oldest.
func TestDeliveryAttemptsKeptForTheRetention(t *testing.T) {
	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	cfg.ProvisioningLog.Retention = config.Duration(36 * time.Hour)
	cfg.ProvisioningLog.MaxBytes = 3 << 20
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	p.createUser(t, "ann")
	waitDelivered(t, h, 1)
	stream, err := p.srv.js.Stream(context.Background(), "SCIMRELAY_DELIVERIES")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 36*time.Hour {
		t.Errorf("SCIMRELAY_DELIVERIES keeps attempts %v, want provisioning_log.retention, 36h", info.Config.MaxAge)
	}
	if info.Config.MaxBytes != 3<<20 || info.Config.Discard != jetstream.DiscardOld {
		t.Errorf("SCIMRELAY_DELIVERIES is bounded to %d bytes (discard %v), want provisioning_log.max_bytes, 3 MiB, the oldest going first", info.Config.MaxBytes, info.Config.Discard)
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n, err := stream.Info(context.Background()); err != nil || n.State.Msgs == 0 {
			return fmt.Errorf("no delivery attempt recorded yet (%v)", err)
		}
		return nil
	})
}

// TestCLIFindsItsConfig holds "commands take --config for admin_listen and
// the token (default: the file SCIMRELAY_CONFIG names, else ./relay.yaml;
// --config wins)".
func TestCLIFindsItsConfig(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	good, wrong := cliConfig(t, p, adminSecret), cliConfig(t, p, "wrong-admin-token-0123456789")
	list := func(args ...string) int {
		t.Helper()
		code, _, _ := cli(t, append([]string{"token", "list"}, args...)...)
		return code
	}
	t.Chdir(filepath.Dir(wrong)) // ./relay.yaml holds the wrong token
	if code := list(); code != exitError {
		t.Errorf("./relay.yaml with a wrong token: exit %d, want %d (refused)", code, exitError)
	}
	t.Setenv(configEnv, good)
	if code := list(); code != exitOK {
		t.Errorf("SCIMRELAY_CONFIG naming the right file over ./relay.yaml: exit %d, want 0", code)
	}
	if code := list("--config", wrong); code != exitError {
		t.Errorf("--config naming the wrong file over SCIMRELAY_CONFIG: exit %d, want %d", code, exitError)
	}
	t.Setenv(configEnv, wrong)
	if code := list("--config", good); code != exitOK {
		t.Errorf("--config naming the right file over SCIMRELAY_CONFIG: exit %d, want 0", code)
	}
}

// TestTracingSettingsRefused holds "Another exporter (zipkin) or protocol
// (grpc) is refused by serve and check, not ignored": both name the
// variable and serve does not start.
func TestTracingSettingsRefused(t *testing.T) {
	for _, env := range [][2]string{{"OTEL_TRACES_EXPORTER", "zipkin"}, {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}} {
		t.Run(env[1], func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
			t.Setenv(env[0], env[1])
			cfg := testConfig(t, t.TempDir())
			if srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard); err == nil || !strings.Contains(err.Error(), env[0]) {
				if srv != nil {
					srv.close()
				}
				t.Errorf("serve with %s=%s: %v, want a refusal naming %s", env[0], env[1], err, env[0])
			}
			path := filepath.Join(t.TempDir(), "relay.yaml")
			if err := os.WriteFile(path, []byte("tenants:\n  - name: acme\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if code, _, stderr := cli(t, "check", "--config", path); code == exitOK || !strings.Contains(stderr, env[0]) {
				t.Errorf("check with %s=%s: exit %d, %s", env[0], env[1], code, stderr)
			}
		})
	}
}

// startReloadable starts a relay from the relay.yaml at path, as serve
// does: logging to out as its log keys say, and reloading that file.
func startReloadable(t *testing.T, path string, out io.Writer) *relayProc {
	t.Helper()
	return startReloadableAs(t, path, roleAll, out)
}

// startReloadableAs is startReloadable in a role.
func startReloadableAs(t *testing.T, path, role string, out io.Writer, opts ...serverOption) *relayProc {
	t.Helper()
	cfg, err := loadConfig(path, role)
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	log, err := newLogger(cfg.Log, out, level)
	if err != nil {
		t.Fatal(err)
	}
	return startRelayWith(t, cfg, role, log, io.Discard, append(opts, withReload(path, level))...)
}
