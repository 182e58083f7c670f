// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/relay/natsbus/natsbustest"
)

// subscribe is what the README shows a service doing: with the credential
// `scimrelay subscriber add billing-users --subjects 'scimrelay.acme.user.>'`
// wrote, the durable consumer the relay keeps for it (one tenant's user
// events), reading each CloudEvent from the NATS message. The README's code block is this
// function (TestREADMEExamples checks).
func subscribe(ctx context.Context, natsURL, seedFile string, handle func(action events.Action, d events.Data)) error {
	nkey, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		return err
	}
	// The subscriber's nkey, and its private inbox prefix. It reconnects for
	// ever, refused or not: through a relay restart, and when its tenant is
	// cut off and let in again (by default it gives up after 2 minutes, or
	// at the second refusal, and reads nothing more).
	nc, err := nats.Connect(natsURL, nkey, nats.CustomInboxPrefix("_INBOX_billing-users"),
		nats.MaxReconnects(-1), nats.IgnoreAuthErrorAbort())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// The relay keeps a durable consumer named as the subscriber, filtered on its
	// --subjects; it remembers where it got to across restarts.
	cons, err := js.Consumer(ctx, "SCIMRELAY", "billing-users")
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		// Binary mode: ce-id, ce-type, ce-subject, ce-sequence ... in headers.
		e, err := events.FromMsg(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			log.Printf("not a CloudEvent: %v", err)
			_ = m.Term()
			return
		}
		action, _ := events.ActionOf(e) // e.g. user.deactivated
		data, _ := events.DataOf(e)     // resource, changes, member
		handle(action, data)
		_ = m.Ack() // at-least-once: handle must tolerate a repeat (same e.ID())
	})
	if err != nil {
		return err
	}
	defer cc.Stop()
	<-ctx.Done()
	return nil
}

// examplesBus starts the embedded server with the README's subscriber and
// publishes, as the relay, a user and a group event of two tenants.
func examplesBus(t *testing.T) (*bus, string) {
	t.Helper()
	sub, seed := newSubscriber(t, "billing-users", "scimrelay.acme.user.>")
	b := startBus(t, sub)
	st, err := b.js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(t.Context()); err != nil { // startBus's messages are not CloudEvents
		t.Fatal(err)
	}
	for i, ev := range []struct {
		tenant string
		a      events.Action
	}{{"globex", events.UserCreated}, {"acme", events.GroupCreated}, {"acme", events.UserCreated}, {"acme", events.UserDeactivated}} {
		msg, err := events.ToMsg(eventstest.Event(t, ev.tenant, ev.a, fmt.Sprintf("id-%d", i), uint64(i+1), 1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.js.PublishMsg(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
	}
	return b, seed
}

func TestSubscribeExample(t *testing.T) {
	b, seed := examplesBus(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan string, 10)
	errs := make(chan error, 1)
	go func() {
		errs <- subscribe(ctx, b.url, seed, func(a events.Action, d events.Data) { got <- fmt.Sprintf("%s %s", a, d.ID) })
	}()
	var seen []string
	for len(seen) < 2 {
		select {
		case g := <-got:
			seen = append(seen, g)
		case err := <-errs:
			t.Fatalf("subscribe: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %v; the example reads acme's user events", seen)
		}
	}
	if strings.Join(seen, ",") != "user.created id-2,user.deactivated id-3" {
		t.Fatalf("got %v, want acme's user events only", seen)
	}
}

// TestJavaScriptExample runs docs/examples/js/subscribe.mjs (the README's
// JavaScript example) with node against the embedded server.
func TestJavaScriptExample(t *testing.T) {
	b, seed := examplesBus(t)
	js := startJSExample(t, b.url, seed, 2)
	if err := js.wait(t, 60*time.Second); err != nil {
		t.Fatalf("node subscribe.mjs: %v\n%s%s", err, js.out.String(), js.stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(js.out.String()))
	for sc.Scan() {
		var ev struct{ Type, UserName string }
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		lines = append(lines, ev.Type+" "+ev.UserName)
	}
	if strings.Join(lines, ",") != "io.scimrelay.user.created user-id-2,io.scimrelay.user.deactivated user-id-3" {
		t.Fatalf("the JavaScript example printed %v", lines)
	}
}

// jsExample is docs/examples/js/subscribe.mjs running under node.
type jsExample struct {
	out, stderr eventstest.Log
	done        chan error
}

// startJSExample runs the JavaScript example against the server at url
// with the subscriber's seed, until it has read limit events; it skips
// the test where node or the example's packages are missing.
func startJSExample(t *testing.T, url, seed string, limit int) *jsExample {
	t.Helper()
	dir, _ := filepath.Abs("../../docs/examples/js")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the JavaScript example needs it")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "nats")); err != nil {
		t.Skip("docs/examples/js has no node_modules: run npm ci --prefix docs/examples/js")
	}
	cmd := exec.CommandContext(t.Context(), node, "subscribe.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NATS_URL="+url, "SEED_FILE="+seed, fmt.Sprintf("LIMIT=%d", limit))
	js := &jsExample{done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &js.out, &js.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { js.done <- cmd.Wait() }()
	return js
}

// wait waits up to d for the example to end, and returns how it ended.
func (js *jsExample) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-js.done:
		return err
	case <-time.After(d):
		return fmt.Errorf("still running after %v", d)
	}
}

// printed waits until the example has printed userName.
func (js *jsExample) printed(t *testing.T, userName string) {
	t.Helper()
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(js.out.String(), `"userName":"`+userName+`"`) {
			return fmt.Errorf("printed %q%s", js.out.String(), js.stderr.String())
		}
		return nil
	})
}

// cutOffAndLetIn cuts sub off, as a reload removing its tenant does, waits
// until the server has refused its client twice (where nats.go and nats.js
// give up by default), and lets it in again.
func cutOffAndLetIn(t *testing.T, b *bus, logs *eventstest.Log, sub natsbus.Subscriber) {
	t.Helper()
	if err := b.e.SetSubscribers(nil); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if n := strings.Count(logs.String(), "authentication error"); n < 2 {
			return fmt.Errorf("%d refusals", n)
		}
		return nil
	})
	if err := b.e.SetSubscribers([]natsbus.Subscriber{sub}); err != nil {
		t.Fatal(err)
	}
}

// publishUser publishes, as the relay, acme's user.created for id.
func publishUser(t *testing.T, js jetstream.JetStream, id string, seq uint64) {
	t.Helper()
	msg, err := events.ToMsg(eventstest.Event(t, "acme", events.UserCreated, id, seq, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
}

// cutOffBus is the embedded server with one subscriber, logging to logs,
// its stream holding only CloudEvents.
func cutOffBus(t *testing.T, logs *eventstest.Log) (*bus, natsbus.Subscriber, string) {
	t.Helper()
	sub, seed := newSubscriber(t, "billing-users", "scimrelay.acme.user.>")
	b := startBusLogging(t, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), sub)
	st, err := b.js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(t.Context()); err != nil { // startBus's messages are not CloudEvents
		t.Fatal(err)
	}
	return b, sub, seed
}

// TestSubscribeExampleComesBackAfterCutOff: README, a subscriber whose
// tenant is removed "is cut off, its consumer kept, and let in again if
// the name is added back" (a reload). The README's Go example, cut off and
// let in again, reads on: by default nats.go closed the connection at the
// second refusal, and the example read nothing more, without an error (a
// review).
func TestSubscribeExampleComesBackAfterCutOff(t *testing.T) {
	var logs eventstest.Log
	b, sub, seed := cutOffBus(t, &logs)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan string, 10)
	go func() {
		_ = subscribe(ctx, b.url, seed, func(a events.Action, d events.Data) { got <- d.ID })
	}()
	next := func(want string) {
		t.Helper()
		select {
		case id := <-got:
			if id != want {
				t.Fatalf("read %s, want %s", id, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the README's Go example read nothing in 20 s, want %s (%d refusals logged)", want, strings.Count(logs.String(), "authentication error"))
		}
	}
	publishUser(t, b.js, "before", 1)
	next("before")
	cutOffAndLetIn(t, b, &logs, sub)
	publishUser(t, b.js, "after", 2)
	next("after")
}

// TestJavaScriptExampleComesBackAfterCutOff: the same for the README's
// JavaScript example (nats.js also closed at the second refusal, and node
// exited 13 with the event unread).
func TestJavaScriptExampleComesBackAfterCutOff(t *testing.T) {
	var logs eventstest.Log
	b, sub, seed := cutOffBus(t, &logs)
	publishUser(t, b.js, "before", 1)
	js := startJSExample(t, b.url, seed, 2)
	js.printed(t, "user-before")
	cutOffAndLetIn(t, b, &logs, sub)
	publishUser(t, b.js, "after", 2)
	if err := js.wait(t, 40*time.Second); err != nil || !strings.Contains(js.out.String(), `"userName":"user-after"`) {
		t.Fatalf("node subscribe.mjs ended (%v) without reading the event stored after it was let in again; printed:\n%s%s", err, js.out.String(), js.stderr.String())
	}
}

// TestJavaScriptExampleResumesAfterARelayRestart: README, the JavaScript
// example "remembers where it got to across restarts": with the relay's
// NATS down 25 s (an upgrade, a restore), it reads on once it is back; by
// default nats.js gave up after 10 reconnects 2 s apart and node exited.
func TestJavaScriptExampleResumesAfterARelayRestart(t *testing.T) {
	store := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	sub, seed := newSubscriber(t, "billing-users", "scimrelay.acme.user.>")
	listen := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	start := func() (*natsbus.Embedded, jetstream.JetStream) {
		return natsbustest.Start(t, natsbus.Options{Listen: listen, StoreDir: store}, log, sub)
	}
	e, js := start()
	publishUser(t, js, "before", 1)
	ex := startJSExample(t, e.ClientURL(), seed, 2)
	ex.printed(t, "user-before")
	js.Conn().Close()
	e.Shutdown()
	// Down for 25 s: longer than nats.js's default 10 reconnects.
	if err := ex.wait(t, 25*time.Second); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("node subscribe.mjs ended (%v) while the relay was down; printed:\n%s%s", err, ex.out.String(), ex.stderr.String())
	}
	_, js = start()
	publishUser(t, js, "after", 2)
	if err := ex.wait(t, 40*time.Second); err != nil || !strings.Contains(ex.out.String(), `"userName":"user-after"`) {
		t.Fatalf("node subscribe.mjs ended (%v) without reading the event stored after the restart; printed:\n%s%s", err, ex.out.String(), ex.stderr.String())
	}
}

// TestREADMEExamples keeps the README's subscriber examples identical to the
// code above and to docs/examples/js/subscribe.mjs, which run, and its
// webhook receiver in JavaScript identical to docs/examples/js/receive.mjs
// (TestJavaScriptReceiverExample in cmd/scimrelay runs it).
func TestREADMEExamples(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fn := regexp.MustCompile(`(?s)\nfunc subscribe\(.*?\n}\n`).Find(src)
	if fn == nil {
		t.Fatal("subscribe not found")
	}
	if !strings.Contains(string(readme), strings.TrimSpace(string(fn))) {
		t.Errorf("README.md does not contain the subscriber example as it is in relay/natsbus/example_test.go; copy it over:\n%s", fn)
	}
	for _, name := range []string{"subscribe.mjs", "receive.mjs"} {
		js, err := os.ReadFile("../../docs/examples/js/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "```js\n"+string(js)+"```\n") {
			t.Errorf("README.md does not contain docs/examples/js/%s as it is, as a js block; copy it over", name)
		}
	}
}
