// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestCreateOnlyFromCurrentKey: a subscriber given a new key, with the
// same name and subjects, keeps its account; a creation that reached the
// check through the passer of the old key's configuration (queued before
// the change) is refused, and one through the new key's goes through. A
// client-info header in the request is not read: a sender can write one
// that nats.go reads before the server's.
func TestCreateOnlyFromCurrentKey(t *testing.T) {
	key := func() string {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		return pub
	}
	old := Subscriber{Name: "billing", PublicKey: key()}
	e, nc, js := startWithStream(t, old)
	ctx := t.Context()
	renewed := old
	renewed.PublicKey = key()
	if err := e.SetSubscribers([]Subscriber{renewed}); err != nil {
		t.Fatal(err)
	}
	if accountName(old) != accountName(renewed) {
		t.Fatal("the test needs a change that keeps the account")
	}
	// A creation as it reaches passCreate from sender's passer, with a
	// client-info header claiming the new key.
	create := func(sender Subscriber) string {
		t.Helper()
		ci, _ := json.Marshal(server.ClientInfo{Account: accountName(renewed), User: renewed.PublicKey})
		got, replies := creationMsg(t, nc, nats.Header{server.ClientInfoHdr: {string(ci)}})
		e.passCreate(sender, "$JS.API.CONSUMER.CREATE.SCIMRELAY.billing", got)
		res, err := replies.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return string(res.Data)
	}
	if res := create(old); !strings.Contains(res, "not configured with this key") {
		t.Fatalf("the old key's creation: %s", res)
	}
	if _, err := js.Consumer(ctx, events.StreamName, "billing"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the old key created the consumer: %v", err)
	}
	if res := create(renewed); strings.Contains(res, `"error"`) {
		t.Fatalf("the new key's creation: %s", res)
	}
}

func TestSubjectWithin(t *testing.T) {
	for _, tt := range []struct {
		filter, pattern string
		want            bool
	}{
		{"scimrelay.acme.>", "scimrelay.acme.>", true},
		{"scimrelay.acme.user.>", "scimrelay.acme.>", true},
		{"scimrelay.acme.user.created.u1.3", "scimrelay.acme.>", true},
		{"scimrelay.acme", "scimrelay.acme.>", false},
		{"scimrelay.>", "scimrelay.acme.>", false},
		{"scimrelay.*.user.>", "scimrelay.acme.>", false},
		{"scimrelay.globex.>", "scimrelay.acme.>", false},
		{"scimrelay.acme.user.*.*.*", "scimrelay.*.user.*.*.*", true},
		{"scimrelay.acme.user.*.*.>", "scimrelay.acme.user.*.*.*", true}, // as the permissions admit
		{"scimrelay.acme.user.*.>", "scimrelay.acme.user.*.*.*", false},
		{"scimrelay.acme.group.*.*.*", "scimrelay.acme.user.*.*.*", false},
		{"scimrelay.acme.user.created.u1.3.x", "scimrelay.acme.user.*.*.*", false},
	} {
		if got := subjectWithin(tt.filter, tt.pattern); got != tt.want {
			t.Errorf("subjectWithin(%q, %q) = %v, want %v", tt.filter, tt.pattern, got, tt.want)
		}
	}
}

// TestLateCreationCannotOutliveANarrowing: a consumer creation JetStream
// is slow to do (its API queue busy) is answered to the subscriber within
// createTimeout, but a change of subscribers waits until JetStream has
// done it, so that the change's check deletes the wide consumer. The
// relay used to stop waiting at createTimeout: the creation landed after
// the subscriber had been narrowed, and it read other tenants' events.
func TestLateCreationCannotOutliveANarrowing(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	wide := Subscriber{Name: "billing", PublicKey: pub}
	e, nc, js := startWithStream(t, wide)
	ctx := t.Context()
	// Keep JetStream's API busy for several seconds: creations whose
	// many filters it compares pair by pair (the relay's own, unchecked).
	filters := make([]string, 8000)
	for i := range filters {
		filters[i] = fmt.Sprintf("scimrelay.heavy.%d", i)
	}
	heavy, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	const busy = 4
	for i := range busy {
		body, _ := json.Marshal(server.CreateConsumerRequest{Stream: events.StreamName, Config: server.ConsumerConfig{Durable: fmt.Sprint("heavy", i), FilterSubjects: filters, AckPolicy: server.AckExplicit}})
		if err := nc.PublishRequest(fmt.Sprintf("$JS.API.CONSUMER.CREATE.%s.heavy%d", events.StreamName, i), heavy.Subject, body); err != nil {
			t.Fatal(err)
		}
	}
	// The subscriber's unfiltered creation, queued behind them.
	got, replies := creationMsg(t, nc, nil)
	created := make(chan struct{})
	go func() {
		defer close(created)
		e.passCreate(wide, "$JS.API.CONSUMER.CREATE.SCIMRELAY.billing", got)
	}()
	// Once the creation holds the gate (a reader is in), narrow billing.
	eventstest.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if e.gate.TryLock() {
			e.gate.Unlock()
			return errors.New("the creation does not hold the gate yet")
		}
		return nil
	})
	narrowed := wide
	narrowed.Subjects = "scimrelay.acme.>"
	if err := e.SetSubscribers([]Subscriber{narrowed}); err != nil {
		t.Fatal(err)
	}
	<-created
	if res, err := replies.NextMsg(time.Second); err != nil {
		t.Fatalf("the subscriber was not answered: %v", err)
	} else if !strings.Contains(string(res.Data), "within") && !strings.Contains(string(res.Data), `"config"`) {
		t.Fatalf("the subscriber's answer: %s", res.Data)
	}
	// JetStream's queue drained: every heavy creation answered, then one
	// more request behind them.
	for range busy {
		if _, err := heavy.NextMsg(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := js.Consumer(ctx, events.StreamName, "billing"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the wide consumer of the narrowed billing is there (filter %q): %v", c.CachedInfo().Config.FilterSubject, err)
	}
}

// startWithStream starts an embedded server admitting subscribers, the
// relay's connection to it, and the SCIMRELAY stream.
func startWithStream(t *testing.T, subscribers ...Subscriber) (*Embedded, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	e, err := StartEmbedded(Options{StoreDir: t.TempDir()}, subscribers, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := Connect(Options{}, e, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := events.EnsureStream(t.Context(), js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, log); err != nil {
		t.Fatal(err)
	}
	return e, nc, js
}

// creationMsg returns billing's unfiltered consumer creation, with header,
// as it reaches passCreate, and the subscription its answer arrives on.
func creationMsg(t *testing.T, nc *nats.Conn, header nats.Header) (*nats.Msg, *nats.Subscription) {
	t.Helper()
	in, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Unsubscribe() }()
	replies, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = replies.Unsubscribe() })
	m := nats.NewMsg(in.Subject)
	m.Reply, m.Header = replies.Subject, header
	m.Data = []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing","ack_policy":"explicit"}}`)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	got, err := in.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return got, replies
}
