// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

var screenshotDir = flag.String("screenshots", "", "where TestConsoleInBrowser saves a screenshot of each page (default: the test's temporary directory)")

// chromiumPath finds a Chromium or Chrome to drive, or skips the test
// saying how to run it.
func chromiumPath(t *testing.T) string {
	if p := os.Getenv("SCIMRELAY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("the console's browser test needs Chromium: install it (Debian: apt-get install -y chromium) " +
		"or set SCIMRELAY_CHROMIUM to a Chrome or Chromium binary, then run go test ./cmd/scimrelay -run TestConsoleInBrowser")
	return ""
}

// chrome is a headless Chromium tab that records what the pages write to
// the console, and saves screenshots.
type chrome struct {
	t     *testing.T
	ctx   context.Context
	dir   string
	shots int

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
}

func newChrome(t *testing.T) *chrome {
	path := chromiumPath(t)
	// The machine's network is closed: without these flags Chromium waits
	// on connections that are refused (updates, sync, QUIC probes).
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	c := &chrome{t: t, ctx: ctx, dir: *screenshotDir}
	if c.dir == "" {
		c.dir = t.TempDir()
	} else if err := os.MkdirAll(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", path, err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			c.mu.Lock()
			c.messages = append(c.messages, m)
			c.mu.Unlock()
		}
	}()
	return c
}

// do runs actions, failing the test on an error.
func (c *chrome) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](c *chrome, expr string) T {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		c.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// text reads the text of the first element sel selects, as the page
// shows it. It reads through the document, as waitText does, and asks
// again when the read fails: a node looked up by id can be gone by the
// time it is read ("No node with given id found") while the page settles.
func (c *chrome) text(sel string) string {
	c.t.Helper()
	expr := fmt.Sprintf(`(document.querySelector(%q)?.innerText ?? null)`, sel)
	var s string
	eventstest.CheckFor(c.t, 30*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[*string](expr))
		if err != nil {
			return fmt.Errorf("reading %s: %w", sel, err)
		}
		if got == nil {
			return fmt.Errorf("no element %s on the page", sel)
		}
		s = *got
		return nil
	})
	return s
}

// waitText waits until the first element sel selects says want. It asks
// again after a navigation, which ends an evaluation under way.
func (c *chrome) waitText(sel, want string) {
	c.t.Helper()
	expr := fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "")`, sel)
	eventstest.CheckFor(c.t, 30*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			return err
		}
		if !strings.Contains(got, want) {
			return fmt.Errorf("%s says %q, want %q", sel, got, want)
		}
		return nil
	})
}

// page checks the page just shown: a screenshot saved as name, and nothing
// written to the console as a warning, an error or an exception (a CSP
// violation, a script error, a failed load) since the last check.
func (c *chrome) page(name string) {
	c.t.Helper()
	c.do("waiting for "+name, chromedp.WaitVisible(chromedp.CSS("main h1")))
	png, err := c.screenshot()
	if err != nil {
		c.t.Fatalf("screenshot of %s: %v", name, err)
	}
	c.shots++
	file := filepath.Join(c.dir, fmt.Sprintf("%02d-%s.png", c.shots, name))
	if err := os.WriteFile(file, png, 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("%s: %s", name, file)
	c.checkConsole(name)
}

// screenshot takes a full-page screenshot, or the viewport's when that
// does not come. Headless Chromium's full-page capture (it renders beyond
// the viewport) has stalled for over 30 s under the whole suite's load,
// once in CI (chromedp/chromedp#1339 reports the same); the viewport
// capture is another path, and the page was already checked visible.
func (c *chrome) screenshot() ([]byte, error) {
	capture := func(timeout time.Duration, a chromedp.Action[[]byte]) ([]byte, error) {
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		defer cancel()
		return chromedp.Run(ctx, a)
	}
	png, err := capture(20*time.Second, chromedp.FullScreenshot(100))
	if err == nil {
		return png, nil
	}
	c.t.Logf("full-page screenshot: %v; taking the viewport's", err)
	return capture(30*time.Second, chromedp.CaptureScreenshot())
}

// checkConsole fails the test on a warning, error or exception written
// to the console since the last check, but those that say one of
// expected (an answer the page meant to get).
func (c *chrome) checkConsole(name string, expected ...string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.messages {
		switch m.Type {
		case chromedp.ConsoleWarning, chromedp.ConsoleError, chromedp.ConsoleException:
			if !slices.ContainsFunc(expected, func(e string) bool { return strings.Contains(m.String(), e) }) {
				c.t.Errorf("page %s: the console says %s", name, m)
			}
		}
	}
	c.messages = nil
}

// scripts turns the pages' scripts on or off.
func (c *chrome) scripts(on bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: !on}); err != nil {
		c.t.Fatalf("turning scripts on (%v): %v", on, err)
	}
}

// backToSecret leaves the page showing secret with leave and goes Back,
// as its button does: the secret does not show again, the page says it is
// not kept (410).
func (c *chrome) backToSecret(secret string, leave func()) {
	c.t.Helper()
	secretPage := eval[string](c, `location.pathname`)
	leave()
	// A page restored from the cache fires no load, which chromedp's
	// NavigateBack would wait for.
	eval[bool](c, `history.back(), true`)
	eventstest.CheckFor(c.t, 30*time.Second, 20*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[location.pathname, document.documentElement.outerHTML + [...document.querySelectorAll("input")].map(i => i.value).join(" "), document.querySelector("main")?.innerText ?? ""]`))
		if err != nil {
			return err // a navigation under way
		}
		if strings.Contains(got[1], secret) {
			c.t.Fatalf("after Back, %s shows the secret again", got[0])
		}
		if got[0] != secretPage || !strings.Contains(got[2], "this secret was shown once and is not kept") {
			return fmt.Errorf("after Back: %s says %q, want %s to say the secret is not kept", got[0], got[2], secretPage)
		}
		return nil
	})
}

// TestConsoleInBrowser drives the console in headless Chromium against a
// real relay: sign in, generate a token and provision with it, find the
// request in the log with its event and deliveries, redrive a failing
// sink's dead letter, watch an event arrive in the live tail; each page on
// a phone-sized screen too, usable with the keyboard, with no console
// error and a screenshot each.
func TestConsoleInBrowser(t *testing.T) {
	c := newChrome(t)
	crm, flaky := newFlakyHook(t), newFlakyHook(t)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", crm.URL, nil)
	withSink(cfg, "erp", flaky.URL, func(s *config.Sink) { s.Events = []string{"user.*"} })
	p := startRelay(t, cfg, roleAll)
	ui := p.adminURL + "/ui/"

	// Sign in, with the keyboard: the token field has the focus, Tab goes
	// to the button, whose focus is visible.
	c.do("opening the console", chromedp.Navigate(ui))
	c.waitText("main h1", "Sign in")
	c.page("sign-in")
	if id := eval[string](c, `document.activeElement.id`); id != "token" {
		t.Fatalf("the focus is on %q, want the token field", id)
	}
	c.do("typing the admin token", chromedp.SendKeys(chromedp.ID("token"), adminSecret), chromedp.KeyEvent(kb.Tab))
	if focus := eval[string](c, `document.activeElement.tagName + " " + document.activeElement.textContent.trim() + " " + getComputedStyle(document.activeElement).outlineStyle`); focus != "BUTTON Sign in solid" {
		t.Fatalf("after Tab the focus is %q, want the Sign in button with a visible outline", focus)
	}
	c.do("signing in", chromedp.KeyEvent(kb.Enter))
	c.waitText("main h1", "Overview")
	c.page("overview")

	// Generate a token; its secret shows once, with Entra's field names.
	c.do("opening the tenant", chromedp.Click(chromedp.CSS(`a[href="/ui/tenants/acme"]`)))
	c.waitText("main h1", "Tenant acme")
	if u := eval[string](c, `document.getElementById("tenant-url").value`); u != p.scimURL+"/scim/v2/acme" {
		t.Fatalf("Tenant URL %q", u)
	}
	c.page("tenant")
	c.do("generating a token",
		chromedp.SetValue(chromedp.ID("tokens-name"), "entra-browser"),
		chromedp.SetValue(chromedp.ID("tokens-days"), "30"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/tenants/acme/tokens"] button[type="submit"]`)),
	)
	c.waitText("main h1", "New secret for acme")
	secret := eval[string](c, `document.getElementById("secret").value`)
	if !strings.HasPrefix(secret, "scimrelay_") || !strings.Contains(c.text("main"), "Secret Token") {
		t.Fatalf("secret %q", secret)
	}
	c.do("copying the secret", chromedp.Click(chromedp.CSS(`button[data-copy="secret"]`)))
	c.page("secret")

	// Leaving the page and going Back does not show the secret again:
	// Chromium would restore the page as it was, input and all, from its
	// back/forward cache (Cache-Control: no-store does not keep it out).
	// Here to another site, which clears no cookie of the console's: the
	// page's script empties the secret's field as it is left, and asks
	// for the page again when the cache restores it.
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "<!doctype html><title>Elsewhere</title><main><h1>Elsewhere</h1></main>")
	}))
	t.Cleanup(elsewhere.Close)
	c.backToSecret(secret, func() {
		c.do("leaving the console", chromedp.Navigate(elsewhere.URL))
		c.waitText("main h1", "Elsewhere")
	})
	c.checkConsole("back to the secret", "status of 410 (Gone)")

	// Without the script too: the page that showed the secret changed a
	// cookie, and Chromium restores no no-store page once one changed.
	c.scripts(false)
	c.do("opening the tenant", chromedp.Navigate(ui+"tenants/acme"))
	c.waitText("main h1", "Tenant acme")
	c.do("generating another token",
		chromedp.SetValue(chromedp.ID("tokens-name"), "no-script"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/tenants/acme/tokens"] button[type="submit"]`)),
	)
	c.waitText("main h1", "New secret for acme")
	second := eval[string](c, `document.getElementById("secret").value`)
	c.backToSecret(second, func() {
		c.do("leaving the secret", chromedp.Click(chromedp.CSS(`nav a[href="/ui/sinks"]`)))
		c.waitText("main h1", "Sinks")
	})
	c.scripts(true)
	c.checkConsole("back to the secret without the script", "status of 410 (Gone)")

	// Provision with it.
	uid := p.scim("acme", secret, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann@acme.example","emails":[{"value":"ann@acme.example","type":"work","primary":true}]}`).want(t, 201).str("id")

	// The request in the log: what it changed, its event, the deliveries
	// per sink (the failing one's dead-lettered).
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := flaky.delivered(); n != 1 {
			return fmt.Errorf("sink erp's receiver got %d deliveries, want user.created", n)
		}
		return nil
	})
	flaky.fail(http.StatusGone)
	p.scim("acme", secret, "PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"title","value":"Engineer"}]}`).want(t, 200)
	c.do("searching the log", chromedp.Navigate(ui+"log"))
	c.do("searching by user", chromedp.SendKeys(chromedp.ID("f-user"), "ann@acme"), chromedp.SetValue(chromedp.ID("f-op"), "patch"), chromedp.Submit(chromedp.ID("f-user")))
	c.waitText("table.log tbody", "ann@acme.example")
	c.page("log")
	c.do("opening the request", chromedp.Click(chromedp.CSS(`table.log tbody a`)))
	c.waitText("main h1", "Request")
	eventstest.CheckFor(t, 20*time.Second, 200*time.Millisecond, func() error {
		c.do("reloading the request", chromedp.Reload())
		if m := c.text("main"); !strings.Contains(m, "dead_lettered") || !strings.Contains(m, "delivered") {
			return fmt.Errorf("the request's deliveries do not show both sinks yet:\n%s", m)
		}
		return nil
	})
	if m := c.text("main"); !strings.Contains(m, "title") || !strings.Contains(m, "Engineer") || !strings.Contains(m, "user.updated") || !strings.Contains(m, "Sink erp") || !strings.Contains(m, "410") {
		t.Fatalf("the request's detail:\n%s", m)
	}
	c.page("request")

	// The sinks; the failing one's dead letter redriven once it is fixed.
	c.do("opening the sinks", chromedp.Click(chromedp.CSS(`nav a[href="/ui/sinks"]`)))
	c.waitText("main h1", "Sinks")
	c.page("sinks")
	c.do("opening sink erp", chromedp.Click(chromedp.CSS(`a[href="/ui/sinks/erp"]`)))
	c.waitText("#dead-letters + p + form button", "Redrive all 1")
	c.page("sink")
	flaky.fail(0)
	c.do("redriving the dead letter", chromedp.Click(chromedp.CSS(`td form button[type="submit"]`)))
	c.waitText("main h1", "Job")
	// app.js follows the job until it ends: the count can show while the
	// job still runs, so wait for both.
	c.waitText(`#job[data-state="done"]`, "1 delivered")
	c.page("job")
	if n := flaky.delivered(); n != 2 {
		t.Fatalf("sink erp's receiver got %d deliveries, want user.created and the redriven user.updated", n)
	}

	// The live tail: an event arrives, and opens to its CloudEvent.
	c.do("opening the events", chromedp.Navigate(ui+"events?tenant=acme"))
	c.waitText("#tail-status", "Watching")
	// Its displayName holds a right-to-left override: shown as its JSON
	// escape, not applied.
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob@acme.example","displayName":"Bob `+"\u202e"+`htimS"}`).want(t, 201)
	c.waitText("#tail", "user.created")
	c.do("opening the event", chromedp.Click(chromedp.CSS(`#tail li summary`)))
	if ev := c.text("#tail li pre"); !strings.Contains(ev, `"specversion": "1.0"`) || !strings.Contains(ev, "bob@acme.example") ||
		!strings.Contains(ev, `"displayName": "Bob \u202ehtimS"`) || strings.ContainsRune(ev, '\u202e') {
		t.Fatalf("the event as shown: %s", ev)
	}
	c.page("events")

	// A phone-sized screen: nothing wider than the screen but the tables,
	// which scroll in their own box.
	c.do("a phone's screen", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	for _, pg := range []struct{ path, name string }{{"", "overview"}, {"tenants/acme", "tenant"}, {"log", "log"}, {"sinks/erp", "sink"}, {"events", "events"}, {"keys", "keys"}} {
		c.do("opening "+pg.name+" on a phone", chromedp.Navigate(ui+pg.path))
		if width := eval[int](c, `document.documentElement.scrollWidth`); width > 390 {
			widest := eval[string](c, `[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > 391 && !e.parentElement.closest(".table-wrap")).slice(0, 8).map(e => e.tagName + "." + e.className + "#" + e.id + " " + Math.round(e.getBoundingClientRect().right)).join(", ")`)
			t.Errorf("%s on a phone is %d px wide, more than the screen's 390: %s", pg.name, width, widest)
		}
		c.page("phone-" + pg.name)
	}
	c.do("a desktop's screen", chromedp.ResetViewport())

	// Signing out ends the session.
	c.do("signing out", chromedp.Navigate(ui), chromedp.Click(chromedp.CSS(`form.logout button`)))
	c.waitText("main h1", "Sign in")
	c.do("coming back", chromedp.Navigate(ui))
	c.waitText("main h1", "Sign in")
	c.checkConsole("sign-out")
}

// TestConsoleLiveTailAcrossReconnect: the live tail's connection drops and
// the browser's EventSource reconnects by itself. An event published while
// it was away must show once it is back, and an event shown before must
// not show twice.
func TestConsoleLiveTailAcrossReconnect(t *testing.T) {
	c := newChrome(t)
	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	px := newCutProxy(t, strings.TrimPrefix(p.adminURL, "http://"))
	ui := px.URL() + "/ui/"

	c.do("opening the console", chromedp.Navigate(ui))
	c.waitText("main h1", "Sign in")
	c.do("signing in", chromedp.SendKeys(chromedp.ID("token"), adminSecret), chromedp.KeyEvent(kb.Enter))
	c.waitText("main h1", "Overview")

	shown := func(name string) int {
		return eval[int](c, fmt.Sprintf(`[...document.querySelectorAll("#tail li pre")].filter(p => p.textContent.includes(%q)).length`, name))
	}
	waitShown := func(name string) {
		t.Helper()
		eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			if n := shown(name); n == 0 {
				return fmt.Errorf("the tail does not show %s yet; it says %q", name, c.text("#tail-status"))
			}
			return nil
		})
	}
	dropAndWait := func(during func()) {
		t.Helper()
		px.cut(true)
		c.waitText("#tail-status", "Reconnecting")
		if during != nil {
			during()
		}
		px.cut(false)
		c.waitText("#tail-status", "Watching")
	}

	// New events only: an event published while the connection was down.
	c.do("opening the events", chromedp.Navigate(ui+"events?tenant=acme"))
	c.waitText("#tail-status", "Watching")
	p.createUser(t, "before-drop")
	waitShown("before-drop")
	dropAndWait(func() {
		p.createUser(t, "during-drop")
		waitDelivered(t, h, 2) // in the stream before the browser is back
	})
	p.createUser(t, "after-drop")
	waitShown("after-drop")
	if n := shown("during-drop"); n != 1 {
		t.Errorf("new events only: the event published while the tail reconnected shows %d times, want once (the tail says %q)", n, c.text("#tail-status"))
	}

	// Starting with the last 10 minutes: what was shown before the drop
	// is not shown again after it.
	c.do("opening the events of the last 10 minutes", chromedp.Navigate(ui+"events?tenant=acme&since=10m"))
	waitShown("after-drop")
	dropAndWait(nil)
	p.createUser(t, "after-second-drop")
	waitShown("after-second-drop")
	for _, name := range []string{"before-drop", "during-drop", "after-drop"} {
		if n := shown(name); n != 1 {
			t.Errorf("since 10m: the user.created of %s shows %d times after the reconnection, want once", name, n)
		}
	}
}

// cutProxy forwards TCP connections to target; cut closes every
// connection under way, and while held it closes new ones at once (a
// proxy or a network that drops the browser's connection for a while).
type cutProxy struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
	held  bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{}
	p.addr = eventstest.Proxy(t, target, func(c, up net.Conn) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.held {
			c.Close()
			up.Close()
			return
		}
		p.conns = append(p.conns, c, up)
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	})
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.addr }

// cut closes every connection, and holds new ones off while hold.
func (p *cutProxy) cut(hold bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = hold
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestConsoleDoubleSubmitGeneratesOneToken: a double click on Generate
// token, on a console reached over a link with 300 ms of latency each way,
// issues one token: not a second, live one whose secret nobody ever sees.
func TestConsoleDoubleSubmitGeneratesOneToken(t *testing.T) {
	c := newChrome(t)
	cfg := testConfig(t, t.TempDir())
	p := startRelay(t, cfg, roleAll)
	ui := slowLink(t, strings.TrimPrefix(p.adminURL, "http://"), 300*time.Millisecond) + "/ui/"
	c.openTenant(ui, "acme")
	c.do("naming the token", chromedp.SetValue(chromedp.ID("tokens-name"), "double"))
	// Two clicks of the mouse on the button, the second before the
	// first's answer came: an impatient user, or a slow relay.
	box := eval[[]float64](c, `(() => { const b = document.querySelector('form[action="/ui/tenants/acme/tokens"] button[type="submit"]'); b.scrollIntoView({block: "center"}); const r = b.getBoundingClientRect(); return [r.x + r.width/2, r.y + r.height/2] })()`)
	x, y := box[0], box[1]
	// A double click: the second 100 ms after the first.
	c.do("clicking Generate token", chromedp.MouseClickXY(x, y))
	<-time.After(100 * time.Millisecond)
	c.do("clicking Generate token again", chromedp.MouseClickXY(x, y))
	c.waitText("main h1", "New secret for acme")
	c.do("opening the tenant", chromedp.Navigate(ui+"tenants/acme"))
	c.waitText("main h1", "Tenant acme")
	n := eval[int](c, `[...document.querySelectorAll("#tokens ~ .table-wrap tbody th")].filter(th => th.textContent.trim() === "double").length`)
	if n != 1 {
		t.Errorf("a double click on Generate token issued %d tokens named double, want 1 (one whose secret nobody saw stays live)", n)
	}
}

// TestConsoleNameFieldTakesWhatTheAPITakes: a name the API takes (up to
// 100 characters) is issued whole from the console. The name fields had
// maxlength="100", which the browser counts in UTF-16 units: 60 emoji
// pasted in were cut to 50 with nothing said, and the token issued under
// the cut name (found by the console review).
func TestConsoleNameFieldTakesWhatTheAPITakes(t *testing.T) {
	c := newChrome(t)
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	ui := p.adminURL + "/ui/"
	c.openTenant(ui, "acme")
	name := strings.Repeat("😀", 60)
	eval[bool](c, `(document.getElementById("tokens-name").value = "", true)`)
	c.do("focusing the name", chromedp.Focus(chromedp.ID("tokens-name")))
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second) // pasting the name
	defer cancel()
	if _, err := chromedp.Call(ctx, input.InsertText, input.InsertTextParams{Text: name}); err != nil {
		t.Fatal(err)
	}
	c.do("generating a token", chromedp.Click(chromedp.CSS(`form[action="/ui/tenants/acme/tokens"] button[type="submit"]`)))
	c.waitText("main h1", "New secret for acme")
	if shown := eval[string](c, `document.querySelectorAll("dl.facts dd")[0].textContent`); shown != name {
		t.Errorf("a name of %d characters (the API takes up to 100) was issued as one of %d: %q", utf8.RuneCountInString(name), utf8.RuneCountInString(shown), shown)
	}
}

// openTenant signs in to the console at ui with the admin token and opens
// tenant's page.
func (c *chrome) openTenant(ui, tenant string) {
	c.do("opening the console", chromedp.Navigate(ui))
	c.waitText("main h1", "Sign in")
	c.do("signing in", chromedp.SendKeys(chromedp.ID("token"), adminSecret), chromedp.KeyEvent(kb.Enter))
	c.waitText("main h1", "Overview")
	c.do("opening the tenant", chromedp.Navigate(ui+"tenants/"+tenant))
	c.waitText("main h1", "Tenant "+tenant)
}

// slowLink forwards TCP connections to target with latency each way, the
// closing of a side too: a console reached over a long link (an SSH tunnel,
// a port-forward to another region).
func slowLink(t *testing.T, target string, latency time.Duration) string {
	pipe := func(dst, src net.Conn) {
		type chunk struct {
			b  []byte
			at time.Time
		}
		q := make(chan chunk, 1024)
		go func() {
			defer close(q)
			for {
				b := make([]byte, 32<<10)
				n, err := src.Read(b)
				if n > 0 {
					q <- chunk{b[:n], time.Now().Add(latency)}
				}
				if err != nil {
					return
				}
			}
		}()
		for c := range q {
			<-time.After(time.Until(c.at))
			if _, err := dst.Write(c.b); err != nil {
				break
			}
		}
		<-time.After(latency)
		dst.Close()
	}
	return "http://" + eventstest.Proxy(t, target, func(c, up net.Conn) {
		go pipe(up, c)
		go pipe(c, up)
	})
}
