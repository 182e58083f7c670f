// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// linesOf decodes what a --json command printed, one T a line.
func linesOf[T any](t *testing.T, out string) []T {
	t.Helper()
	var list []T
	if out == "" {
		return list
	}
	if err := jsonLines(out, &list); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	return list
}

// TestCLILogPrintsEveryPage: log and log --deliveries print everything
// that matches, more than the relay answers in one page (1,000), the
// newest entries included; --limit stops early and says on stderr how to
// go on, and --after goes on from there. A delivery that succeeded at
// once is attempt 1 in --json.
func TestCLILogPrintsEveryPage(t *testing.T) {
	h := newHook(t)
	c := testConfig(t, t.TempDir())
	withSink(c, "crm", h.URL, nil)
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	const users = logPageSize + 1
	// A page of them eight at a time (one after another, a page of
	// fsync'd creates took up to 97 s on a loaded machine), then the
	// newest alone, after them.
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				body := fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d"}`, i)
				req, _ := http.NewRequest(http.MethodPost, p.scimURL+"/scim/v2/acme/Users", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+acmeToken)
				req.Header.Set("Content-Type", "application/scim+json")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("creating u%d: %v", i, err)
					continue
				}
				res.Body.Close()
				if res.StatusCode != http.StatusCreated {
					t.Errorf("creating u%d: %d, want 201", i, res.StatusCode)
				}
			}
		})
	}
	for i := range users - 1 {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	p.createUser(t, fmt.Sprintf("u%d", users-1))

	var attempts []sinks.Attempt
	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		code, out, stderr := cli(t, "log", "--deliveries", "--json", "--config", cfg)
		if code != exitOK {
			return fmt.Errorf("log --deliveries: %d %s", code, stderr)
		}
		if attempts = linesOf[sinks.Attempt](t, out); len(attempts) != users {
			return fmt.Errorf("log --deliveries printed %d attempts, want %d", len(attempts), users)
		}
		return nil
	})
	ids := map[string]bool{}
	for _, a := range attempts {
		if a.Outcome != "delivered" || a.Attempt != 1 || ids[a.EventID] {
			t.Fatalf("attempt %+v: want one delivered at its first try per event", a)
		}
		ids[a.EventID] = true
	}
	if code, out, _ := cli(t, "log", "--deliveries", "--json", "--config", cfg); !strings.Contains(out, `"attempt":1`) || code != exitOK {
		t.Fatalf("log --deliveries --json does not say which attempt: %s", out)
	}

	code, out, stderr := cli(t, "log", "--json", "--config", cfg)
	if code != exitOK {
		t.Fatalf("log: %d %s", code, stderr)
	}
	entries := linesOf[relay.LogEntry](t, out)
	if len(entries) != users || entries[users-1].Name != fmt.Sprintf("u%d", users-1) {
		t.Fatalf("log printed %d entries, want %d ending with the newest, u%d", len(entries), users, users-1)
	}
	code, out, _ = cli(t, "log", "--config", cfg)
	if code != exitOK || strings.Count(out, "\n") != users+1 || strings.Count(out, "TENANT") != 1 {
		t.Fatalf("log as a table: %d, %d lines, want a header and %d", code, strings.Count(out, "\n"), users)
	}

	// --limit, then --after from where it stopped.
	code, out, stderr = cli(t, "log", "--json", "--limit", "10", "--config", cfg)
	if got := linesOf[relay.LogEntry](t, out); code != exitOK || len(got) != 10 || stderr != "more entries follow: add --after "+got[9].Key+"\n" {
		t.Fatalf("log --limit 10: %d, %d entries, stderr %q", code, len(got), stderr)
	}
	code, out, stderr = cli(t, "log", "--json", "--after", entries[9].Key, "--limit", "5", "--config", cfg)
	if got := linesOf[relay.LogEntry](t, out); code != exitOK || len(got) != 5 || got[0].Key != entries[10].Key || !strings.Contains(stderr, "--after "+entries[14].Key) {
		t.Fatalf("log --after the 10th: %d, %d entries, stderr %q", code, len(got), stderr)
	}
	// With --since, which --after refuses beside it, the advice says to
	// put --after in its place, and a relative --until is given as the
	// time it named: "add --after" was refused when followed (found by
	// the review of the relay's advice).
	code, out, stderr = cli(t, "log", "--json", "--since", "1h", "--until", "0s", "--limit", "10", "--config", cfg)
	advice := regexp.MustCompile(`^more entries follow: run it again with --after (\S+) in place of --since 1h and --until (\S+) in place of --until 0s\n$`).FindStringSubmatch(stderr)
	if got := linesOf[relay.LogEntry](t, out); code != exitOK || len(got) != 10 || advice == nil || advice[1] != got[9].Key {
		t.Fatalf("log --since 1h --until 0s --limit 10: %d, %d entries, stderr %q", code, len(got), stderr)
	}
	code, out, stderr = cli(t, "log", "--json", "--after", advice[1], "--until", advice[2], "--limit", "10", "--config", cfg)
	if got := linesOf[relay.LogEntry](t, out); code != exitOK || len(got) != 10 || got[0].Key != entries[10].Key {
		t.Fatalf("the advice followed: %d, %d entries, stderr %q", code, len(got), stderr)
	}
	code, out, stderr = cli(t, "log", "--deliveries", "--json", "--limit", "10", "--config", cfg)
	seq := fmt.Sprint(attempts[9].Seq)
	if got := linesOf[sinks.Attempt](t, out); code != exitOK || len(got) != 10 || stderr != "more delivery attempts follow: add --after "+seq+"\n" {
		t.Fatalf("log --deliveries --limit 10: %d, %d attempts, stderr %q", code, len(got), stderr)
	}
	code, out, stderr = cli(t, "log", "--deliveries", "--json", "--after", seq, "--config", cfg)
	if got := linesOf[sinks.Attempt](t, out); code != exitOK || len(got) != users-10 || got[0].EventID != attempts[10].EventID || stderr != "" {
		t.Fatalf("log --deliveries --after the 10th: %d, %d attempts, stderr %q", code, len(got), stderr)
	}
	// All of them, exactly: nothing more follows.
	if code, _, stderr = cli(t, "log", "--json", "--limit", fmt.Sprint(users), "--config", cfg); code != exitOK || stderr != "" {
		t.Fatalf("log --limit as many as there are: %d, stderr %q", code, stderr)
	}
}

// TestCLILogDeliveriesFilters: log --deliveries applies --tenant, --status,
// --until and --follow to the attempts, and refuses --user and
// --operation, which attempts cannot answer; log without --deliveries
// refuses --sink. None is ignored.
func TestCLILogDeliveriesFilters(t *testing.T) {
	h := newHook(t)
	receiver := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("ce-tenant") == "globex" {
			w.WriteHeader(http.StatusGone) // for good: dead-lettered
			return
		}
		receiver.ServeHTTP(w, r)
	})
	c := testConfig(t, t.TempDir())
	withSink(c, "crm", h.URL, nil)
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)

	deliveries := func(want int, args ...string) []sinks.Attempt {
		t.Helper()
		var list []sinks.Attempt
		eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			code, out, stderr := cli(t, append([]string{"log", "--deliveries", "--json", "--config", cfg}, args...)...)
			if code != exitOK {
				return fmt.Errorf("log --deliveries %v: %d %s", args, code, stderr)
			}
			if list = linesOf[sinks.Attempt](t, out); len(list) != want {
				return fmt.Errorf("log --deliveries %v: %d attempts, want %d: %s", args, len(list), want, out)
			}
			return nil
		})
		return list
	}
	ann := p.createUser(t, "ann")
	deliveries(1)
	between := time.Now()
	bob := p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`).want(t, 201).str("id")
	all := deliveries(2)
	if all[0].Subject != "Users/"+ann || all[0].Outcome != "delivered" || all[1].Subject != "Users/"+bob || all[1].Outcome != "dead_lettered" || all[1].Status != 410 {
		t.Fatalf("attempts %+v: want ann's delivered, then bob's dead-lettered with 410", all)
	}

	for _, tc := range []struct {
		args []string
		want string // the subject of the one attempt printed
	}{
		{[]string{"--tenant", "globex"}, "Users/" + bob},
		{[]string{"--tenant", "acme"}, "Users/" + ann},
		{[]string{"--status", "4xx"}, "Users/" + bob},
		{[]string{"--status", "204"}, "Users/" + ann},
		{[]string{"--until", between.Format(time.RFC3339Nano)}, "Users/" + ann},
		{[]string{"--since", "1h", "--sink", "crm", "--tenant", "acme", "--status", "2xx"}, "Users/" + ann},
	} {
		if got := deliveries(1, tc.args...); got[0].Subject != tc.want {
			t.Errorf("log --deliveries %v printed %s, want %s", tc.args, got[0].Subject, tc.want)
		}
	}

	f := followCLI(t, "log", "--deliveries", "--follow", "--json", "--tenant", "acme", "--config", cfg)
	f.waitFor(t, `"subject":"Users/`+ann+`"`)
	carl := p.createUser(t, "carl")
	f.waitFor(t, `"subject":"Users/`+carl+`"`)
	if strings.Contains(f.stdout.String(), bob) {
		t.Errorf("log --deliveries --follow --tenant acme printed globex's attempt: %s", f.stdout.String())
	}

	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--deliveries", "--user", "ann"}, "--user does not apply to --deliveries"},
		{[]string{"--deliveries", "--operation", "create"}, "--operation does not apply to --deliveries"},
		{[]string{"--sink", "crm"}, "--sink applies to --deliveries only"},
		{[]string{"--deliveries", "--status", "teapot"}, "status: want 2xx"},
		{[]string{"--deliveries", "--after", "soon"}, "after: want the seq"},
		{[]string{"--limit", "5", "--follow"}, "--limit and --follow exclude each other"},
		{[]string{"--since", "1h", "--after", "1"}, "--since and --after exclude each other"},
	} {
		code, stdout, stderr := cli(t, append(append([]string{"log"}, tc.args...), "--config", cfg)...)
		if code != exitUsage || !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, "Run 'scimrelay log --help' for usage.") || stdout != "" {
			t.Errorf("log %v: exit %d, stdout %q, stderr %q; want %d (bad usage) saying %q", tc.args, code, stdout, stderr, exitUsage, tc.says)
		}
	}
}

// TestLogTableShowsControlCharactersEscaped: text a SCIM client chose
// reaches scimrelay log's table, here the id in a request's path from a
// client with no credential, or a wrong one (the provisioning log keeps
// refusals), and the 404 detail that repeats it to the tenant's own
// client. The table writes its control characters as escapes: raw, ESC ]
// 0 ; ... BEL set the operator's terminal title and ESC [ 2 J cleared it.
func TestLogTableShowsControlCharactersEscaped(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	const evil = "%1B%5D0%3Bpwned%07%1B%5B2J"
	for _, auth := range []string{"", "Bearer scimrelay_wrong_0123456789abcdef", "Bearer " + acmeToken} {
		req, err := http.NewRequest(http.MethodGet, p.scimURL+"/scim/v2/acme/Users/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = "/scim/v2/acme/Users/" + evil
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		do(t, req)
	}
	var out string
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, out, _ = cli(t, "log", "--config", cfg)
		if n := strings.Count(out, `User/\x1b]0;pwned\a\x1b[2J`); n != 3 {
			return fmt.Errorf("%d of the 3 requests shown with the id escaped:\n%s", n, out)
		}
		return nil
	})
	if strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `User \x1b]0;pwned\a\x1b[2J not found`) {
		t.Fatalf("scimrelay log:\n%q", out)
	}
}

// TestCLIJSONIsPrintable: what the CLI prints as JSON carries no rune a
// terminal acts on, from the SCIM listener (a path's id, before its
// credential is checked) or from the identity provider (a user's name in
// an event), and decodes to the same values.
func TestCLIJSONIsPrintable(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	const csi = "\u009b2J\u202e\x7f"
	req, err := http.NewRequest(http.MethodGet, p.scimURL+"/scim/v2/acme/Users/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = "/scim/v2/acme/Users/" + url.PathEscape(csi)
	do(t, req)
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann","displayName":"Ann\u009b2J\u202e\u007f"}`).want(t, 201)
	readStream(t, p.srv.js, 1)

	check := func(what, out, want string) {
		t.Helper()
		if i := strings.IndexFunc(out, unprintableInJSON); i >= 0 {
			t.Fatalf("%s: raw %U in\n%s", what, []rune(out[i:])[0], out)
		}
		var found bool
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var v any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatalf("%s: %v: %s", what, err, line)
			}
			b, _ := json.Marshal(v)
			found = found || strings.Contains(string(b), want)
		}
		if !found {
			t.Fatalf("%s: %q not in what it decodes to:\n%s", what, want, out)
		}
	}
	var out string
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, out, _ = cli(t, "log", "--json", "--config", cfg)
		if strings.Count(out, "\n") < 2 {
			return fmt.Errorf("log --json: %s", out)
		}
		return nil
	})
	check("log --json", out, "Users/"+csi)
	code, out, stderr := cli(t, "events", "tail", "--tenant", "acme", "--since", "1h", "--no-follow", "--config", cfg)
	if code != exitOK {
		t.Fatalf("events tail: %d %s", code, stderr)
	}
	check("events tail", out, "Ann"+csi)
}
