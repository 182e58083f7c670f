// SPDX-License-Identifier: Apache-2.0

package main

// The README's Console section, promise by promise, where console_test.go
// left one unproven: the cookies' flags by name, an attacker's planted,
// guessed or borrowed session, admin.session_idle itself, the overall
// sign-in budget, what the overview, the log and the sink pages show, and
// that nothing is fetched from elsewhere.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// cookieNamed returns the cookie an answer sets under name, or nil.
func cookieNamed(h http.Header, name string) *http.Cookie {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestConsoleCookieFlags: each console cookie, the session's and the
// sign-in form's, is HttpOnly, SameSite=Strict, limited to the console's
// path, and Secure exactly when the browser came over TLS: on the listener
// itself or through a proxy saying X-Forwarded-Proto: https.
func TestConsoleCookieFlags(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	h, err := p.srv.adminListenerHandler()
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv := httptest.NewTLSServer(h)
	t.Cleanup(tlsSrv.Close)

	plain := newBrowser(t, p)
	proxied := newBrowser(t, p)
	proxied.header.Set("X-Forwarded-Proto", "https")
	overTLS := newBrowser(t, p)
	overTLS.base = tlsSrv.URL
	overTLS.client.Transport = tlsSrv.Client().Transport

	for _, c := range []struct {
		name   string
		b      *browser
		secure bool
	}{{"plain HTTP", plain, false}, {"behind a TLS proxy", proxied, true}, {"over TLS", overTLS, true}} {
		check := func(what string, ck *http.Cookie, path string) {
			t.Helper()
			if ck == nil {
				t.Fatalf("%s: no %s cookie", c.name, what)
			}
			if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != path || ck.Secure != c.secure {
				t.Errorf("%s: %s cookie %q: HttpOnly %v, SameSite %v, Path %q, Secure %v; want HttpOnly, Strict, %s, Secure %v",
					c.name, what, ck.Name, ck.HttpOnly, ck.SameSite, ck.Path, ck.Secure, path, c.secure)
			}
		}
		form := c.b.get("/ui/login").want(t, http.StatusOK)
		check("sign-in form", cookieNamed(form.header, "scimrelay_console_login"), "/ui/login")
		in := c.b.post("/ui/login", url.Values{"token": {adminSecret}})
		in.redirect(t, "/ui/")
		check("session", cookieNamed(in.header, "scimrelay_console"), "/ui/")
		c.b.get("/ui/").want(t, http.StatusOK, "Health")
	}
}

// TestConsoleSessionAttacks: an attacker cannot choose the victim's session
// (a cookie planted before sign-in is replaced, and is worth nothing), guess
// one, act with a guessed one, or read another session's new secret by its
// address.
func TestConsoleSessionAttacks(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	adminUI, _ := url.Parse(p.adminURL + "/ui/")

	// Session fixation: the victim's browser holds an id the attacker chose.
	const planted = "attacker-chosen-session-id-0123456789abcdefghijklmnop"
	// (Planted after the sign-in form is fetched: a redirect to sign in
	// clears the cookie, which an attacker can plant again.)
	victim := newBrowser(t, p)
	victim.get("/ui/login").want(t, http.StatusOK)
	victim.client.Jar.SetCookies(adminUI, []*http.Cookie{{Name: "scimrelay_console", Value: planted, Path: "/ui/"}})
	in := victim.post("/ui/login", url.Values{"token": {adminSecret}})
	in.redirect(t, "/ui/")
	issued := cookieNamed(in.header, "scimrelay_console")
	if issued == nil || issued.Value == planted || len(issued.Value) < 32 {
		t.Fatalf("sign-in kept or did not replace the planted session id: %+v", issued)
	}
	victim.get("/ui/").want(t, http.StatusOK)
	attacker := newBrowser(t, p)
	attacker.client.Jar.SetCookies(adminUI, []*http.Cookie{{Name: "scimrelay_console", Value: planted, Path: "/ui/"}})
	attacker.get("/ui/").redirect(t, "/ui/login")

	// Guessed ids, including near misses of the real one, reach nothing;
	// and a form sent with one does nothing, even with the victim's form
	// token.
	victim.get("/ui/tenants/acme").want(t, http.StatusOK)
	for _, guess := range []string{"", "0", "admin", adminSecret, issued.Value[:len(issued.Value)-1], issued.Value + "A", strings.ToUpper(issued.Value)} {
		g := newBrowser(t, p)
		g.client.Jar.SetCookies(adminUI, []*http.Cookie{{Name: "scimrelay_console", Value: guess, Path: "/ui/"}})
		g.get("/ui/").redirect(t, "/ui/login")
		g.get("/ui/tenants/acme").redirect(t, "/ui/login")
		g.post("/ui/tenants/acme/tokens", url.Values{"days": {"90"}, "csrf": {victim.csrf}}).redirect(t, "/ui/login")
	}
	if list, err := p.srv.store.Tokens().List(context.Background(), "acme"); err != nil || len(storedOnly(list)) != 0 {
		t.Fatalf("a form sent with a guessed session created tokens: %+v %v", list, err)
	}

	// A new secret's address is worth nothing to another session, and
	// trying it does not spend the owner's one display.
	shownAt := strings.TrimPrefix(victim.post("/ui/tenants/acme/tokens", url.Values{"name": {"entra"}, "days": {"30"}}).redirect(t, "/ui/secrets/"), p.adminURL)
	other := newBrowser(t, p)
	other.signIn(adminSecret).redirect(t, "/ui/")
	if res := other.get(shownAt).want(t, http.StatusGone); strings.Contains(res.body, "scimrelay_") && regexp.MustCompile(`value="scimrelay_[^"]+"`).MatchString(res.body) {
		t.Fatalf("another session was shown the secret:\n%s", res.body)
	}
	victim.get(shownAt).want(t, http.StatusOK, "Secret Token")

	// A session cookie another service on the host (cookies ignore ports)
	// plants for a deeper path is sent first (RFC 6265 §5.4): it reaches
	// nothing, and the victim's own session still opens the pages under
	// it. Before, the first cookie alone was read: the tenant pages sent
	// the victim to sign in, whose clearing of the cookie dropped the real
	// one, and no sign-in replaced the planted one.
	tenantsUI, _ := url.Parse(p.adminURL + "/ui/tenants/")
	victim.client.Jar.SetCookies(tenantsUI, []*http.Cookie{{Name: "scimrelay_console", Value: planted, Path: "/ui/tenants/"}})
	victim.get("/ui/tenants/acme").want(t, http.StatusOK)
	victim.get("/ui/").want(t, http.StatusOK)
}

// rawTail reads a console event stream line by line, comments (the
// keep-alives) included.
type rawTail struct {
	lines chan string
}

func openRawTail(t *testing.T, b *browser, path string) *rawTail {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", b.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	client := *b.client
	client.Timeout = 0
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); res.Body.Close() })
	if res.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", res.StatusCode)
	}
	rt := &rawTail{lines: make(chan string, 64)}
	go func() {
		defer close(rt.lines)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if line := sc.Text(); line != "" {
				rt.lines <- line
			}
		}
	}()
	return rt
}

// next returns the stream's next line that is an event's name or a
// keep-alive comment.
func (rt *rawTail) next(t *testing.T) string {
	t.Helper()
	for {
		select {
		case line, ok := <-rt.lines:
			if !ok {
				t.Fatal("the stream ended")
			}
			if strings.HasPrefix(line, "event: ") || strings.HasPrefix(line, ":") {
				return line
			}
		case <-time.After(30 * time.Second):
			t.Fatal("nothing on the stream within 30s")
		}
	}
}

// TestConsoleSessionIdleSetting: admin.session_idle is the idle timeout
// (here 10 minutes, not the default 30), and a live tail kept open across
// it does not keep the session alive: the stream's own checks are not
// activity.
func TestConsoleSessionIdleSetting(t *testing.T) {
	clock := newTestClock()
	_, b := consoleRelay(t, func(c *config.Config) { c.Admin.SessionIdle = config.Duration(10 * time.Minute) }, withClock(clock.now))
	clock.add(9 * time.Minute)
	b.get("/ui/").want(t, http.StatusOK)
	clock.add(11 * time.Minute)
	b.get("/ui/").redirect(t, "/ui/login")

	b.signIn(adminSecret).redirect(t, "/ui/")
	tail := openRawTail(t, b, "/ui/events/stream") // the last request
	if got := tail.next(t); got != "event: ready" {
		t.Fatalf("the stream begins with %q", got)
	}
	// 6 minutes on, the stream checks the session (and must not count as
	// a use of it); 6 more, 12 minutes after the last request, it ends.
	clock.add(6 * time.Minute)
	if got := tail.next(t); got != ": keep-alive" {
		t.Fatalf("after 6 idle minutes the stream says %q, want a keep-alive", got)
	}
	clock.add(6 * time.Minute)
	if got := tail.next(t); got != "event: signed-out" {
		t.Fatalf("12 minutes after the last request, with session_idle 10m, the stream says %q: watching kept the session alive", got)
	}
	b.get("/ui/").redirect(t, "/ui/login")
}

// TestConsoleSignInGeneratedToken: with no admin.token in relay.yaml, the
// token the relay wrote to data_dir/admin.token signs in.
func TestConsoleSignInGeneratedToken(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Admin.Token = ""
	p := startRelay(t, cfg, roleAll)
	raw, err := os.ReadFile(cfg.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, p)
	b.signIn(adminSecret).want(t, http.StatusUnauthorized, "not the admin token")
	b.signIn(strings.TrimSpace(string(raw))).redirect(t, "/ui/")
	b.get("/ui/").want(t, http.StatusOK, "Health")
}

// TestConsoleRateLimitOverall: wrong admin tokens from many addresses
// share one budget (a burst of 30, then one a second) with the admin
// API's, checked before the token is: once it is spent, a sign-in from a
// fresh address is refused even with the right token, while one from
// loopback (the relay's own machine) still gets in. The requests go to
// the admin listener's handler in-process, each from an address of its
// own.
func TestConsoleRateLimitOverall(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	h, err := p.srv.adminListenerHandler()
	if err != nil {
		t.Fatal(err)
	}
	signIn := func(addr, token string) *httptest.ResponseRecorder {
		get := httptest.NewRequest("GET", "/ui/login", nil)
		get.RemoteAddr = addr
		form := httptest.NewRecorder()
		h.ServeHTTP(form, get)
		ck := cookieNamed(form.Header(), "scimrelay_console_login")
		m := csrfField.FindStringSubmatch(form.Body.String())
		if ck == nil || m == nil {
			t.Fatalf("the sign-in form from %s: %d %v", addr, form.Code, form.Header())
		}
		post := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"token": {token}, "csrf": {html.UnescapeString(m[1])}}.Encode()))
		post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		post.AddCookie(ck)
		post.RemoteAddr = addr
		res := httptest.NewRecorder()
		h.ServeHTTP(res, post)
		return res
	}
	fresh := func(i int) string { return fmt.Sprintf("10.1.%d.%d:40000", i/250, i%250+1) }
	start := time.Now()
	wrong := 0
	for i := range 200 {
		res := signIn(fresh(i), "guess-0123456789abcdef")
		if res.Code == http.StatusUnauthorized {
			wrong++
			continue
		}
		if res.Code != http.StatusTooManyRequests || res.Header().Get("Retry-After") == "" || !strings.Contains(res.Body.String(), "too many sign-in attempts") {
			t.Fatalf("wrong token %d: %d %v, want 401 or 429 with Retry-After and a reason", i, res.Code, res.Header())
		}
		// The budget refills at one a second while the attempts run.
		if most := 30 + int(time.Since(start).Seconds()) + 1; wrong > most {
			t.Fatalf("%d wrong tokens from fresh addresses before the first refusal, want at most %d", wrong, most)
		}
		if wrong < 30 {
			t.Fatalf("refused after %d wrong tokens, want a burst of 30 first", wrong)
		}
		if res := signIn(fresh(1000), adminSecret); res.Code != http.StatusTooManyRequests {
			t.Fatalf("the right token from a fresh address once the budget is spent: %d, want 429", res.Code)
		}
		if res := signIn("127.0.0.1:40000", adminSecret); res.Code != http.StatusSeeOther {
			t.Fatalf("the right token from loopback once the budget is spent: %d %s, want a session", res.Code, res.Body)
		}
		return
	}
	t.Fatalf("200 wrong tokens from fresh addresses in %s and none refused: no overall limit", time.Since(start))
}

// TestConsoleOverviewShows: the overview has the readiness checks, each
// tenant's SCIM requests and 4xx of the last hour, the outbox, the data
// file's size and free pages, each sink's
// last delivery, and the tokens and OAuth clients expiring within 14 days
// (not those expiring later).
func TestConsoleOverviewShows(t *testing.T) {
	hook := newFlakyHook(t)
	p, b := consoleRelay(t, func(c *config.Config) { withSink(c, "crm", hook.URL, nil) })
	ctx, now := context.Background(), time.Now()
	for _, c := range []struct {
		kind, name string
		in         time.Duration
	}{{"token", "soon-token", 10 * 24 * time.Hour}, {"client", "soon-client", 13 * 24 * time.Hour}, {"token", "later-token", 20 * 24 * time.Hour}} {
		creds := p.srv.store.Tokens()
		if c.kind == "client" {
			creds = p.srv.store.Clients()
		}
		if _, _, err := creds.Create(ctx, "acme", c.name, now.Add(c.in)); err != nil {
			t.Fatal(err)
		}
	}
	user := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`
	p.scim("acme", acmeToken, "POST", "/Users", user).want(t, 201)
	p.scim("acme", acmeToken, "POST", "/Users", user).want(t, 409)

	acmeRow := regexp.MustCompile(`(?s)<th scope="row"><a href="/ui/tenants/acme">acme</a></th>\s*<td>(\d+)</td>\s*<td>(.*?)</td>`)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		res := b.get("/ui/").want(t, http.StatusOK, "every readiness check passes", "<strong>store</strong>", "<strong>nats</strong>")
		m := acmeRow.FindStringSubmatch(res.body)
		if m == nil || m[1] != "2" || !strings.Contains(m[2], `status=4xx&amp;since=1h" class="warn">1<`) {
			return fmt.Errorf("acme's requests of the last hour: %q", m)
		}
		if !strings.Contains(res.body, "Outbox: empty") {
			return fmt.Errorf("the outbox is not shown empty")
		}
		if file, free, err := p.srv.store.FileSpace(); err != nil || !strings.Contains(res.body, fmt.Sprintf("Data file: %.1f MiB, %.1f MiB of it free pages", float64(file)/(1<<20), float64(free)/(1<<20))) {
			return fmt.Errorf("the data file's size and free pages are not shown (%v)", err)
		}
		if !regexp.MustCompile(`(?s)<a href="/ui/sinks/crm">crm</a></th>.*?delivered</span> 204`).MatchString(res.body) {
			return fmt.Errorf("sink crm's last delivery is not shown")
		}
		return nil
	})
	res := b.get("/ui/")
	expiring := res.body[strings.Index(res.body, `id="expiring"`):]
	for _, want := range []string{"soon-token", "soon-client"} {
		if !strings.Contains(expiring, want) {
			t.Errorf("%s expires within 14 days and is not listed:\n%s", want, expiring)
		}
	}
	if strings.Contains(expiring, "later-token") {
		t.Errorf("a token expiring in 20 days is listed as expiring within 14")
	}
}

// TestConsoleOverviewDoesNotAskToRotateAHandedOverToken: the overview's
// "Rotate these before they expire" lists what the daily warning and the
// expiry metric name (relay.DueForRotation), not the token a rotation
// just replaced that the identity provider has not used since: rotating
// that again cut the token just put into Entra to the overlap. It listed
// every live credential expiring within 14 days (found by the console
// review).
func TestConsoleOverviewDoesNotAskToRotateAHandedOverToken(t *testing.T) {
	p, b := consoleRelay(t, nil)
	secret := generateInConsole(t, p, b, "entra", 5)
	p.scim("acme", secret, "GET", "/Users", "").want(t, 200)
	list, _ := p.srv.store.Tokens().List(context.Background(), "acme")
	old := storedOnly(list)[0]
	if sec := expiringSection.FindString(b.get("/ui/").want(t, http.StatusOK).body); !strings.Contains(sec, old.ID) {
		t.Fatalf("a token Entra uses, expiring in 5 days, is not listed to rotate:\n%s", sec)
	}

	// Rotated in the console, as the overview asks; the new one goes into Entra.
	b.get("/ui/tenants/acme").want(t, http.StatusOK)
	rotated := b.post("/ui/tenants/acme/tokens/rotate", url.Values{"name": {"next"}, "days": {"90"}, "overlap": {"24"}}).redirect(t, "/ui/secrets/")
	b.get(strings.TrimPrefix(rotated, p.adminURL)).want(t, http.StatusOK, old.ID)
	if sec := expiringSection.FindString(b.get("/ui/").want(t, http.StatusOK).body); strings.Contains(sec, old.ID) {
		t.Errorf("right after a rotation, the overview asks to rotate the token it replaced, %s, unused since:\n%s", old.ID, sec)
	}

	// Used since, Entra still holds it: listed again.
	p.scim("acme", secret, "GET", "/Users", "").want(t, 200)
	if sec := expiringSection.FindString(b.get("/ui/").want(t, http.StatusOK).body); !strings.Contains(sec, old.ID) {
		t.Errorf("the replaced token, used after the rotation, is not listed to rotate:\n%s", sec)
	}
}

// TestConsoleOverviewAsksNotToRotateARemovedTenantsToken: a tenant removed
// from relay.yaml (not yet purged) keeps its stored tokens; the overview
// asked to rotate one expiring within 14 days, linked to a tenant page
// that answers 404, while the rotation is refused (the tenant is not
// configured). The daily warning and the metric leave it out: it opens
// nothing.
func TestConsoleOverviewAsksNotToRotateARemovedTenantsToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.yaml")
	dataDir := t.TempDir()
	write := func(tenants string) {
		text := fmt.Sprintf("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  listen: \"\"\nlimits:\n  rate: 0\ntenants:\n%s", dataDir, adminSecret, tenants)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("  - name: acme\n    tokens: [" + acmeToken + "]\n  - name: globex\n    tokens: [" + globexToken + "]\n")
	p := startReloadable(t, path, io.Discard)
	b := newBrowser(t, p)
	b.signIn(adminSecret).redirect(t, "/ui/")
	b.get("/ui/tenants/globex").want(t, http.StatusOK)
	b.post("/ui/tenants/globex/tokens", url.Values{"name": {"entra"}, "days": {"5"}}).redirect(t, "/ui/secrets/")
	if sec := expiringSection.FindString(b.get("/ui/").want(t, http.StatusOK).body); !strings.Contains(sec, `href="/ui/tenants/globex"`) {
		t.Fatalf("globex's token expiring in 5 days is not listed to rotate:\n%s", sec)
	}
	write("  - name: acme\n    tokens: [" + acmeToken + "]\n")
	reloadNow(t, p)
	if sec := expiringSection.FindString(b.get("/ui/").want(t, http.StatusOK).body); strings.Contains(sec, `href="/ui/tenants/globex"`) {
		t.Errorf("the overview asks to rotate a token of globex, a tenant relay.yaml no longer has (its page answers %d):\n%s", b.get("/ui/tenants/globex").status, sec)
	}
}

// expiringSection is the overview's "Expiring within 14 days" section.
var expiringSection = regexp.MustCompile(`(?s)<section aria-labelledby="expiring">.*?</section>`)

// TestConsoleOverviewShowsExpiredCredentials: a token that expired with no
// live one generated since in its tenant is on the overview as expired,
// while the identity provider using it is refused, until a new one is
// generated; "Expiring within 14 days" leaves it out (it is past rotating)
// and the overview said nothing of it, where the expiry metric goes on
// naming it (the console review's note).
func TestConsoleOverviewShowsExpiredCredentials(t *testing.T) {
	clock := newTestClock()
	p, b := consoleRelay(t, nil, withClock(clock.now))
	secret := generateInConsole(t, p, b, "entra", 1)
	p.scim("acme", secret, "GET", "/Users", "").want(t, 200)
	list, err := p.srv.store.Tokens().List(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	id := storedOnly(list)[0].ID
	if sec := expiredSection.FindString(b.get("/ui/").want(t, http.StatusOK).body); sec != "" {
		t.Fatalf("a live token is shown expired:\n%s", sec)
	}

	clock.add(25 * time.Hour)
	p.scim("acme", secret, "GET", "/Users", "").want(t, 401)
	b.signIn(adminSecret).redirect(t, "/ui/") // the session's idle time is over too
	body := b.get("/ui/").want(t, http.StatusOK).body
	if sec := expiredSection.FindString(body); !strings.Contains(sec, id) || !strings.Contains(sec, `href="/ui/tenants/acme"`) {
		t.Fatalf("the expired token %s is not on the overview:\n%s", id, sec)
	}
	if strings.Contains(expiringSection.FindString(body), id) {
		t.Errorf("the expired token is listed as expiring within 14 days")
	}

	generateInConsole(t, p, b, "entra-2", 90)
	if sec := expiredSection.FindString(b.get("/ui/").want(t, http.StatusOK).body); sec != "" {
		t.Errorf("a new token was generated, and the overview still shows the expired one:\n%s", sec)
	}
}

// generateInConsole generates a token of acme's on its console page,
// expiring in days, and returns the secret the console shows once.
func generateInConsole(t *testing.T, p *relayProc, b *browser, name string, days int) string {
	t.Helper()
	b.get("/ui/tenants/acme").want(t, http.StatusOK)
	issued := b.post("/ui/tenants/acme/tokens", url.Values{"name": {name}, "days": {strconv.Itoa(days)}}).redirect(t, "/ui/secrets/")
	shown := b.get(strings.TrimPrefix(issued, p.adminURL)).want(t, http.StatusOK, "Secret Token")
	return regexp.MustCompile(`value="(scimrelay_[^"]+)"`).FindStringSubmatch(shown.body)[1]
}

// expiredSection is the overview's "Expired" section (only there when one is).
var expiredSection = regexp.MustCompile(`(?s)<section aria-labelledby="expired">.*?</section>`)

// TestConsoleLogSearch: the provisioning log is newest first and searched
// by tenant, a group's displayName, userName and time; the live tail keeps
// to its tenant.
func TestConsoleLogSearch(t *testing.T) {
	p, b := consoleRelay(t, nil)
	tail := openTail(t, b, "/ui/events/stream?tenant=globex")
	defer tail.close()
	user := func(tenant, token, userName string) {
		p.scim(tenant, token, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q}`, userName)).want(t, 201)
	}
	user("acme", acmeToken, "ann.first")
	p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Finance Team"}`).want(t, 201)
	user("globex", globexToken, "carl.third")
	if line := tail.next(t, "cloudevent"); !strings.Contains(line, "carl.third") {
		t.Fatalf("the tail of tenant globex gave another tenant's event first: %s", line)
	}

	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		body := b.get("/ui/log?operation=create").body
		i, j, k := strings.Index(body, "ann.first"), strings.Index(body, "Finance Team"), strings.Index(body, "carl.third")
		if i < 0 || j < 0 || k < 0 {
			return fmt.Errorf("not every create is in the log yet")
		}
		if !(k < j && j < i) {
			return fmt.Errorf("the log is not newest first: carl at %d, the group at %d, ann at %d", k, j, i)
		}
		return nil
	})
	only := func(query string, want string) {
		t.Helper()
		body := b.get("/ui/log?"+query).want(t, http.StatusOK).body
		for _, name := range []string{"ann.first", "Finance Team", "carl.third"} {
			if got := strings.Contains(body, name); got != (name == want) {
				t.Errorf("log?%s: %s shown %v", query, name, got)
			}
		}
	}
	only("tenant=globex", "carl.third")
	only("user="+url.QueryEscape("finance team"), "Finance Team")
	only("operation=create&tenant=acme&user=ANN.f", "ann.first")
	only("operation=create&until="+url.QueryEscape(time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04")), "")
}

// TestConsoleIsolatesBidiText: a userName with a right-to-left override
// (SCIM takes it: names are the identity provider's) is shown in <bdi>,
// the override as its code point, in the log, on the request's page (its
// resource, what changed, a refusal's detail) and in its
// CloudEvent, where it is the JSON escape; no page carries the override
// itself, which would show another name.
func TestConsoleIsolatesBidiText(t *testing.T) {
	p, b := consoleRelay(t, nil)
	const spoof = "admin\u202egnp.moc@acme.com"
	const shown = `admin<span class="bidi-control" title="a bidirectional control character, shown instead of applied">U+202E</span>gnp.moc@acme.com`
	user := fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q,"emails":[{"value":%q,"type":"work","primary":true}]}`, spoof, spoof)
	uid := p.scim("acme", acmeToken, "POST", "/Users", user).want(t, 201).str("id")
	p.scim("acme", acmeToken, "POST", "/Users", user).want(t, 409)
	p.scim("acme", acmeToken, "PATCH", "/Users/"+uid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"displayName","value":%q}]}`, spoof)).want(t, 200)

	var list string
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		list = b.get("/ui/log?tenant=acme").want(t, http.StatusOK).body
		if n := strings.Count(list, `href="/ui/log/`); n != 3 {
			return fmt.Errorf("%d entries in the log, want 3", n)
		}
		return nil
	})
	if n := strings.Count(list, "<td><bdi>"+shown+`</bdi> <span class="muted"><bdi>`+shown+"</bdi></span></td>"); n != 3 {
		t.Errorf("the log shows the name and email isolated %d times, want each request's", n)
	}
	if !strings.Contains(list, `<td><code>uniqueness</code> <bdi>userName &#34;admin\u202egnp.moc@acme.com&#34; is already taken</bdi></td>`) {
		t.Errorf("the refused create's detail is not isolated:\n%s", list)
	}
	pages := map[string]string{"log": list}
	for _, m := range regexp.MustCompile(`href="/ui/log/([0-9a-f]{32})"`).FindAllStringSubmatch(list, -1) {
		pages[m[1]] = b.get("/ui/log/"+m[1]).want(t, http.StatusOK).body
	}
	var resource, changed, event bool
	for name, body := range pages {
		if strings.ContainsRune(body, '\u202e') {
			t.Errorf("page %s holds the override itself", name)
		}
		resource = resource || strings.Contains(body, "<bdi>"+shown+"</bdi> <bdi>"+shown+"</bdi></dd>")
		changed = changed || strings.Contains(body, "<td><code><bdi>&#34;"+shown+"&#34;</bdi></code></td>")
		event = event || strings.Contains(body, `&#34;userName&#34;: &#34;admin\u202egnp.moc@acme.com&#34;`)
	}
	if !resource || !changed || !event {
		t.Errorf("isolated on a request's page: resource %v, what changed %v, the CloudEvent escaped %v", resource, changed, event)
	}
}

// TestConsoleIsolatesAnEarlierRequestID: an entry written before the
// relay made every request id its own may hold a client's, with a bidi
// control character in it. Its page shows the id isolated in its heading
// and its facts, and in its <title>, where markup cannot go, with the
// character as its code point.
func TestConsoleIsolatesAnEarlierRequestID(t *testing.T) {
	p, b := consoleRelay(t, nil)
	p.srv.reqLog.Record(relay.LogEntry{Time: time.Now(), RequestID: "okta-\u202e1-gpj.exe", Tenant: "acme", Method: "POST",
		Path: "/scim/v2/acme/Users", Operation: "create", Resource: "User", Status: 201})
	var key []string
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if key = regexp.MustCompile(`href="/ui/log/([0-9a-f]{32})"`).FindStringSubmatch(b.get("/ui/log?tenant=acme").body); key == nil {
			return fmt.Errorf("the entry is not in the log")
		}
		return nil
	})
	body := b.get("/ui/log/"+key[1]).want(t, http.StatusOK,
		`<h1>Request <bdi>okta-<span class="bidi-control" title="a bidirectional control character, shown instead of applied">U+202E</span>1-gpj.exe</bdi></h1>`,
		`<dt>Request id</dt><dd><code><bdi>okta-<span class="bidi-control" title="a bidirectional control character, shown instead of applied">U+202E</span>1-gpj.exe</bdi></code></dd>`).body
	if title := regexp.MustCompile(`<title>(.*)</title>`).FindStringSubmatch(body); title == nil || html.UnescapeString(title[1]) != "Request okta-U+202E1-gpj.exe · scimrelay" {
		t.Errorf("the page's title is %q, want the override shown as U+202E", title)
	}
	if strings.ContainsRune(body, '\u202e') {
		t.Errorf("the entry's page holds the override itself:\n%s", body)
	}
}

// TestConsoleSinkPage: a sink's pages show its URL without its password or
// query values, its event and tenant filters, its format and its delivery
// attempts of the last 5 minutes and hour.
func TestConsoleSinkPage(t *testing.T) {
	hook := newFlakyHook(t)
	u, _ := url.Parse(hook.URL)
	u.User = url.UserPassword("hookuser", "hook-password-1")
	u.Path, u.RawQuery = "/hook", "code=query-secret-2"
	p, b := consoleRelay(t, func(c *config.Config) {
		withSink(c, "crm", u.String(), func(s *config.Sink) {
			s.Events, s.Tenants, s.Format = []string{"user.*"}, []string{"acme"}, "structured"
		})
	})
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(b.get("/ui/sinks/crm").body, "1 attempts in the last 5 minutes, 1 in the last hour") {
			return fmt.Errorf("the sink page does not count the delivery")
		}
		return nil
	})
	for _, path := range []string{"/ui/sinks", "/ui/sinks/crm", "/ui/"} {
		body := b.get(path).want(t, http.StatusOK).body
		if strings.Contains(body, "hook-password-1") || strings.Contains(body, "query-secret-2") {
			t.Errorf("%s shows the sink URL's password or query value", path)
		}
	}
	b.get("/ui/sinks").want(t, http.StatusOK, "<td>1 / 1</td>", "/hook?code=redacted")
	b.get("/ui/sinks/crm").want(t, http.StatusOK, "<code>user.*</code>", "<dd>acme</dd>", "CloudEvents structured mode", "delivered</span>")
}

// TestConsoleOwnAssetsOnly: every page loads only the console's own
// assets (nothing fetched from elsewhere), and every control has a label.
func TestConsoleOwnAssetsOnly(t *testing.T) {
	p, b := consoleRelay(t, func(c *config.Config) { withSink(c, "crm", "http://127.0.0.1:1/hook", nil) })
	_, kept, err := p.srv.store.Tokens().Create(context.Background(), "acme", "kept", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	b.get("/ui/") // the session's form token
	secret := strings.TrimPrefix(b.post("/ui/tenants/acme/clients", url.Values{"days": {"90"}}).redirect(t, "/ui/secrets/"), p.adminURL)
	job := strings.TrimPrefix(b.post("/ui/sinks/crm/replay", url.Values{"since": {"1h"}}).redirect(t, "/ui/jobs/"), p.adminURL)
	pages := map[string]string{"/ui/login (signed out)": newBrowser(t, p).get("/ui/login").body}
	for _, path := range []string{"/ui/", "/ui/tenants/acme", secret, "/ui/tenants/acme/tokens/" + kept.ID + "/revoke", "/ui/log", "/ui/sinks", "/ui/sinks/crm", job, "/ui/events", "/ui/keys", "/ui/nothing"} {
		pages[path] = b.get(path).body
	}
	loads := regexp.MustCompile(`<(?:script|img|link|iframe|source|video|audio|embed|object)\b[^>]*?\b(?:src|href|data)="([^"]*)"`)
	controls := regexp.MustCompile(`<(input|select|textarea)\b[^>]*>`)
	for path, body := range pages {
		if !strings.Contains(body, "</html>") {
			t.Fatalf("%s is not a page:\n%s", path, body)
		}
		for _, m := range loads.FindAllStringSubmatch(body, -1) {
			if !strings.HasPrefix(m[1], "/ui/static/") {
				t.Errorf("%s loads %q, not one of the console's own assets", path, m[1])
			}
		}
		if strings.Contains(body, "@import") || strings.Contains(body, "url(") {
			t.Errorf("%s loads something from a style", path)
		}
		for _, at := range controls.FindAllStringIndex(body, -1) {
			c, before := body[at[0]:at[1]], body[:at[0]]
			if strings.Contains(c, `type="hidden"`) {
				continue
			}
			wrapped := strings.LastIndex(before, "<label") > strings.LastIndex(before, "</label>")
			id := regexp.MustCompile(`\bid="([^"]+)"`).FindStringSubmatch(c)
			if !wrapped && (id == nil || !strings.Contains(body, `<label for="`+id[1]+`"`)) {
				t.Errorf("%s: control without a label: %s", path, c)
			}
		}
	}
	for _, asset := range []string{"app.js", "app.css"} {
		if body := b.get("/ui/static/" + asset).body; strings.Contains(body, "://") || strings.Contains(body, "@import") {
			t.Errorf("%s refers to another origin", asset)
		}
	}
}

// TestConsoleRedirectHeaders: the answer to /ui (without the slash) is
// the console's too, with its security headers, and so is the redirect of
// a path under /ui/ that is not clean to its clean form (the admin
// listener's mux made that one without them: an attack round).
func TestConsoleRedirectHeaders(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	b := newBrowser(t, p)
	res := b.get("/ui").want(t, http.StatusMovedPermanently)
	if res.header.Get("Location") != "/ui/" {
		t.Fatalf("/ui redirects to %q", res.header.Get("Location"))
	}
	checkHeaders(t, "GET /ui", res)
	res = b.get("/ui/")
	res.redirect(t, "/ui/login")
	checkHeaders(t, "GET /ui/ signed out", res)
	for path, to := range map[string]string{"/ui//log": "/ui/log", "/ui/./": "/ui/", "/ui/x/../log": "/ui/log", "/ui/static/../login": "/ui/login"} {
		req, err := http.NewRequest("GET", b.base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = path // as sent, not cleaned by the client
		res := b.do(req)
		if res.status/100 != 3 || res.header.Get("Location") != to {
			t.Errorf("GET %s: %d to %q, want a redirect to %s", path, res.status, res.header.Get("Location"), to)
		}
		checkHeaders(t, "GET "+path, res)
	}
	// Outside /ui/ the admin API's answers are as they were.
	if res := b.get("/admin/v1/tenants"); res.status != http.StatusUnauthorized {
		t.Errorf("GET /admin/v1/tenants without a token: %d", res.status)
	}
}

// TestConsoleBatchAttemptsCountOnce: in batch mode, a resource's events
// sent in one request count as one delivery attempt on the sink's page.
func TestConsoleBatchAttemptsCountOnce(t *testing.T) {
	var mu sync.Mutex
	var batches []int // events per request received
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var evs []json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&evs); err != nil {
			evs = []json.RawMessage{nil} // one event, not a batch
		}
		mu.Lock()
		batches = append(batches, len(evs))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	p, b := consoleRelay(t, func(c *config.Config) {
		withSink(c, "crm", recv.URL, func(s *config.Sink) {
			s.Format, s.Batch = "", &config.SinkBatch{MaxEvents: 10, MaxWait: config.Duration(2 * time.Second)}
		})
	})
	uid := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201).str("id")
	titles := []string{"Engineer", "Manager", "Director", "Chief"}
	for _, title := range titles {
		p.scim("acme", acmeToken, "PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"title","value":"`+title+`"}]}`).want(t, 200)
	}
	// The events of one resource, in as many requests as the batcher made:
	// each request is one attempt, however many events it carried.
	var requests int
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		total, most := 0, 0
		for _, n := range batches {
			total, most = total+n, max(most, n)
		}
		if total != 1+len(titles) {
			return fmt.Errorf("requests received, events in each: %v; want %d events", batches, 1+len(titles))
		}
		if most < 2 {
			t.Fatalf("no request carried more than one event (%v): nothing to count once", batches)
		}
		requests = len(batches)
		return nil
	})
	want := fmt.Sprintf("%d attempts in the last 5 minutes, %d in the last hour", requests, requests)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if body := b.get("/ui/sinks/crm").body; !strings.Contains(body, want) {
			return fmt.Errorf("the sink page's throughput: %s; want %s", regexp.MustCompile(`<dt>Throughput</dt><dd>[^<]*`).FindString(body), want)
		}
		return nil
	})
}
