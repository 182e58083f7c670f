// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
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
	// The subscriber's nkey, and its private inbox prefix.
	nc, err := nats.Connect(natsURL, nkey, nats.CustomInboxPrefix("_INBOX_billing-users"))
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
	dir, _ := filepath.Abs("../../docs/examples/js")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the JavaScript example needs it")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "nats")); err != nil {
		t.Skip("docs/examples/js has no node_modules: run npm ci --prefix docs/examples/js")
	}
	b, seed := examplesBus(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "subscribe.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NATS_URL="+b.url, "SEED_FILE="+seed, "LIMIT=2")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node subscribe.mjs: %v\n%s%s", err, out, stderr)
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
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
