// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// cli runs the scimrelay command line in-process and returns its exit code,
// stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := execute(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// cliOK runs the command line with --config cfg, fails the test unless it
// exits 0, and returns its stdout.
func cliOK(t *testing.T, cfg string, args ...string) string {
	t.Helper()
	code, out, stderr := cli(t, append(args, "--config", cfg)...)
	if code != exitOK {
		t.Fatalf("%s: %d %s %s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

// cliConfig writes the relay.yaml a CLI on the relay's machine would use.
func cliConfig(t *testing.T, p *relayProc, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	text := fmt.Sprintf("admin_listen: %s\nadmin:\n  token: %q\ntenants:\n  - name: acme\n", strings.TrimPrefix(p.adminURL, "http://"), token)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCLITokens(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)

	code, secret, stderr := cli(t, "token", "create", "--tenant", "acme", "--name", "entra", "--config", cfg)
	secret = strings.TrimSpace(secret)
	if code != exitOK || !strings.HasPrefix(secret, relay.TokenPrefix) || strings.Contains(secret, "\n") || !strings.Contains(stderr, "entra") {
		t.Fatalf("token create: code %d, stdout %q, stderr %q", code, secret, stderr)
	}
	p.scim("acme", secret, "GET", "/Users", "").want(t, 200)

	code, out, _ := cli(t, "token", "list", "--tenant", "acme", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "entra") || strings.Contains(out, secret) {
		t.Fatalf("token list: code %d:\n%s", code, out)
	}
	code, out, _ = cli(t, "token", "list", "--json", "--config", cfg)
	var list []relay.Token
	if code != exitOK || !oneObjectPerLine(out) || jsonLines(out, &list) != nil {
		t.Fatalf("token list --json: code %d:\n%s", code, out)
	}
	// Not acme's and globex's relay.yaml tokens (TestTokenInRelayYAML).
	if list = storedOnly(list); len(list) != 1 || list[0].LastUsed.IsZero() {
		t.Fatalf("token list --json: code %d:\n%s", code, out)
	}

	code, fresh, stderr := cli(t, "token", "rotate", "--tenant", "acme", "--overlap", "1h", "--config", cfg)
	if code != exitOK || !strings.Contains(stderr, list[0].ID) {
		t.Fatalf("token rotate: code %d stderr %q", code, stderr)
	}
	p.scim("acme", strings.TrimSpace(fresh), "GET", "/Users", "").want(t, 200)
	p.scim("acme", secret, "GET", "/Users", "").want(t, 200) // inside the overlap
	// Its JSON says which token the rotation replaced, and when.
	code, out, _ = cli(t, "token", "list", "--tenant", "acme", "--json", "--config", cfg)
	var rotated []relay.Token
	if code != exitOK || jsonLines(out, &rotated) != nil {
		t.Fatalf("token list --json after the rotation: code %d:\n%s", code, out)
	}
	for _, tok := range storedOnly(rotated) {
		if replaced := !tok.Replaced.IsZero(); replaced != (tok.ID == list[0].ID) {
			t.Errorf("token %s (%s): replaced %v, want it set on the rotated one alone:\n%s", tok.ID, tok.Name, tok.Replaced, out)
		}
	}

	code, out, _ = cli(t, "token", "revoke", list[0].ID, "--config", cfg)
	if code != exitOK || !strings.Contains(out, "revoked token "+list[0].ID) {
		t.Fatalf("token revoke: %d %s", code, out)
	}
	r := p.scim("acme", secret, "GET", "/Users", "").want(t, 401)
	if !strings.Contains(r.str("detail"), "was revoked") {
		t.Fatalf("revoked token answer: %s", r.raw)
	}
	// Revoked again: it says so, and is not taken for a new revocation.
	code, out, _ = cli(t, "token", "revoke", list[0].ID, "--config", cfg)
	if code != exitOK || !strings.Contains(out, "token "+list[0].ID+" (entra) of tenant acme was revoked already, at ") || strings.Contains(out, "revoked token") {
		t.Fatalf("token revoke again: %d %s", code, out)
	}

	// Mistakes give clear errors and exit codes scripts can trust.
	if code, _, stderr := cli(t, "token", "create", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "tenant") {
		t.Errorf("missing --tenant: code %d, %s", code, stderr)
	}
	if code, _, stderr := cli(t, "token", "create", "--tenant", "initech", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--tenant initech: no such tenant") {
		t.Errorf("unknown tenant: code %d, %s", code, stderr)
	}
	if code, _, stderr := cli(t, "token", "revoke", "tok_nope", "--config", cfg); code != exitError || stderr != "scimrelay: no such token tok_nope\n" {
		t.Errorf("unknown token: code %d, %q", code, stderr)
	}
	if code, _, stderr := cli(t, "token", "list", "--config", cliConfig(t, p, "wrong-admin-token")); code != exitError || !strings.Contains(stderr, "refused the admin token") || !strings.Contains(stderr, "after a change of admin.token, restart it") {
		t.Errorf("wrong admin token: code %d, %s", code, stderr)
	}
	p.stop()
	if code, _, stderr := cli(t, "token", "list", "--config", cfg); code != exitNotReady || !strings.Contains(stderr, "is scimrelay serve running") {
		t.Errorf("relay down: code %d, %s", code, stderr)
	}
}

func TestCLIEventsTailAndBackup(t *testing.T) {
	c := testConfig(t, t.TempDir())
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	uid := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201).str("id")
	p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`).want(t, 201)
	p.scim("acme", acmeToken, "PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`).want(t, 200)
	readStream(t, p.srv.js, 3)
	gid := p.scim("globex", globexToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"ops"}`).want(t, 201).str("id")

	code, out, stderr := cli(t, "events", "tail", "--tenant", "acme", "--since", "1h", "--no-follow", "--config", cfg)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 {
		t.Fatalf("events tail: code %d, %d lines:\n%s\n%s", code, len(lines), out, stderr)
	}
	var e struct {
		Type, Subject, Sequence, Tenant string
		Data                            map[string]any
	}
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil || e.Type != "io.scimrelay.user.deactivated" || e.Tenant != "acme" || e.Sequence != "00000000000000000002" {
		t.Fatalf("second line: %v %+v", err, e)
	}
	code, out, _ = cli(t, "events", "tail", "--tenant", "acme", "--type", "user.deactivated", "--since", "1h", "--no-follow", "--config", cfg)
	if code != exitOK || strings.Count(out, "\n") != 1 {
		t.Fatalf("events tail --type: %d:\n%s", code, out)
	}
	code, out, _ = cli(t, "events", "tail", "--tenant", "acme", "--from-seq", "2", "--no-follow", "--config", cfg)
	if code != exitOK || strings.Count(out, "\n") != 1 || !strings.Contains(out, "deactivated") {
		t.Fatalf("events tail --from-seq: %d:\n%s", code, out)
	}
	// --from-seq 0 is every event of the tenant, as from_seq=0 is to the
	// API (it was taken for the flag left out: none with --no-follow).
	code, out, _ = cli(t, "events", "tail", "--tenant", "acme", "--from-seq", "0", "--no-follow", "--config", cfg)
	if code != exitOK || strings.Count(out, "\n") != 2 {
		t.Fatalf("events tail --from-seq 0: %d:\n%s", code, out)
	}
	if code, _, stderr := cli(t, "events", "tail", "--from-seq", "2", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--tenant") {
		t.Errorf("--from-seq without --tenant: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "events", "tail", "--type", "user.exploded", "--no-follow", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "no such event") {
		t.Errorf("unknown type: %d %s", code, stderr)
	}

	// A backup taken while serving is the data file of a relay with the same
	// users and groups.
	backup := filepath.Join(t.TempDir(), "copy.db")
	if code, out, stderr := cli(t, "backup", "--out", backup, "--config", cfg); code != exitOK || !strings.Contains(out, "wrote") {
		t.Fatalf("backup: %d %s %s", code, out, stderr)
	}
	restored := testConfig(t, t.TempDir())
	if err := os.Rename(backup, restored.DBPath()); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, restored, roleAll)
	if u := r.scim("acme", acmeToken, "GET", "/Users/"+uid, "").want(t, 200); u.str("userName") != "ann" || u.str("active") != "false" {
		t.Fatalf("user in the restored relay: %s", u.raw)
	}
	if g := r.scim("globex", globexToken, "GET", "/Groups/"+gid, "").want(t, 200); g.str("displayName") != "ops" {
		t.Fatalf("group in the restored relay: %s", g.raw)
	}
	if l := r.scim("globex", globexToken, "GET", "/Users", "").want(t, 200); l.str("totalResults") != "1" {
		t.Fatalf("globex users in the restored relay: %s", l.raw)
	}
}

// TestCLIBackupCutShort: a backup that does not arrive whole is refused
// and writes nothing, to a file or to stdout, whether the connection breaks
// before the length the relay announced or a proxy that dropped the length
// ends it cleanly.
func TestCLIBackupCutShort(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	for i := range 50 {
		p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d"}`, i)).want(t, 201)
	}
	for _, c := range []struct {
		name       string
		keepLength bool
		want       string
	}{
		{"the connection breaks", true, "unexpected EOF"},
		{"a proxy ends it cleanly", false, "the copy was cut short"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A proxy in front of the admin listener that passes half the
			// backup on.
			cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.adminURL+r.URL.Path, nil)
				req.Header = r.Header.Clone()
				res, err := http.DefaultTransport.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer res.Body.Close()
				if c.keepLength {
					w.Header().Set("Content-Length", res.Header.Get("Content-Length"))
				}
				w.WriteHeader(res.StatusCode)
				_, _ = io.CopyN(w, res.Body, max(res.ContentLength/2, 4096))
			}))
			defer cut.Close()
			whole := p.adminURL
			p.adminURL = cut.URL
			cfg := cliConfig(t, p, adminSecret)
			p.adminURL = whole
			out := filepath.Join(t.TempDir(), "copy.db")
			code, stdout, stderr := cli(t, "backup", "--out", out, "--config", cfg)
			if code == exitOK || !strings.Contains(stderr, c.want) {
				t.Errorf("backup cut short: exit %d, stdout %q, stderr %q; want a failure saying %q", code, stdout, stderr, c.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a backup cut short left %s: %v", out, err)
			}
			// To stdout, it writes nothing there.
			code, stdout, stderr = cli(t, "backup", "--out", "-", "--config", cfg)
			if code == exitOK || stdout != "" || !strings.Contains(stderr, c.want) {
				t.Errorf("backup to stdout cut short: exit %d, %d bytes on stdout, stderr %q; want a failure saying %q and nothing on stdout", code, len(stdout), stderr, c.want)
			}
		})
	}
}

func TestCLIUsage(t *testing.T) {
	if code, out, _ := cli(t, "version"); code != exitOK || !strings.HasPrefix(out, "scimrelay ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, stderr := cli(t, "frobnicate"); code != exitUsage || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, stderr)
	}
	if code, _, stderr := cli(t, "serve", "--role", "everything", "--config", "../../relay.yaml"); code != exitUsage || !strings.Contains(stderr, "--role") {
		t.Errorf("bad role: %d %q", code, stderr)
	}
	if code, out, _ := cli(t, "check", "--config", "../../relay.yaml"); code != exitOK || !strings.Contains(out, "is valid") {
		t.Errorf("check relay.yaml: %d %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("listen: nope\ntenants:\n  - name: Acme\nsinks:\n  - name: a\n    url: https://x\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    events: [user.exploded]\n"), 0o600)
	code, _, stderr := cli(t, "check", "--config", bad)
	if code != exitError || !strings.Contains(stderr, "listen:") || !strings.Contains(stderr, "tenants[0].name") {
		t.Errorf("check bad.yaml: %d\n%s", code, stderr)
	}
	_ = os.WriteFile(bad, []byte("tenants:\n  - name: acme\nsinks:\n  - name: a\n    url: https://x\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    events: [user.exploded]\n"), 0o600)
	if code, _, stderr := cli(t, "check", "--config", bad); code != exitError || !strings.Contains(stderr, "sinks[0].events[0]") {
		t.Errorf("check unknown event: %d\n%s", code, stderr)
	}
}

// TestCLIRedriveCutShortByAStopFails: a redrive the relay stops under
// (a stop ends its jobs) is a command that failed, exit 1, saying the job
// may not have finished (README: "exits 1 if it fails (NATS went away, the relay
// shut down)"); it exited 3, "cannot reach the relay's admin API", the
// code of a relay never reached (a review of restarts during retries).
func TestCLIRedriveCutShortByAStopFails(t *testing.T) {
	h, gone := goneHook(t)
	reached, release := make(chan struct{}, 16), make(chan struct{})
	receiver := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !gone.Load() {
			reached <- struct{}{}
			select { // the redrive is under way until the relay stops
			case <-release:
			case <-r.Context().Done():
			}
		}
		receiver.ServeHTTP(w, r)
	})
	t.Cleanup(func() { close(release) })
	c := testConfig(t, t.TempDir())
	withSink(c, "crm", h.URL, nil)
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	p.createUsers(t, "u", 2)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := metric(t, p, "scimrelay_sink_dead_letters", "sink", "crm"); n != 2 {
			return fmt.Errorf("%v dead letters", n)
		}
		return nil
	})
	gone.Store(false)
	type result struct {
		code        int
		out, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", cfg)
		done <- result{code, out, stderr}
	}()
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the redrive sent nothing")
	}
	p.stop()
	r := <-done
	if r.code != exitError || !strings.Contains(r.stderr, "may not have finished: the relay stopped answering") {
		t.Errorf("a redrive cut short by a stop: exit %d, want 1 saying it may not have finished: %s %s", r.code, r.out, r.stderr)
	}
}

// TestCLILogAndDeadLetters drives the provisioning log, the dead-letter queue
// and replay from the command line against a running relay.
func TestCLILogAndDeadLetters(t *testing.T) {
	h, gone := goneHook(t)
	c := testConfig(t, t.TempDir())
	withSink(c, "crm", h.URL, nil)
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann@acme.com"}`).want(t, 201)
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ANN@acme.com"}`).want(t, 409)

	// The dead letter appears, and the CLI shows it.
	var dls []sinks.DeadLetter
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		code, out, stderr := cli(t, "dlq", "list", "--sink", "crm", "--json", "--config", cfg)
		if code != exitOK {
			return fmt.Errorf("dlq list: %d %s", code, stderr)
		}
		dls = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var dl sinks.DeadLetter
			if err := json.Unmarshal([]byte(line), &dl); err != nil {
				return fmt.Errorf("dead letters: %v: %s", err, out)
			}
			dls = append(dls, dl)
		}
		if len(dls) != 1 {
			return fmt.Errorf("dead letters: %s", out)
		}
		return nil
	})
	if dls[0].Status != 410 || dls[0].Type != "io.scimrelay.user.created" {
		t.Fatalf("dead letter %+v", dls[0])
	}
	if code, out, _ := cli(t, "dlq", "list", "--sink", "crm", "--config", cfg); code != exitOK || !strings.Contains(out, dls[0].ID) || !strings.Contains(out, "410") {
		t.Fatalf("dlq list table: %d\n%s", code, out)
	}
	if code, _, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", cfg); code != exitError || !strings.Contains(stderr, "failed again") {
		t.Fatalf("redrive while the receiver still refuses: %d %s", code, stderr)
	}
	gone.Store(false)
	if code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--id", dls[0].ID, "--config", cfg); code != exitOK || !strings.Contains(out, "delivered 1") {
		t.Fatalf("redrive: %d %s %s", code, out, stderr)
	}
	if h.distinct() != 1 {
		t.Fatalf("%d events reached the receiver after the redrive", h.distinct())
	}
	if code, _, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--id or --all") {
		t.Fatalf("redrive without --id or --all: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "dlq", "list", "--sink", "nope", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "no such sink") {
		t.Fatalf("unknown sink: %d %s", code, stderr)
	}
	if code, out, _ := cli(t, "sinks", "replay", "--sink", "crm", "--since", "1h", "--config", cfg); code != exitOK || !strings.Contains(out, "replayed 1 events: 1 delivered") {
		t.Fatalf("replay: %d %s", code, out)
	}
	// A replay that dead-letters what fails says so, and exits 1, as a
	// redrive does.
	gone.Store(true)
	if code, out, stderr := cli(t, "sinks", "replay", "--sink", "crm", "--since", "1h", "--config", cfg); code != exitError ||
		!strings.Contains(out, "0 delivered, 1 dead-lettered") || !strings.Contains(stderr, "1 event(s) failed and were dead-lettered") {
		t.Fatalf("replay to a receiver that refuses: %d %s %s", code, out, stderr)
	}
	gone.Store(false)

	// The provisioning log, filtered, as a table and as JSON.
	var entries []relay.LogEntry
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		code, out, stderr := cli(t, "log", "--tenant", "acme", "--since", "1h", "--json", "--config", cfg)
		if code != exitOK {
			return fmt.Errorf("log: %d %s", code, stderr)
		}
		entries = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var e relay.LogEntry
			if json.Unmarshal([]byte(line), &e) == nil {
				entries = append(entries, e)
			}
		}
		if len(entries) != 2 {
			return fmt.Errorf("%d log entries", len(entries))
		}
		return nil
	})
	if e := entries[0]; e.Operation != "create" || e.Status != 201 || e.Name != "ann@acme.com" || len(e.EventIDs) != 1 || e.EventIDs[0] != dls[0].ID {
		t.Fatalf("first entry %+v", e)
	}
	if e := entries[1]; e.Status != 409 || e.ScimType != "uniqueness" {
		t.Fatalf("second entry %+v", e)
	}
	code, out, _ := cli(t, "log", "--status", "4xx", "--user", "ANN@", "--config", cfg)
	if code != exitOK || strings.Count(out, "\n") != 2 || !strings.Contains(out, "uniqueness") {
		t.Fatalf("log --status 4xx: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "log", "--operation", "create", "--until", entries[1].Time.Format(time.RFC3339Nano), "--config", cfg)
	if code != exitOK || strings.Count(out, "\n") != 2 || !strings.Contains(out, "ann@acme.com") || strings.Contains(out, "uniqueness") {
		t.Fatalf("log --operation create --until the second entry: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "log", "--deliveries", "--sink", "crm", "--since", "1h", "--json", "--config", cfg)
	if code != exitOK || !strings.Contains(out, `"outcome":"dead_lettered"`) || !strings.Contains(out, `"outcome":"redriven"`) || !oneObjectPerLine(out) {
		t.Fatalf("log --deliveries: %d\n%s", code, out)
	}
	if code, _, stderr := cli(t, "log", "--status", "teapot", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "status") || !strings.Contains(stderr, "Run 'scimrelay log --help' for usage.") {
		t.Fatalf("bad --status: %d %s", code, stderr)
	}
}

// TestCLIRenamedSinksDeadLetters: a sink renamed by a reload leaves its
// dead letters under its old name; dlq queues shows them, dlq list lists
// them, and dlq redrive --to delivers them to the sink that took its place
// (a redrive to the old name itself is refused, saying why).
func TestCLIRenamedSinksDeadLetters(t *testing.T) {
	h, gone := goneHook(t)
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	tenant := "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n"
	f.write(tenant + "sinks:\n" + sinkYAML("crm", h.URL))
	p := startReloadable(t, f.path, io.Discard)
	cfg := cliConfig(t, p, adminSecret)
	p.createUser(t, "ann")
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if code, out, stderr := cli(t, "dlq", "list", "--sink", "crm", "--json", "--config", cfg); code != exitOK || strings.Count(out, "\n") != 1 {
			return fmt.Errorf("dlq list: %d %s %s", code, out, stderr)
		}
		return nil
	})

	f.write(tenant + "sinks:\n" + sinkYAML("crm2", h.URL))
	if code, out, stderr := cli(t, "reload", "--config", cfg); code != exitOK {
		t.Fatalf("reload: %d %s %s", code, out, stderr)
	}
	code, out, _ := cli(t, "dlq", "queues", "--config", cfg)
	if code != exitOK || !regexp.MustCompile(`(?m)^crm2\s+0\s+yes$`).MatchString(out) || !regexp.MustCompile(`(?m)^crm\s+1\s+no: scimrelay dlq redrive --sink crm --to SINK --all$`).MatchString(out) {
		t.Fatalf("dlq queues after the rename: %d\n%s", code, out)
	}
	if code, out, stderr := cli(t, "dlq", "list", "--sink", "crm", "--config", cfg); code != exitOK || !strings.Contains(out, "410") {
		t.Fatalf("dlq list of the old name: %d %s %s", code, out, stderr)
	}
	// Its delivery attempts too, until sinks forget (the name was refused
	// as no sink); a name that never had one is still bad usage.
	if code, out, stderr := cli(t, "log", "--deliveries", "--sink", "crm", "--since", "1h", "--config", cfg); code != exitOK || !strings.Contains(out, "crm") || !strings.Contains(out, "dead_lettered") {
		t.Fatalf("log --deliveries of the old name: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := cli(t, "log", "--deliveries", "--sink", "crn", "--since", "1h", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--sink crn: no such sink") {
		t.Fatalf("log --deliveries of a misspelt sink: %d %s", code, stderr)
	}
	// The console's sinks page says they are there, and how to deliver them.
	b := newBrowser(t, p)
	b.signIn(adminSecret)
	b.get("/ui/sinks").want(t, http.StatusOK, "Dead letters of sinks no longer configured", `<th scope="row">crm</th>`, "<code>scimrelay dlq redrive --sink crm --to SINK --all</code>")
	gone.Store(false)
	if code, _, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "sink crm is no longer configured: add --to SINK") {
		t.Fatalf("redrive to the old name itself: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--to", "nope", "--all", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--to nope: no such sink (sinks: crm2)") {
		t.Fatalf("redrive to no sink: %d %s", code, stderr)
	}
	if h.distinct() != 0 {
		t.Fatalf("%d events reached the receiver before the redrive", h.distinct())
	}
	if code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--to", "crm2", "--all", "--config", cfg); code != exitOK || !strings.Contains(out, "delivered 1, still failing 0") {
		t.Fatalf("redrive --to crm2: %d %s %s", code, out, stderr)
	}
	if h.distinct() != 1 {
		t.Fatalf("%d events reached the receiver after the redrive, want 1", h.distinct())
	}
	if code, _, stderr := cli(t, "dlq", "list", "--sink", "crm", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--sink crm: no such sink, nor dead letters under that name (queues: crm2)") {
		t.Fatalf("dlq list of the old name once empty: %d %s", code, stderr)
	}
	if body := b.get("/ui/sinks").want(t, http.StatusOK).body; strings.Contains(body, "no longer configured") {
		t.Fatalf("the sinks page still lists the old name's queue, now empty:\n%s", body)
	}
}

// TestCLIDeadLetterPages: dlq list reads the queue a page at a time and
// says how to go on after --limit; a redrive job that fails makes the
// command exit 1 with the job's error.
func TestCLIDeadLetterPages(t *testing.T) {
	h := newHook(t)
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	c := testConfig(t, t.TempDir())
	withSink(c, "crm", h.URL, nil)
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	for _, name := range []string{"ann", "bob", "cy"} {
		p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`).want(t, 201)
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if code, out, _ := cli(t, "dlq", "list", "--sink", "crm", "--json", "--config", cfg); code != exitOK || strings.Count(out, "\n") != 3 {
			return fmt.Errorf("dlq list: %d\n%s", code, out)
		}
		return nil
	})
	code, out, stderr := cli(t, "dlq", "list", "--sink", "crm", "--json", "--limit", "2", "--config", cfg)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	after, found := strings.CutPrefix(strings.TrimSpace(stderr), "more dead letters follow: add --after ")
	if code != exitOK || len(lines) != 2 || !found {
		t.Fatalf("dlq list --limit 2: %d\n%s\n%s", code, out, stderr)
	}
	code, out, _ = cli(t, "dlq", "list", "--sink", "crm", "--json", "--after", after, "--config", cfg)
	lines = append(lines, strings.Split(strings.TrimSpace(out), "\n")...)
	ids := map[string]bool{}
	for _, l := range lines {
		var dl sinks.DeadLetter
		if err := json.Unmarshal([]byte(l), &dl); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		ids[dl.ID] = true
	}
	if code != exitOK || len(ids) != 3 {
		t.Fatalf("the two pages hold %d dead letters: %v", len(ids), lines)
	}
	if code, out, _ := cli(t, "dlq", "list", "--sink", "crm", "--config", cfg); code != exitOK || strings.Count(out, "\n") != 4 || !strings.HasPrefix(out, "EVENT ID") {
		t.Fatalf("dlq list table: %d\n%s", code, out)
	}
	code, _, stderr = cli(t, "dlq", "redrive", "--sink", "crm", "--id", "0198f3c2-6a7e-7b1c-9d2e-3f4a5b6c7d8e", "--config", cfg)
	if code != exitError || !strings.Contains(stderr, "failed: sink crm has no dead letter with event id 0198f3c2-6a7e-7b1c-9d2e-3f4a5b6c7d8e") {
		t.Fatalf("redrive of an unknown id: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "sinks", "replay", "--sink", "erp", "--since", "1h", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--sink erp: no such sink") {
		t.Fatalf("replay of an unknown sink: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "dlq", "list", "--sink", "crm", "--after", "x", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "not a cursor") {
		t.Fatalf("a bad --after: %d %s", code, stderr)
	}
}

// TestCLIReadsOnlyItsKeys: a command other than serve and check needs only
// the variables of the keys it uses to be set.
func TestCLIReadsOnlyItsKeys(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	write := func(text string) string {
		path := filepath.Join(t.TempDir(), "relay.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	admin := strings.TrimPrefix(p.adminURL, "http://")
	secrets := "tenants:\n  - name: acme\nsinks:\n  - name: crm\n    url: https://crm.example.com/h\n    secret: ${SCIMRELAY_TEST_UNSET_SECRET}\n"
	cfg := write(fmt.Sprintf("admin_listen: %s\nadmin:\n  token: %q\n%s", admin, adminSecret, secrets))
	if code, _, stderr := cli(t, "token", "list", "--config", cfg); code != exitOK {
		t.Fatalf("token list with a sink secret unset: %d %s", code, stderr)
	}
	cfg = write(fmt.Sprintf("admin_listen: %s\nadmin:\n  token: ${SCIMRELAY_TEST_UNSET_TOKEN}\n%s", admin, secrets))
	if code, _, stderr := cli(t, "healthcheck", "--config", cfg); code != exitOK {
		t.Fatalf("healthcheck with the admin token unset: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "token", "list", "--config", cfg); code != exitError || !strings.Contains(stderr, "admin.token: ${SCIMRELAY_TEST_UNSET_TOKEN} is not set") {
		t.Fatalf("token list with the admin token unset: %d %s", code, stderr)
	}
}

// oneObjectPerLine reports whether out is JSON objects, one per line, as
// every --json prints.
func oneObjectPerLine(out string) bool {
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v map[string]any
		if json.Unmarshal([]byte(line), &v) != nil {
			return false
		}
	}
	return true
}

// jsonLines decodes the JSON objects of out, one per line, into list.
func jsonLines[T any](out string, list *[]T) error {
	*list = nil
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v T
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			return err
		}
		*list = append(*list, v)
	}
	return nil
}

// TestCLISinksList: sinks list shows each sink's backlog (parked resources
// and the age of the oldest undelivered event included: while a receiver
// is down its events wait parked, not pending), dead letters and latest
// attempt as the relay counts them (without a status, why it failed), names on stderr a sink with dead
// letters and the command that lists them, and prints one JSON object per
// sink with --json.
func TestCLISinksList(t *testing.T) {
	crm := newHook(t)
	gone, _ := goneHook(t)
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case held <- struct{}{}:
		default:
		}
		<-release
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(slow.Close)
	defer close(release) // before the relay stops, which waits for its deliveries
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", crm.URL, nil)
	withSink(cfg, "gone", gone.URL, nil)
	// Held past the test, not timed out and parked (parked events count
	// neither as pending nor in flight).
	withSink(cfg, "slow", slow.URL+"/hook", func(s *config.Sink) { s.Timeout = config.Duration(5 * time.Minute) })
	// Down for the whole test: ann's and bob's events are parked for an hour.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	withSink(cfg, "down", down.URL+"/hook", func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(time.Hour)} })
	// Nothing listens there: its attempts have no status, and say why.
	nowhere := httptest.NewServer(http.NotFoundHandler())
	nowhere.Close()
	withSink(cfg, "nowhere", nowhere.URL+"/hook", func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(time.Hour)} })
	// Nor there, and it tries once more only: its dead letters say why.
	withSink(cfg, "unreachable", nowhere.URL+"/hook", func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(time.Millisecond)} })
	p := startRelay(t, cfg, roleAll)
	cfgPath := cliConfig(t, p, adminSecret)
	before := time.Now()
	p.createUser(t, "ann")
	waitDelivered(t, crm, 1)
	<-held
	p.createUser(t, "bob")
	waitDelivered(t, crm, 2)

	var list []sinks.Status
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		code, out, stderr := cli(t, "sinks", "list", "--json", "--config", cfgPath)
		if code != exitOK || !oneObjectPerLine(out) {
			return fmt.Errorf("sinks list --json: %d %q %s", code, out, stderr)
		}
		list = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var s sinks.Status
			if err := json.Unmarshal([]byte(line), &s); err != nil {
				return err
			}
			list = append(list, s)
		}
		if len(list) != 6 || list[1].DeadLetters != 2 || list[2].InFlight+int(list[2].Pending) != 2 || list[3].Parked != 2 || list[4].Parked != 2 || list[5].DeadLetters != 2 {
			return fmt.Errorf("sinks list --json:\n%s", out)
		}
		// The receiver has an event a moment before the worker has its
		// answer, records the attempt and acknowledges it: until then crm
		// shows it in flight, and its attempt may not be read yet.
		if s := list[0]; s.Name != "crm" || s.LastAttempt == nil || s.LastAttempt.Outcome != "delivered" || s.DeadLetters != 0 || s.Attempts5m != 2 || s.OldestUndelivered != nil || s.InFlight+int(s.Pending) != 0 {
			return fmt.Errorf("crm: %+v", s)
		}
		return nil
	})
	// The down sink's events are neither pending nor in flight, but their
	// age shows: ann's user.created, stored after before.
	if s := list[3]; s.Name != "down" || s.Pending != 0 || s.InFlight != 0 || s.OldestUndelivered == nil ||
		s.OldestUndelivered.Before(before.Add(-time.Second)) || s.OldestUndelivered.After(time.Now()) {
		t.Fatalf("down: %+v", s)
	}
	if a := list[4].LastAttempt; a == nil || a.Outcome != "retry" || a.Status != 0 || a.ErrorClass != "connection refused" || !strings.Contains(a.Error, "connection refused") {
		t.Fatalf("nowhere's last attempt: %+v", a)
	}
	// The attempts' table says it where the status would be.
	if code, out, stderr := cli(t, "log", "--deliveries", "--sink", "nowhere", "--since", "1h", "--config", cfgPath); code != exitOK ||
		!regexp.MustCompile(`(?m)^\S+ \S+\s+nowhere\s+\S+\s+\S*user\.created\s+Users/\S+\s+retry\s+connection refused\s+1\s`).MatchString(out) {
		t.Fatalf("log --deliveries --sink nowhere: %d %s %s", code, out, stderr)
	}

	code, out, stderr := cli(t, "sinks", "list", "--config", cfgPath)
	if code != exitOK {
		t.Fatalf("sinks list: %d %s %s", code, out, stderr)
	}
	for _, row := range []string{
		`(?m)^SINK\s+URL\s+FORMAT\s+PENDING\s+IN FLIGHT\s+PARKED\s+OLDEST\s+DEAD LETTERS\s+ATTEMPTS 5M/1H\s+LAST ATTEMPT$`,
		`(?m)^crm\s+http://127\.0\.0\.1:\d+\s+binary\s+0\s+0\s+0\s+-\s+0\s+2/2\s+delivered 20\d at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`,
		`(?m)^gone\s+\S+\s+binary\s+0\s+0\s+0\s+-\s+2\s+2/2\s+dead_lettered 410 at `,
		`(?m)^slow\s+\S+\s+binary\s+[01]\s+[12]\s+0\s+\d+s\s+0\s+0/0\s+none yet$`,
		`(?m)^down\s+\S+\s+binary\s+0\s+0\s+2\s+\d+s\s+0\s+2/2\s+retry 503 at `,
		`(?m)^nowhere\s+\S+\s+binary\s+0\s+0\s+2\s+\d+s\s+0\s+2/2\s+retry \(connection refused\) at `,
	} {
		if !regexp.MustCompile(row).MatchString(out) {
			t.Fatalf("sinks list: no line matching %s in\n%s", row, out)
		}
	}
	if want := "sink gone has 2 dead letters: scimrelay dlq list --sink gone\nsink unreachable has 2 dead letters: scimrelay dlq list --sink unreachable\n"; stderr != want {
		t.Fatalf("sinks list stderr %q, want %q", stderr, want)
	}
	// A dead letter without a status says why in its place.
	if code, out, stderr := cli(t, "dlq", "list", "--sink", "unreachable", "--config", cfgPath); code != exitOK ||
		len(regexp.MustCompile(`(?m)^\S+\s+\S*user\.created\s+Users/\S+\s+acme\s+connection refused\s+2\s`).FindAllString(out, -1)) != 2 {
		t.Fatalf("dlq list --sink unreachable: %d %s %s", code, out, stderr)
	}

	empty := cliConfig(t, startRelay(t, testConfig(t, t.TempDir()), roleAll), adminSecret)
	if code, out, stderr := cli(t, "sinks", "list", "--config", empty); code != exitOK || out != "" || stderr != "relay.yaml declares no sink\n" {
		t.Fatalf("sinks list without sinks: %d %q %q", code, out, stderr)
	}
}

// TestCLICredentialTimesAreLocal: token create and rotate say expiries in
// the machine's zone, as token list and every other command show times
// (they said them in UTC: on a machine at +09:00, create said
// 2027-01-03T16:21:40Z where list showed 2027-01-04 01:21).
func TestCLICredentialTimesAreLocal(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	bin := binary(t)
	// In Tokyo, and with Go's own zone database should the machine have none.
	tokyo := []string{"TZ=Asia/Tokyo", "ZONEINFO=" + filepath.Join(runtime.GOROOT(), "lib", "time", "zoneinfo.zip")}
	run := func(args ...string) string {
		t.Helper()
		c := runProcess(t, bin, append(args, "--config", cfg), tokyo...)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("scimrelay %s did not exit", args)
		}
		if c.err != nil {
			t.Fatalf("scimrelay %s: %v\n%s", args, c.err, c.stderr.String())
		}
		return c.stderr.String()
	}
	for _, said := range []string{
		run("token", "create", "--tenant", "acme", "--name", "entra", "--expires", "30d"),
		run("token", "rotate", "--tenant", "acme", "--overlap", "1h"),
	} {
		if !regexp.MustCompile(`expires (at )?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00`).MatchString(said) {
			t.Errorf("an expiry not in the machine's zone (+09:00):\n%s", said)
		}
	}
}

// TestCLIRedriveNamesTheSinkThatLeftDeadLetters: a redrive of a sink's own
// queue leaves the dead letters of what the sink no longer takes (a reload
// narrowed its tenants), and says which sink does not take them (without
// --to, it named none: "sink  does not take").
func TestCLIRedriveNamesTheSinkThatLeftDeadLetters(t *testing.T) {
	h, gone := goneHook(t)
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write(twoTenants + "sinks:\n" + sinkYAML("crm", h.URL))
	p := startReloadable(t, f.path, io.Discard)
	cfg := cliConfig(t, p, adminSecret)
	p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if _, out, _ := cli(t, "dlq", "list", "--sink", "crm", "--json", "--config", cfg); strings.Count(out, "\n") != 1 {
			return fmt.Errorf("dead letters:\n%s", out)
		}
		return nil
	})
	gone.Store(false)
	f.write(twoTenants + "sinks:\n" + sinkYAML("crm", h.URL) + "    tenants: [acme]\n")
	if code, out, stderr := cli(t, "reload", "--config", cfg); code != exitOK {
		t.Fatalf("reload: %d %s %s", code, out, stderr)
	}
	code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "left 1 in the queue: sink crm does not take their tenant or event type") {
		t.Fatalf("redrive: %d\n%s\n%s", code, out, stderr)
	}
}

// TestCLISendsTheAdminTokenToAdminListenOnly: the CLI connects to
// admin_listen itself, never through $HTTP_PROXY (a company shell, a CI
// runner), which would be handed the admin token in clear text. Before,
// over plain HTTP the CLI used http.DefaultClient, which sends a request
// for any admin_listen that is not loopback to the proxy. The binary, not
// execute: net/http reads the proxy variables once per process.
func TestCLISendsTheAdminTokenToAdminListenOnly(t *testing.T) {
	bin := binary(t)
	var mu sync.Mutex
	var got []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.String()+" Authorization: "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer proxy.Close()
	const token = "admin-token-0123456789abcdef"
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	// A name, as admin_listen may give; .invalid never resolves, so a
	// direct request fails at once.
	text := "admin_listen: relay-admin.invalid:8081\nadmin:\n  token: \"" + token + "\"\ntenants:\n  - name: acme\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"token", "list"}, {"healthcheck"}} {
		cmd := exec.Command(bin, append(args, "--config", cfg)...)
		cmd.Env = append(os.Environ(), "HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "NO_PROXY=", "no_proxy=")
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 3 {
			t.Errorf("%v with admin_listen unreachable: exit %d, want 3 (nothing answers): %s", args, code, out)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, g := range got {
		t.Errorf("the proxy of $HTTP_PROXY received %s", g)
	}
}

// TestCLIWaitsAsLongAsTheRelayWorks: `scimrelay reload` and `keys rotate`
// wait for the relay's answer longer than the relay may work on them
// (maxReload, two minutes: a worker waiting for its front end's bucket;
// admin.RotationTime). With the default minute, a worker's reload before
// its front end's had the CLI give up after a minute and say the relay
// could not be reached (exit 3) while the relay was still at it, and the
// 500 with what it applied, which README says reload prints, never shown.
func TestCLIWaitsAsLongAsTheRelayWorks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte("admin_listen: 127.0.0.1:1\nadmin:\n  token: "+adminSecret+"\ntenants:\n  - name: acme\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		cmd   *cobra.Command
		make  func(*cobra.Command) (*adminclient.Client, error)
		bound time.Duration
	}{
		{"reload", newReloadCommand(), reloadClient, maxReload},
		{"keys rotate", newKeysRotateCommand(), keysRotateClient, admin.RotationTime},
	} {
		if err := c.cmd.Flags().Set("config", path); err != nil {
			t.Fatal(err)
		}
		client, err := c.make(c.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if client.Timeout <= c.bound {
			t.Errorf("%s waits %s for the relay, which may work on it %s", c.name, client.Timeout, c.bound)
		}
	}
}

// TestRedriveToSaysWhereItsFailuresAre: a redrive --to of a renamed
// sink's queue puts the dead letters that fail again in the --to sink's
// queue; past the 100 it names, it says "and N more (scimrelay dlq list
// --sink SINK)": following that lists them. It named the old sink, whose
// queue is empty (a review of the advice the relay gives).
func TestRedriveToSaysWhereItsFailuresAre(t *testing.T) {
	h, _ := goneHook(t) // the receiver answers 410 throughout
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	tenant := "limits:\n  rate: 0\ntenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n"
	f.write(tenant + "sinks:\n" + sinkYAML("crm", h.URL))
	p := startReloadable(t, f.path, io.Discard)
	cfg := cliConfig(t, p, adminSecret)
	const n = 103
	p.createUsers(t, "u", n)
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if _, out, stderr := cli(t, "dlq", "list", "--sink", "crm", "--json", "--config", cfg); strings.Count(out, "\n") != n {
			return fmt.Errorf("dead letters: %d, want %d %s", strings.Count(out, "\n"), n, stderr)
		}
		return nil
	})
	f.write(tenant + "sinks:\n" + sinkYAML("crm2", h.URL))
	if code, out, stderr := cli(t, "reload", "--config", cfg); code != exitOK {
		t.Fatalf("reload: %d %s %s", code, out, stderr)
	}
	code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--to", "crm2", "--all", "--config", cfg)
	i := strings.Index(stderr, "and 3 more (")
	if code != 1 || i < 0 {
		t.Fatalf("redrive --to: exit %d, want 1 and \"and 3 more (...)\"", code)
	}
	advice := stderr[i+len("and 3 more ("):]
	advice = advice[:strings.Index(advice, ")")]
	args := strings.Fields(strings.TrimPrefix(advice, "scimrelay "))
	// Follow the advice literally.
	code, out, stderr = cli(t, append(args, "--json", "--config", cfg)...)
	if code != exitOK || strings.Count(out, "\n") != n {
		t.Errorf("followed %q: exit %d, %d dead letters listed, want %d (they are all in crm2's queue): %s", advice, code, strings.Count(out, "\n"), n, stderr)
	}
	if _, out, _ := cli(t, "dlq", "list", "--sink", "crm2", "--json", "--config", cfg); strings.Count(out, "\n") != n {
		t.Errorf("crm2's queue has %d dead letters, want %d", strings.Count(out, "\n"), n)
	}
}
