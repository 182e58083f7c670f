// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestCLIBadUsage: a bad flag value is bad usage (exit 2) and the hint names
// the subcommand's own help; a filter naming no tenant or sink of the
// relay is bad usage too, instead of an empty answer; token list says
// hours when less than a day is left.
func TestCLIBadUsage(t *testing.T) {
	c := testConfig(t, t.TempDir())
	withSink(c, "crm", newHook(t).URL, nil)
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"dlq", "list", "--sink", "crm", "--limit", "many"}, "invalid argument \"many\" for \"--limit\""},  // cobra refuses the value
		{[]string{"log", "--since", "yesterday-ish"}, "since"},                                                      // the admin API refuses it (400)
		{[]string{"token", "create", "--tenant", "acme", "--expires", "soon"}, "expires: want a duration"},          // same
		{[]string{"log", "--tenant", "initech"}, "--tenant initech: no such tenant (tenants: acme, globex)"},        // a filter naming nothing
		{[]string{"log", "--deliveries", "--sink", "erp"}, "--sink erp: no such sink"},                              //
		{[]string{"events", "tail", "--tenant", "initech", "--no-follow"}, "--tenant initech: no such tenant"},      //
		{[]string{"token", "list", "--tenant", "initech"}, "--tenant initech: no such tenant"},                      //
		{[]string{"client", "list", "--tenant", "initech"}, "--tenant initech: no such tenant"},                     //
		{[]string{"dlq", "list", "--sink", "erp"}, "--sink erp: no such sink"},                                      //
		{[]string{"serve", "--role", "everything"}, "must be all, scim or sinks"},                                   // refused while parsing
		{[]string{"healthcheck", "--timeout", "-1s"}, "--timeout must be positive"},                                 //
		{[]string{"events", "tail", "--since", "10m", "--from-seq", "3", "--tenant", "acme"}, "exclude each other"}, //
		{[]string{"events", "tail", "--since", "10m", "--from-seq", "0", "--tenant", "acme"}, "exclude each other"}, // 0 is given too
		{[]string{"events", "tail", "--from-seq", "0"}, "give --tenant too"},                                        //
		{[]string{"token", "revoke", ""}, "ID is empty"},                                                            // an unset "$ID"
		{[]string{"client", "revoke", " "}, "ID is empty"},                                                          //
		{[]string{"sinks", "forget", "", "--yes"}, "NAME is empty"},                                                 //
		{[]string{"tenant", "purge", "", "--yes"}, "NAME is empty"},                                                 //
		{[]string{"subscriber", "remove", ""}, "NAME is empty"},                                                     //
		{[]string{"subscriber", "add", ""}, "NAME is empty"},                                                        //
	} {
		code, stdout, stderr := cli(t, append(tc.args, "--config", cfg)...)
		hint := "Run 'scimrelay " + strings.Join(subcommandOf(tc.args), " ") + " --help' for usage."
		if code != exitUsage || !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, hint) || stdout != "" {
			t.Errorf("%v: exit %d, want %d (bad usage); stdout %q; stderr %q, want it to say %q and %q", tc.args, code, exitUsage, stdout, stderr, tc.says, hint)
		}
	}

	// A token with hours to live says so, not "0d".
	if code, _, stderr := cli(t, "token", "create", "--tenant", "acme", "--name", "short", "--expires", "5h", "--config", cfg); code != exitOK {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	code, out, _ := cli(t, "token", "list", "--tenant", "acme", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "expires in 4h") {
		t.Errorf("token list of a token expiring in 5 h: %d\n%s", code, out)
	}
}

// TestCLIGroupsRefuseUnknownSubcommands: every command that only holds
// subcommands (token, dlq, ..., the root, and any added later: the tree is
// walked) prints its help and exits 0 when called bare, and refuses a
// mistyped subcommand as bad usage (exit 2), naming it, instead of
// printing its help and exiting 0 as if the command had run.
func TestCLIGroupsRefuseUnknownSubcommands(t *testing.T) {
	var groups []*cobra.Command
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() {
			groups = append(groups, c)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand())
	if len(groups) < 7 { // the root, token, client, subscriber, dlq, sinks, events
		t.Fatalf("found %d groups in the command tree", len(groups))
	}
	for _, g := range groups {
		path := strings.Fields(g.CommandPath())[1:]
		t.Run(g.CommandPath(), func(t *testing.T) {
			name := g.Commands()[0].Name()
			typo := name[:len(name)-1]
			code, stdout, stderr := cli(t, append(path, typo, "tok_123")...)
			hint := "Run '" + g.CommandPath() + " --help' for usage."
			if code != exitUsage || stdout != "" || !strings.Contains(stderr, fmt.Sprintf("unknown command %q", typo)) || !strings.Contains(stderr, hint) {
				t.Errorf("%v: exit %d, want %d (bad usage); stdout %q; stderr %q, want it to name %q and say %q", append(path, typo), code, exitUsage, stdout, stderr, typo, hint)
			}
			if code, stdout, stderr := cli(t, path...); code != exitOK || !strings.Contains(stdout, "Available Commands:") || stderr != "" {
				t.Errorf("%v alone: exit %d, stdout %q, stderr %q; want its help and 0", path, code, stdout, stderr)
			}
		})
	}
}

// subcommandOf returns the command words of args (up to the first flag or
// empty argument).
func subcommandOf(args []string) []string {
	for i, a := range args {
		if strings.HasPrefix(a, "-") || strings.TrimSpace(a) == "" {
			return args[:i]
		}
	}
	return args
}

// TestCLIBench: the bench takes its token from the environment alone;
// without a terminal it draws no progress bar; with --fail-on-errors a run
// whose requests failed exits 1 after its report.
func TestCLIBench(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	t.Setenv(benchTokenEnv, acmeToken)
	run := func() (int, string, string) {
		return cli(t, "bench", "--url", p.scimURL+"/scim/v2/acme", "--users", "6", "--groups", "1",
			"--members-per-group", "2", "--concurrency", "2", "--prefix", "cli-bench", "--fail-on-errors")
	}
	code, out, stderr := run()
	if code != exitOK || !strings.Contains(out, "create-user") {
		t.Fatalf("a clean run with --fail-on-errors: exit %d\n%s\n%s", code, out, stderr)
	}
	if strings.ContainsAny(stderr, "█|") || strings.Contains(stderr, "%") {
		t.Errorf("a progress bar was drawn though stderr is not a terminal:\n%s", stderr)
	}
	// The same names again: every filter GET finds what the first run made.
	code, out, stderr = run()
	if code != exitError || !strings.Contains(stderr, "--fail-on-errors:") || !strings.Contains(stderr, "requests failed") || !strings.Contains(out, "create-user") {
		t.Errorf("a run with failures and --fail-on-errors: exit %d, want %d, with the report first\nstdout:\n%s\nstderr:\n%s", code, exitError, out, stderr)
	}
	// So does the ops mode's: with a token the relay refuses, every
	// request fails.
	t.Setenv(benchTokenEnv, "not-a-token")
	code, out, stderr = cli(t, "bench", "--mode", "ops", "--url", p.scimURL+"/scim/v2/acme",
		"--requests", "5", "--rounds", "1", "--concurrency", "2", "--prefix", "cli-bench-ops", "--fail-on-errors")
	if code != exitError || !strings.Contains(stderr, "--fail-on-errors:") || !strings.Contains(stderr, "requests failed (401") {
		t.Errorf("an ops run with failures and --fail-on-errors: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitError, out, stderr)
	}
}

// TestCLIBenchTakesNoSecretOnItsCommandLine: without $SCIMRELAY_BENCH_TOKEN
// the bench is bad usage and says where the token goes; a secret given as
// a flag, as the bench once took them, is refused without being echoed
// and without a request sent; --config outside the scale mode is refused.
func TestCLIBenchTakesNoSecretOnItsCommandLine(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	url := p.scimURL + "/scim/v2/acme"
	small := []string{"--users", "2", "--groups", "0", "--prefix", "argv"}
	t.Setenv(benchTokenEnv, "")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{append([]string{"--url", url}, small...), "no SCIM bearer token: set $SCIMRELAY_BENCH_TOKEN"},
		{append([]string{"--url", url, "--token", acmeToken}, small...), "--token is no longer taken: a secret on the command line is visible in ps and kept in shell history; set $SCIMRELAY_BENCH_TOKEN"},
		{append([]string{"--url", url, "--receiver", "127.0.0.1:0", "--receiver-secret", sinkSecret}, small...), "--receiver-secret is no longer taken: a secret on the command line is visible in ps and kept in shell history; set $SCIMRELAY_RECEIVER_SECRET"},
		{append([]string{"--url", url, "--mode", "scale", "--admin-token", adminSecret}, small...), "--admin-token is no longer taken: a secret on the command line is visible in ps and kept in shell history; the scale mode reads the admin token from relay.yaml (--config)"},
		{append([]string{"--url", url, "--mode", "scale", "--admin-url", p.adminURL}, small...), "--admin-url is no longer taken: the scale mode reads admin_listen from relay.yaml (--config)"},
	} {
		code, stdout, stderr := cli(t, append([]string{"bench"}, tc.args...)...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, "Run 'scimrelay bench --help' for usage.") {
			t.Errorf("%v: exit %d, want %d; stdout %q; stderr %q, want it to say %q", tc.args, code, exitUsage, stdout, stderr, tc.says)
		}
		for _, secret := range []string{acmeToken, sinkSecret, adminSecret} {
			if strings.Contains(stderr, secret) {
				t.Errorf("%v: the error repeats a secret: %s", tc.args, stderr)
			}
		}
	}
	if n := p.scim("acme", acmeToken, "GET", "/Users?count=0", "").want(t, 200).str("totalResults"); n != "0" {
		t.Errorf("the relay holds %s users: a refused bench sent requests", n)
	}

	t.Setenv(benchTokenEnv, acmeToken)
	if code, _, stderr := cli(t, append([]string{"bench", "--url", url, "--config", "relay.yaml"}, small...)...); code != exitUsage || !strings.Contains(stderr, "--config is read by --mode scale only") {
		t.Errorf("--config in the cycle: exit %d, %s", code, stderr)
	}
}

// TestCLIBenchReceiverSecretFromTheEnvironment: the bench's receiver
// verifies a real sink's signatures with $SCIMRELAY_RECEIVER_SECRET, the
// variable scimrelay receive reads.
func TestCLIBenchReceiverSecretFromTheEnvironment(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "bench", "http://"+addr+"/hook", nil)
	p := startRelay(t, cfg, roleAll)
	t.Setenv(benchTokenEnv, acmeToken)
	t.Setenv(receiverSecretEnv, sinkSecret)
	// The bench listens on it. Held until now: the relay's own listeners
	// (port 0) could otherwise be given the port while it starts.
	_ = ln.Close()
	code, out, stderr := cli(t, "bench", "--url", p.scimURL+"/scim/v2/acme", "--users", "10", "--groups", "1", "--members-per-group", "4",
		"--receiver", addr, "--drain-timeout", "30s", "--json", "--fail-on-errors")
	var rep struct {
		Events struct {
			Expected           int  `json:"expected"`
			Received           int  `json:"received"`
			SignatureFailures  int  `json:"signature_failures"`
			SignaturesVerified bool `json:"signatures_verified"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK {
		t.Fatalf("exit %d, %v\n%s\n%s", code, err, out, stderr)
	}
	if e := rep.Events; !e.SignaturesVerified || e.SignatureFailures != 0 || e.Expected == 0 || e.Received != e.Expected {
		t.Errorf("events %+v: want every one received with its signature verified", e)
	}
}

// TestCLIBenchScaleReadsTheRelay: the scale mode reads the relay's heap,
// outbox and data file through the admin client every command uses, from
// the relay.yaml it finds as they do (--config, else ./relay.yaml, which
// may hold no more than admin_listen and the admin token from the
// environment); with none it measures the endpoint alone and says so; a
// relay.yaml whose admin token the relay refuses stops it.
func TestCLIBenchScaleReadsTheRelay(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	t.Setenv(benchTokenEnv, acmeToken)
	t.Setenv(configEnv, "")
	dir := t.TempDir()
	t.Chdir(dir)
	run := func(prefix string, extra ...string) (int, string, string) {
		return cli(t, append([]string{"bench", "--mode", "scale", "--url", p.scimURL + "/scim/v2/acme", "--users", "20", "--groups", "1",
			"--members-per-group", "5", "--requests", "10", "--concurrency", "4", "--drain-timeout", "30s", "--prefix", prefix, "--json"}, extra...)...)
	}
	type scaleJSON struct {
		Outbox *struct {
			Left int64 `json:"left"`
		} `json:"outbox"`
		Relay *struct {
			HeapInuseMax int64 `json:"heap_inuse_max_bytes"`
			FileBytes    int64 `json:"file_bytes"`
			Buckets      []struct {
				Name string `json:"name"`
				Keys int    `json:"keys"`
			} `json:"buckets"`
		} `json:"relay"`
	}
	read := func(name string, code int, out, stderr string) scaleJSON {
		t.Helper()
		var rep scaleJSON
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK {
			t.Fatalf("%s: exit %d, %v\n%s\n%s", name, code, err, out, stderr)
		}
		return rep
	}
	users := 0
	checkRelay := func(name string, rep scaleJSON) {
		t.Helper()
		users += 20 + 10
		if rep.Outbox == nil || rep.Outbox.Left != 0 {
			t.Errorf("%s: outbox %+v, want it waited for and published", name, rep.Outbox)
		}
		r := rep.Relay
		if r == nil || r.HeapInuseMax <= 0 || r.FileBytes <= 0 {
			t.Fatalf("%s: relay %+v", name, r)
		}
		if !slices.ContainsFunc(r.Buckets, func(b struct {
			Name string `json:"name"`
			Keys int    `json:"keys"`
		}) bool {
			return b.Name == "tenants/acme/users" && b.Keys == users
		}) {
			t.Errorf("%s: no bucket tenants/acme/users of %d keys in %+v", name, users, r.Buckets)
		}
	}

	code, out, stderr := run("none")
	if rep := read("no relay.yaml", code, out, stderr); rep.Relay != nil || rep.Outbox != nil || !strings.Contains(stderr, "no relay.yaml") {
		t.Errorf("no relay.yaml: relay %+v, outbox %+v; stderr %q", rep.Relay, rep.Outbox, stderr)
	}
	users += 30

	code, out, stderr = run("flag", "--config", cfg)
	checkRelay("--config", read("--config", code, out, stderr))

	// As for a relay on another machine: its admin_listen, and the admin
	// token from the environment; no data_dir of the relay's.
	t.Setenv("SCIMRELAY_ADMIN_TOKEN", adminSecret)
	text := "admin_listen: " + strings.TrimPrefix(p.adminURL, "http://") + "\nadmin: {token: \"${SCIMRELAY_ADMIN_TOKEN}\"}\n"
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = run("cwd")
	checkRelay("./relay.yaml", read("./relay.yaml", code, out, stderr))

	code, out, stderr = run("refused", "--config", cliConfig(t, p, "not-the-admin-token"))
	if code != exitError || out != "" || !strings.Contains(stderr, "refused the admin token") {
		t.Errorf("a refused admin token: exit %d, want %d\nstdout %q\nstderr %q", code, exitError, out, stderr)
	}
}

// TestCLIReceiveTakesItsSecretFromTheEnvironment: scimrelay receive verifies
// with $SCIMRELAY_RECEIVER_SECRET and prints what it accepted; a delivery
// signed with another secret is refused and not printed; without the
// variable it is bad usage, and --secret (a secret in ps) is refused without
// being echoed.
func TestCLIReceiveTakesItsSecretFromTheEnvironment(t *testing.T) {
	t.Setenv(receiverSecretEnv, "")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"receive", "--listen", "127.0.0.1:0"}, "no secret: set $SCIMRELAY_RECEIVER_SECRET"},
		{[]string{"receive", "--listen", "127.0.0.1:0", "--secret", sinkSecret}, "--secret is no longer taken: a secret on the command line is visible in ps"},
	} {
		code, _, stderr := cli(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.says) || strings.Contains(stderr, sinkSecret) {
			t.Errorf("%v: exit %d, want %d; stderr %q, want it to say %q without the secret", tc.args, code, exitUsage, stderr, tc.says)
		}
	}

	t.Setenv(receiverSecretEnv, sinkSecret)
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &eventstest.Log{}, &eventstest.Log{}
	done := make(chan int, 1)
	go func() { done <- execute(ctx, []string{"receive", "--listen", "127.0.0.1:0"}, out, errOut) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("receive ended with %d: %s", code, errOut.String())
		}
	})
	var base string
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		_, after, ok := strings.Cut(errOut.String(), "receiving webhooks on ")
		if base, _, _ = strings.Cut(after, "\n"); !ok || !strings.HasSuffix(base, "/") {
			return fmt.Errorf("receive has not said where it listens: %q", errOut.String())
		}
		return nil
	})

	post := func(secret, id string) int {
		t.Helper()
		body := `{"specversion":"1.0","id":"` + id + `","source":"/scimrelay/acme","type":"io.scimrelay.user.created","datacontenttype":"application/json","data":{"displayName":"Ann` + "\u009b" + `2J"}}` // raw, as JSON may carry it
		req, err := http.NewRequest("POST", base, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/cloudevents+json")
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		sig, err := wh.Sign(id, now, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("whsec_"+base64.StdEncoding.EncodeToString([]byte("not the sink's secret, 32 bytes!")), "forged-1"); code/100 == 2 {
		t.Errorf("a delivery signed with another secret: %d", code)
	}
	if code := post(sinkSecret, "signed-1"); code/100 != 2 {
		t.Fatalf("a delivery signed with the sink's secret: %d", code)
	}
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), `"signed-1"`) {
			return fmt.Errorf("receive has not printed the signed event: %q", out.String())
		}
		return nil
	})
	if strings.Contains(out.String(), "forged-1") {
		t.Errorf("receive printed the forged event: %s", out.String())
	}
	// What the sender chose reaches the terminal escaped (printableJSON).
	if !strings.Contains(out.String(), `"Ann\u009b2J"`) || strings.ContainsRune(out.String(), '\u009b') {
		t.Errorf("receive printed a C1 control raw: %q", out.String())
	}
}

// TestCLINoAdminTokenHint: without an admin token the CLI says how to give
// it one, and what it says works: SCIMRELAY_ADMIN_TOKEN alone is read only
// through relay.yaml's ${SCIMRELAY_ADMIN_TOKEN}.
func TestCLINoAdminTokenHint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.yaml")
	base := "admin_listen: 127.0.0.1:8081\ndata_dir: " + t.TempDir() + "\n"
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SCIMRELAY_ADMIN_TOKEN", adminSecret)
	_, err := newAdminClient(path)
	const line = `admin: {token: "${SCIMRELAY_ADMIN_TOKEN}"}`
	if err == nil || !strings.Contains(err.Error(), line) {
		t.Fatalf("no admin token: %v; want the hint to give the line %s", err, line)
	}
	if err := os.WriteFile(path, []byte(base+line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := newAdminClient(path)
	if err != nil {
		t.Fatalf("following the hint: %v", err)
	}
	if c.Token != adminSecret {
		t.Fatalf("following the hint, the token is %q, want SCIMRELAY_ADMIN_TOKEN's", c.Token)
	}
	// The shipped relay.yaml reads admin.token from SCIMRELAY_ADMIN_TOKEN
	// already: the hint says to set it, and that works. It said to add the
	// line, and the file so changed was refused ("admin: is set twice").
	shipped, err := os.ReadFile("../../relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(shipped), "data_dir: ./data", "data_dir: "+t.TempDir(), 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SCIMRELAY_ADMIN_TOKEN", "")
	_, err = newAdminClient(path)
	if err == nil || strings.Contains(err.Error(), line) || !strings.Contains(err.Error(), "set SCIMRELAY_ADMIN_TOKEN, which "+path+" reads admin.token from") {
		t.Fatalf("no admin token with the shipped relay.yaml: %v; want only to set SCIMRELAY_ADMIN_TOKEN", err)
	}
	t.Setenv("SCIMRELAY_ADMIN_TOKEN", adminSecret)
	if c, err := newAdminClient(path); err != nil || c.Token != adminSecret {
		t.Fatalf("the shipped relay.yaml with SCIMRELAY_ADMIN_TOKEN set: %v", err)
	}
	// An admin section without a token: the token goes under it (the
	// whole line added made the file invalid, "admin: is set twice"); one
	// whose token reads another variable: that variable.
	const under = `add token: "${SCIMRELAY_ADMIN_TOKEN}" under admin: in `
	for _, section := range []string{"admin:\n  console: true\n", "admin:\n  # token: \"${SCIMRELAY_ADMIN_TOKEN:-}\"\n"} {
		if err := os.WriteFile(path, []byte(base+section), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = newAdminClient(path)
		if err == nil || !strings.Contains(err.Error(), under+path) {
			t.Fatalf("no admin token, an admin section %q: %v; want %q", section, err, under+path)
		}
	}
	if err := os.WriteFile(path, []byte(base+"admin:\n  console: true\n  token: \"${SCIMRELAY_ADMIN_TOKEN}\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := newAdminClient(path); err != nil || c.Token != adminSecret {
		t.Fatalf("following the hint under the admin section: %v", err)
	}
	// A token key there, empty: it is changed, not added (a second
	// token: line made the file invalid, "admin.token: is set twice").
	const change = `change admin.token in `
	for _, empty := range []string{`""`, "", "~", "null"} { // a template's blank value is null
		if err := os.WriteFile(path, []byte(base+"admin:\n  token: "+empty+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err = newAdminClient(path); err == nil || !strings.Contains(err.Error(), change+path+` to "${SCIMRELAY_ADMIN_TOKEN}"`) {
			t.Fatalf("no admin token, admin.token %q: %v; want %q", empty, err, change+path)
		}
	}
	if err := os.WriteFile(path, []byte(base+"admin:\n  token: \"${SCIMRELAY_ADMIN_TOKEN}\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := newAdminClient(path); err != nil || c.Token != adminSecret {
		t.Fatalf("following the hint to change admin.token: %v", err)
	}
	if err := os.WriteFile(path, []byte(base+"admin:\n  token: \"${OPS_ADMIN_TOKEN:-}\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OPS_ADMIN_TOKEN", "")
	if _, err := newAdminClient(path); err == nil || !strings.Contains(err.Error(), "set OPS_ADMIN_TOKEN, which "+path+" reads admin.token from") {
		t.Fatalf("no admin token, admin.token reading OPS_ADMIN_TOKEN: %v", err)
	}
	t.Setenv("OPS_ADMIN_TOKEN", adminSecret)
	if c, err := newAdminClient(path); err != nil || c.Token != adminSecret {
		t.Fatalf("with OPS_ADMIN_TOKEN set: %v", err)
	}
}
