// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/disk/disktest"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/relay/natsbus/natsbustest"
)

// TestHealedStoreHandlesEachRequestOnce: the embedded server's store
// fills until a stream is stuck on a write error, room comes back, and
// the healer repairs it; afterwards each JetStream API request is handled
// once, as on a relay just started. Restarting the whole of JetStream in
// the server (ShutdownJetStream, EnableJetStream) left nats-server
// 2.15.2's first $JS.API.> dispatcher subscribed next to the new one:
// every request was handled twice, a message deletion answered "no message
// found" as often as not (scimrelay dlq redrive failed), and the
// subscribers' accounts were given a JetStream import of their own.
func TestHealedStoreHandlesEachRequestOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	disktest.MountTmpfs(t, dir, "64m")
	log := slog.New(slog.DiscardHandler)
	audit, auditSeed := newSubscriber(t, "audit", "")
	o := natsbus.Options{Listen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t)), StoreDir: dir}
	e, js := natsbustest.Start(t, o, log, audit)
	healer, err := natsbus.NewStoreHealer(e.Server(), o, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	dlq, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCIMRELAY_DLQ", Subjects: []string{"scimrelay-dlq.>"}})
	if err != nil {
		t.Fatal(err)
	}
	const parked = 40
	for i := range parked {
		if _, err := js.Publish(ctx, fmt.Sprintf("scimrelay-dlq.crm.%d", i), []byte(`{"event":"parked"}`)); err != nil {
			t.Fatal(err)
		}
	}

	// A sink's consumer that has acknowledged the first five, and its
	// bucket of parked resources.
	sink, err := js.CreateOrUpdateConsumer(ctx, "SCIMRELAY_DLQ", jetstream.ConsumerConfig{Durable: "sink", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	first, err := sink.FetchNoWait(5)
	if err != nil {
		t.Fatal(err)
	}
	for m := range first.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "scimrelay-parked-crm"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "Users.u1", []byte("parked")); err != nil {
		t.Fatal(err)
	}

	// The disk fills: a publish fails, and the stream stays stuck on it.
	filler := disktest.Fill(t, dir)
	big := make([]byte, 256<<10)
	for i := 0; healer.WriteError() == nil; i++ {
		if i == 200 {
			t.Fatal("200 publishes on a full disk and no stream is stuck on a write error")
		}
		_, _ = js.Publish(ctx, "scimrelay-dlq.crm.full", big)
	}
	if healed, err := healer.HealStore(ctx); healed || err == nil {
		t.Fatalf("HealStore on a full disk: %v %v, want no restart and why", healed, err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if healed, err := healer.HealStore(ctx); !healed || err != nil {
		t.Fatalf("HealStore with room again: %v %v, want a restart", healed, err)
	}
	if err := healer.WriteError(); err != nil {
		t.Fatalf("after the heal: %v", err)
	}

	// Writes go through again.
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, err := js.Publish(ctx, "scimrelay-dlq.crm.after", []byte(`{"event":"after"}`))
		return err
	})

	// Nothing lost: the sink's position, the parked resource.
	next, err := sink.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if meta, err := next.Metadata(); err != nil || meta.Sequence.Stream != 6 {
		t.Fatalf("the sink's next event after the heal: %+v %v, want stream sequence 6", meta, err)
	}
	if err := next.Nak(); err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "Users.u1"); err != nil || string(e.Value()) != "parked" {
		t.Fatalf("the parked resource after the heal: %v", err)
	}

	// One request, one answer.
	for _, req := range []struct{ subject, body string }{
		{"$JS.API.STREAM.INFO.SCIMRELAY_DLQ", ""},
		{"$JS.API.INFO", ""},
		{"$JS.API.CONSUMER.CREATE.SCIMRELAY_DLQ.redrive", `{"stream_name":"SCIMRELAY_DLQ","config":{"durable_name":"redrive","ack_policy":"explicit"},"action":"create"}`},
	} {
		if n := answers(t, js.Conn(), req.subject, req.body); n != 1 {
			t.Errorf("%s after the heal: %d answers, want 1", req.subject, n)
		}
	}
	// A subscriber's request is answered by the relay alone.
	ac := connectAs(t, e.ClientURL(), "audit", auditSeed)
	if n := answers(t, ac.nc, "$JS.API.INFO", ""); n != 1 {
		t.Errorf("audit's $JS.API.INFO after the heal: %d answers, want 1", n)
	}

	// Each parked event is deleted once, as dlq redrive deletes them. A
	// deletion handled twice is answered by whichever handling answers
	// first ("no message found" as often as not under load), and each
	// handling counts in the account's API total.
	before, err := js.AccountInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for seq := uint64(1); seq <= parked; seq++ {
		if err := dlq.DeleteMsg(ctx, seq); err != nil {
			failed = append(failed, fmt.Sprintf("%d: %v", seq, err))
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d parked events could not be deleted after the heal:\n%s", len(failed), parked, strings.Join(failed, "\n"))
	}
	after, err := js.AccountInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if errs, total := after.API.Errors-before.API.Errors, after.API.Total-before.API.Total; errs != 0 || total > parked+2 {
		t.Errorf("%d deletions after the heal: %d API requests handled, %d of them failed; want at most %d (with the account info requests), none failed",
			parked, total, errs, parked+2)
	}

	// A consumer made after the heal reads, and its ack counts once.
	c, err := js.CreateOrUpdateConsumer(ctx, "SCIMRELAY_DLQ", jetstream.ConsumerConfig{Durable: "after", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "scimrelay-dlq.crm.after"})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got == 0 {
		t.Fatal("the consumer made after the heal read nothing")
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.AckFloor.Stream == 0 {
		t.Fatalf("after acking what it read: %d pending, ack floor %d", info.NumAckPending, info.AckFloor.Stream)
	}
}

// answers sends one request on nc and counts its answers: the first within
// seconds, any other within a while after it.
func answers(t *testing.T, nc *nats.Conn, subject, body string) int {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, []byte(body)); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("%s: no answer: %v", subject, err)
	}
	n := 1
	for {
		// A second answer comes from the same server in the same instant
		// as the first; half a second is many times that.
		if _, err := sub.NextMsg(500 * time.Millisecond); err != nil {
			if !errors.Is(err, nats.ErrTimeout) {
				t.Fatal(err)
			}
			return n
		}
		n++
	}
}
