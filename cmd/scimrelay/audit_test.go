// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestSubscriberActionsAreAudited: adding a subscriber with the CLI,
// giving it a new key (add --replace) and removing it are each one Info
// line "admin action" naming the subscriber and its public key, via api,
// with the CLI's address and a request id. An add refused (the name is
// there, without --replace) and the removal of a name not there are no
// action. The seeds the CLI wrote, its credentials, are never in the
// relay's log.
func TestSubscriberActionsAreAudited(t *testing.T) {
	logs := &eventstest.Log{}
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.Listen = fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.NewTextHandler(logs, nil)), io.Discard)
	cliCfg := cliConfig(t, p, adminSecret)
	dir := t.TempDir()
	// add writes the seed to out and returns it with its public key.
	add := func(out string, args ...string) (seed, pub string) {
		t.Helper()
		args = append([]string{"subscriber", "add", "billing", "--out", out, "--config", cliCfg}, args...)
		if code, stdout, stderr := cli(t, args...); code != exitOK {
			t.Fatalf("%s: %d %s %s", strings.Join(args, " "), code, stdout, stderr)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		seed = strings.TrimSpace(string(b))
		kp, err := nkeys.FromSeed([]byte(seed))
		if err != nil {
			t.Fatal(err)
		}
		if pub, err = kp.PublicKey(); err != nil {
			t.Fatal(err)
		}
		return seed, pub
	}
	seed1, pub1 := add(filepath.Join(dir, "billing.nk"), "--subjects", "scimrelay.acme.user.>")
	if code, _, stderr := cli(t, "subscriber", "add", "billing", "--out", filepath.Join(dir, "refused.nk"), "--config", cliCfg); code != exitError || !strings.Contains(stderr, "--replace") {
		t.Fatalf("adding billing again without --replace: %d %s", code, stderr)
	}
	seed2, pub2 := add(filepath.Join(dir, "billing-2.nk"), "--replace")
	if code, out, stderr := cli(t, "subscriber", "remove", "billing", "--config", cliCfg); code != exitOK {
		t.Fatalf("subscriber remove: %d %s %s", code, out, stderr)
	}
	if code, _, _ := cli(t, "subscriber", "remove", "billing", "--config", cliCfg); code == exitOK {
		t.Fatal("removing billing again succeeded")
	}

	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `msg="admin action"`) {
			lines = append(lines, l)
		}
	}
	const tail = ` via=api client=127\.0\.0\.1 request_id=[0-9a-f]{16}$`
	want := []*regexp.Regexp{
		regexp.MustCompile(`level=INFO msg="admin action" component=admin action=subscriber\.add subscriber=billing public_key=` + pub1 + ` subjects=scimrelay\.acme\.user\.> replaced=false` + tail),
		regexp.MustCompile(`level=INFO msg="admin action" component=admin action=subscriber\.add subscriber=billing public_key=` + pub2 + ` subjects=scimrelay\.acme\.user\.> replaced=true` + tail),
		regexp.MustCompile(`level=INFO msg="admin action" component=admin action=subscriber\.remove subscriber=billing public_key=` + pub2 + tail),
	}
	if len(lines) != len(want) {
		t.Fatalf("%d admin action lines, want %d (a refused add, and removing one not there, are no action):\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if !w.MatchString(lines[i]) {
			t.Errorf("line %d:\n%s\nwant it to match\n%s", i, lines[i], w)
		}
	}
	for _, seed := range []string{seed1, seed2} {
		if strings.Contains(logs.String(), seed) {
			t.Fatalf("the relay's log holds a subscriber's seed:\n%s", logs.String())
		}
	}
}

// TestConsoleActionsAreAudited: a token issued from the console's tenant
// page is one Info line "admin action" via console, naming the browser's
// address as the client (the console calls the admin API in-process) and
// the console request's id, and never holding the secret. The browser
// connects from 127.0.0.2, so that its address is not the relay's own.
func TestConsoleActionsAreAudited(t *testing.T) {
	logs := &eventstest.Log{}
	p := startRelayWith(t, testConfig(t, t.TempDir()), roleAll, slog.New(slog.NewTextHandler(logs, nil)), io.Discard)
	b := newBrowser(t, p)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	tr := &http.Transport{DialContext: dialer.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	b.client.Transport = tr
	b.signIn(adminSecret).redirect(t, "/ui/")

	b.get("/ui/tenants/acme").want(t, http.StatusOK, "Generate token")
	res := b.post("/ui/tenants/acme/tokens", url.Values{"name": {"entra"}, "days": {"30"}})
	issued := res.redirect(t, "/ui/secrets/")
	shown := b.get(strings.TrimPrefix(issued, p.adminURL)).want(t, http.StatusOK, "Secret Token")
	secret := regexp.MustCompile(`value="(scimrelay_[^"]+)"`).FindStringSubmatch(shown.body)
	if secret == nil {
		t.Fatalf("no secret on its page:\n%s", shown.body)
	}

	id := res.header.Get("X-Request-Id")
	if id == "" {
		t.Fatal("the console's answer has no X-Request-Id")
	}
	line := regexp.MustCompile(`level=INFO msg="admin action" component=admin action=token\.issue tenant=acme id=tok_\S+ name=entra via=console client=127\.0\.0\.2 request_id=` + regexp.QuoteMeta(id) + `\n`)
	if n := strings.Count(logs.String(), `msg="admin action"`); n != 1 || !line.MatchString(logs.String()) {
		t.Errorf("%d admin action lines; want one matching\n%s\nthe log:\n%s", n, line, logs.String())
	}
	if strings.Contains(logs.String(), secret[1]) {
		t.Fatalf("the log holds the token's secret:\n%s", logs.String())
	}
}
