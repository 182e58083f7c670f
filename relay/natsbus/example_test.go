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
	"sync"
	"syscall"
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
		nats.MaxReconnects(-1), nats.IgnoreAuthErrorAbort(), nats.RetryOnFailedConnect(true))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// The relay keeps a durable consumer named as the subscriber, filtered on its
	// --subjects; it remembers where it got to across restarts. Bind to it once
	// NATS answers: a service started before the relay (at boot) waits for it.
	cons, err := js.Consumer(ctx, "SCIMRELAY", "billing-users")
	for err != nil {
		log.Printf("binding to the consumer: %v", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(2 * time.Second):
		}
		cons, err = js.Consumer(ctx, "SCIMRELAY", "billing-users")
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
	<-ctx.Done()
	// Drain, not Stop: the events already pulled (up to 500) go to handle
	// first. Left unhandled, they would come back only after ack_wait
	// (30 s), behind later events of the same resources.
	cc.Drain()
	<-cc.Closed()
	return nil
}

// exampleSubscriberBus starts the embedded server with the README's
// subscriber, its stream empty, and returns the subscriber's seed file.
func exampleSubscriberBus(t *testing.T) (*bus, string) {
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
	return b, seed
}

// examplesBus starts the embedded server with the README's subscriber and
// publishes, as the relay, a user and a group event of two tenants.
func examplesBus(t *testing.T) (*bus, string) {
	t.Helper()
	b, seed := exampleSubscriberBus(t)
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
	cmd         *exec.Cmd
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
	js := &jsExample{done: make(chan error, 1), cmd: cmd}
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

// TestSubscribeExampleRestartKeepsEachResourcesOrder: README, the Go example
// reads "with the durable consumer the relay keeps for it, which resumes
// where it stopped", and sequence: "events reach a receiver in that order
// only within one resource". A service running the example is stopped
// (its ctx cancelled, as on SIGTERM) while it works through a backlog,
// and started again at once: each resource's events must still reach it
// in order, created before updated.
func TestSubscribeExampleRestartKeepsEachResourcesOrder(t *testing.T) {
	b, seed := exampleSubscriberBus(t)
	const n = 1000
	publishCreatedThenUpdated(t, b, n)
	type seen struct {
		session int
		what    string
	}
	var mu sync.Mutex
	var order []seen
	run := func(session int, stopAfter int) (stopped chan error) {
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		stopped = make(chan error, 1)
		handled := 0
		go func() {
			stopped <- subscribe(ctx, b.url, seed, func(a events.Action, d events.Data) {
				time.Sleep(time.Millisecond) // the service's work on each event (a call, a write)
				mu.Lock()
				defer mu.Unlock()
				order = append(order, seen{session, string(a) + " " + d.ID})
				if handled++; handled == stopAfter {
					cancel() // the service is told to stop
				}
			})
		}()
		return stopped
	}
	if err := <-run(1, 10); err != nil {
		t.Fatal(err)
	}
	run(2, -1)
	// Every event, once at least, within ack_wait and then some.
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		got := map[string]bool{}
		for _, s := range order {
			got[s.what] = true
		}
		if len(got) < 2*n {
			return fmt.Errorf("%d of %d events handled", len(got), 2*n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	var what []string
	for _, s := range order {
		what = append(what, s.what)
	}
	if wrong := updatedBeforeCreated(what); len(wrong) > 0 {
		t.Fatalf("after the restart %d resources' user.updated reached the example before their user.created (first: %v); %d events handled in session 1",
			len(wrong), wrong[0], func() int {
				k := 0
				for _, s := range order {
					if s.session == 1 {
						k++
					}
				}
				return k
			}())
	}
}

// TestSubscribeExampleStartedBeforeTheRelay: README, the examples reconnect
// "for ever, refused or not: through a relay restart". A service started
// while the relay restarts, or at boot before it, reads once it is up; the
// Go example returned at once ("nats: no servers available for
// connection"), and the JavaScript one (node: CONNECTION_REFUSED).
func TestSubscribeExampleStartedBeforeTheRelay(t *testing.T) {
	sub, seed := newSubscriber(t, "billing-users", "scimrelay.acme.user.>")
	listen := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- subscribe(ctx, "nats://"+listen, seed, func(a events.Action, d events.Data) { got <- d.ID })
	}()
	select {
	case err := <-done:
		t.Fatalf("the README's Go example, started while the relay was down, returned at once: %v", err)
	case <-time.After(time.Second): // still trying (it failed at once): start the relay
	}
	_, js := natsbustest.Start(t, natsbus.Options{Listen: listen, StoreDir: t.TempDir()}, slog.New(slog.DiscardHandler), sub)
	publishUser(t, js, "after", 1)
	select {
	case <-got:
	case err := <-done:
		t.Fatalf("the Go example returned %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the Go example read nothing within 30 s of the relay's start")
	}
}

// TestJavaScriptExampleStartedBeforeTheRelay: the same for the JavaScript
// example.
func TestJavaScriptExampleStartedBeforeTheRelay(t *testing.T) {
	sub, seed := newSubscriber(t, "billing-users", "scimrelay.acme.user.>")
	listen := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	ex := startJSExample(t, "nats://"+listen, seed, 1)
	if err := ex.wait(t, 3*time.Second); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("node subscribe.mjs, started while the relay was down, ended at once (%v):\n%s", err, ex.stderr.String())
	}
	_, js := natsbustest.Start(t, natsbus.Options{Listen: listen, StoreDir: t.TempDir()}, slog.New(slog.DiscardHandler), sub)
	publishUser(t, js, "after", 1)
	if err := ex.wait(t, 30*time.Second); err != nil || !strings.Contains(ex.out.String(), `"userName":"user-after"`) {
		t.Fatalf("node subscribe.mjs ended (%v) without reading the event stored once the relay was up; printed:\n%s%s", err, ex.out.String(), ex.stderr.String())
	}
}

// TestJavaScriptExampleRestartKeepsEachResourcesOrder: the README's
// JavaScript subscriber is "the same" as the Go one, which, stopped,
// "drains its consumption: the events it had pulled and not yet handled
// ... go to its handler first; stopped with them unhandled, they would
// come back only after ack_wait, behind later events of the same
// resources". A service running subscribe.mjs is stopped with SIGTERM
// (systemd, Kubernetes, docker stop) while it works through a backlog and
// started again at once: each resource's events must still reach it in
// order, created before updated.
func TestJavaScriptExampleRestartKeepsEachResourcesOrder(t *testing.T) {
	b, seed := exampleSubscriberBus(t)
	const n = 3000
	publishCreatedThenUpdated(t, b, n)
	lines := func(ex *jsExample) []string {
		var out []string
		sc := bufio.NewScanner(strings.NewReader(ex.out.String()))
		for sc.Scan() {
			var ev struct{ Type, UserName string }
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				continue // a line being written
			}
			out = append(out, strings.TrimPrefix(ev.Type, "io.scimrelay.")+" "+ev.UserName)
		}
		return out
	}

	first := startJSExample(t, b.url, seed, 1<<30)
	eventstest.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
		if k := len(lines(first)); k < 10 {
			return fmt.Errorf("printed %d events%s", k, first.stderr.String())
		}
		return nil
	})
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil { // the service is told to stop
		t.Fatal(err)
	}
	if err := first.wait(t, 30*time.Second); err != nil && !strings.Contains(err.Error(), "signal: terminated") {
		t.Fatalf("node subscribe.mjs, stopped: %v\n%s", err, first.stderr.String())
	}
	firstLines := lines(first)
	if len(firstLines) >= 2*n {
		t.Fatalf("the first run printed all %d events before it was stopped: nothing to check", len(firstLines))
	}
	second := startJSExample(t, b.url, seed, 1<<30)
	// Every event, once at least, within ack_wait and then some.
	var order []string
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		order = append(append([]string(nil), firstLines...), lines(second)...)
		got := map[string]bool{}
		for _, l := range order {
			got[l] = true
		}
		if len(got) < 2*n {
			return fmt.Errorf("%d of %d events printed%s", len(got), 2*n, second.stderr.String())
		}
		return nil
	})
	if wrong := updatedBeforeCreated(order); len(wrong) > 0 {
		t.Fatalf("after a SIGTERM and a restart %d resources' user.updated reached subscribe.mjs before their user.created (first: %v); %d events printed before the stop",
			len(wrong), wrong[0], len(firstLines))
	}
}

// publishCreatedThenUpdated publishes n users' user.created (u0 … u<n-1>),
// then their user.updated: a backlog in which a subscriber stopped midway
// and started again must still see each user's events in order.
func publishCreatedThenUpdated(t *testing.T, b *bus, n int) {
	t.Helper()
	seq := uint64(0)
	for k, a := range []events.Action{events.UserCreated, events.UserUpdated} {
		for i := range n {
			seq++
			msg, err := events.ToMsg(eventstest.Event(t, "acme", a, fmt.Sprintf("u%d", i), seq, uint64(k+1)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.js.PublishMsgAsync(msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing did not complete")
	}
}

// updatedBeforeCreated returns the entries of order ("user.updated X",
// "user.created X") that are a user's update seen before its creation.
func updatedBeforeCreated(order []string) []string {
	created := map[string]bool{}
	var wrong []string
	for i, l := range order {
		a, user, _ := strings.Cut(l, " ")
		switch a {
		case string(events.UserCreated):
			created[user] = true
		case string(events.UserUpdated):
			if !created[user] {
				wrong = append(wrong, fmt.Sprintf("#%d %s", i, l))
			}
		}
	}
	return wrong
}

// TestJavaScriptExampleStopsWhileNATSIsAway: subscribe.mjs, told to stop
// (SIGTERM: systemd, Kubernetes, docker stop) while NATS is away, must
// end: nothing it pulled can be handled or acknowledged then, and before
// the drain on SIGTERM node ended at once.
func TestJavaScriptExampleStopsWhileNATSIsAway(t *testing.T) {
	b, seed := exampleSubscriberBus(t)
	publishUser(t, b.js, "before", 1)
	ex := startJSExample(t, b.url, seed, 1<<30)
	ex.printed(t, "user-before")
	b.js.Conn().Close()
	b.e.Shutdown()
	if err := ex.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ex.wait(t, 20*time.Second); err != nil && strings.Contains(err.Error(), "still running") {
		t.Fatalf("node subscribe.mjs, sent SIGTERM while NATS is away: %v\n%s%s", err, ex.out.String(), ex.stderr.String())
	}
}
