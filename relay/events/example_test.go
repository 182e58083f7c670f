package events_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// subscribe is what the README shows a service doing: a durable consumer of
// one tenant's user events, reading each CloudEvent from the NATS message.
// The README's code block is this function's body (TestREADMEExample checks).
func subscribe(ctx context.Context, natsURL string, handle func(action events.Action, d events.Data)) error {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// A durable consumer remembers where it got to across restarts.
	cons, err := js.CreateOrUpdateConsumer(ctx, "SCIMRELAY", jetstream.ConsumerConfig{
		Durable:       "billing-users",
		FilterSubject: "scimrelay.acme.user.>", // scimrelay.<tenant>.<kind>.<action>
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
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

func TestSubscribeExample(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	go func() {
		_ = subscribe(ctx, eventstest.URL(s), func(a events.Action, d events.Data) { got <- fmt.Sprintf("%s %s", a, d.ID) })
	}()
	for _, a := range []events.Action{events.UserCreated, events.GroupCreated, events.UserDeactivated} {
		msg, err := events.ToMsg(newEvent(t, a, 1, 1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"user.created", "user.deactivated"} {
		select {
		case g := <-got:
			if !strings.HasPrefix(g, want) {
				t.Fatalf("got %s, want %s (group events are filtered out)", g, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s event reached the subscriber", want)
		}
	}
}

// TestREADMEExample keeps the README's subscriber example identical to the
// code above, which compiles and runs.
func TestREADMEExample(t *testing.T) {
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
		t.Errorf("README.md does not contain the subscriber example as it is in relay/events/example_test.go; copy it over:\n%s", fn)
	}
}
