// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestBatchCommitLostCountsEveryEventSentAgain: the commit of an atomic
// batch of 19 events is lost; the batch goes again under a new id, every
// event stored once, in order, and scimrelay_outbox_resent_total ("events
// sent to JetStream again") counts the 19 (it counted 1).
func TestBatchCommitLostCountsEveryEventSentAgain(t *testing.T) {
	ns := eventstest.RunServer(t)
	s, _, _ := openStore(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	const n = 20 // the head alone, then a batch of 19, its commit the 20th event
	losing := eventstest.NewEventLosingProxy(t, ns.Addr().String(), n-1, 1)
	_, pjs := eventstest.Connect(t, "nats://"+losing.Addr)
	for i := range n {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	logs := &eventstest.Log{}
	var resent atomic.Int64
	runPublisher(t, s, pjs, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		PublisherOptions{AckTimeout: time.Minute, ResendAfter: 200 * time.Millisecond, Resent: func() { resent.Add(1) }})
	outboxEmpties(t, s)
	checkOrder(t, streamContents(t, js, n))
	if losing.Lost() != 1 || !strings.Contains(logs.String(), "sent the batch of events again") {
		t.Fatalf("lost %d copies; no batch sent again?\n%s", losing.Lost(), logs.String())
	}
	if got := resent.Load(); got < n-1 {
		t.Fatalf("a batch of %d events was sent again and Resent counted %d", n-1, got)
	}
}

// TestRowTooLargeMidBatchIsSetAsideAlone: one event in the middle of a
// window is larger than the stream's max_msg_size; JetStream refuses its
// batch whole, naming no event, and the batch's events go one at a time
// until that one is reached: it alone is quarantined, every other stored
// once, in order. So too in the sole publisher's chain, where JetStream
// refuses that event alone and the ones after it by their expected
// sequence.
func TestRowTooLargeMidBatchIsSetAsideAlone(t *testing.T) {
	t.Run("atomic batches", func(t *testing.T) { rowTooLargeMidWindowIsSetAsideAlone(t, false) })
	t.Run("the sole publisher's chain", func(t *testing.T) { rowTooLargeMidWindowIsSetAsideAlone(t, true) })
}

func rowTooLargeMidWindowIsSetAsideAlone(t *testing.T, sole bool) {
	ns := eventstest.RunServer(t)
	s, _, _ := openStore(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	streamOfSmallMessages(t, js)
	for i := range 40 {
		body := fmt.Sprintf(`"userName":"u%d"`, i)
		if i == 20 {
			body += `,"title":"` + strings.Repeat("x", 16<<10) + `"`
		}
		create(t, s, "acme", user(t, body))
	}
	var quarantined atomic.Int32
	runPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{AckTimeout: 5 * time.Second, MaxBackoff: 100 * time.Millisecond, Quarantined: func() { quarantined.Add(1) }, Sole: sole})
	outboxEmpties(t, s)
	var stored []uint64
	for _, e := range streamContents(t, js, 39) {
		stored = append(stored, e.seq)
	}
	for i, seq := range stored { // 1..40 in order, the 21st (the large one) left out
		if want := uint64(i + 1 + i/20); seq != want {
			t.Fatalf("stored in this order: %v; want 1 to 40 but 21", stored)
		}
	}
	if quarantined.Load() != 1 {
		t.Fatalf("%d events quarantined, want the large one alone", quarantined.Load())
	}
}

// TestForgedCommitAnswersLoseNoEvents: a client allowed to subscribe on
// _INBOX.> (the delivery workers' user) watches the answers to the
// publisher's batch commits and aims answers of its own at the reply
// subjects it predicts for the next ones (nc.NewInbox's tokens follow one
// another by a fixed step), saying a batch was stored. The next batch
// holds an event larger than the stream takes, so JetStream refuses it:
// no event may leave the outbox unstored. Before, the commit's reply
// subject was nc.NewInbox() and a forged answer was taken, 9 events
// deleted unstored; the reply subject is private now, and an answer that
// does not name the stream and the batch's id is passed over.
func TestForgedCommitAnswersLoseNoEvents(t *testing.T) {
	ns := eventstest.RunServer(t)
	s, _, _ := openStore(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	streamOfSmallMessages(t, js)
	spy, _ := eventstest.Connect(t, eventstest.URL(ns))
	seen := make(chan string, 100)
	if _, err := spy.Subscribe("_INBOX.>", func(m *nats.Msg) {
		if strings.Contains(string(m.Data), `"batch":`) {
			seen <- strings.TrimPrefix(m.Subject, "_INBOX.")
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	_, pjs := eventstest.Connect(t, eventstest.URL(ns))
	g := &gatedOutbox{Store: s}
	var quarantined atomic.Int32
	runPublisher(t, g, pjs, slog.New(slog.DiscardHandler), PublisherOptions{Window: 10, AckTimeout: 5 * time.Second, MaxBackoff: 100 * time.Millisecond,
		Quarantined: func() { quarantined.Add(1) }})
	committed := 0
	commit10 := func(large int) { // one window: the head and a batch of 9
		g.closed.Store(true)
		defer g.closed.Store(false)
		for i := range 10 {
			body := fmt.Sprintf(`"userName":"u%d"`, committed)
			if i == large {
				body += `,"title":"` + strings.Repeat("x", 16<<10) + `"`
			}
			create(t, s, "acme", user(t, body))
			committed++
		}
	}
	var inboxes []string
	for i := 0; i < 4; i++ {
		commit10(-1)
		outboxEmpties(t, s)
		eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if len(seen) == 0 {
				return fmt.Errorf("no answer to window %d's batch seen on _INBOX.>", i+1)
			}
			return nil
		})
		for len(seen) > 0 {
			inboxes = append(inboxes, <-seen)
		}
	}
	// Aim forged answers at the inboxes the pattern of those seen predicts.
	last := inboxes[len(inboxes)-1]
	var step int64
	for i := 1; i < len(inboxes); i++ {
		if len(inboxes[i]) == 22 && len(inboxes[i-1]) == 22 && inboxes[i][:12] == last[:12] && inboxes[i-1][:12] == last[:12] {
			step = gcd(step, nuidSeq(inboxes[i])-nuidSeq(inboxes[i-1]))
		}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	forged := []byte(`{"stream":"SCIMRELAY","seq":1,"count":9}`)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for j := int64(1); step > 0 && j <= 3; j++ {
				_ = spy.Publish("_INBOX."+nuidWithSeq(last[:12], nuidSeq(last)+j*step), forged)
			}
			if step <= 0 {
				_ = spy.Publish("_INBOX."+last, forged) // nothing to predict: the last seen again
			}
		}
	}()
	defer func() { close(stop); <-done }()
	commit10(5) // its batch holds the large event: JetStream refuses it whole
	outboxEmpties(t, s)
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Msgs + uint64(quarantined.Load()); got != uint64(committed) || quarantined.Load() != 1 {
		t.Fatalf("the outbox is empty; the stream holds %d events and %d are quarantined, of the %d committed: %d deleted from the outbox unstored, on a forged answer to their batch's commit",
			info.State.Msgs, quarantined.Load(), committed, int64(committed)-int64(got))
	}
}

// streamOfSmallMessages makes the event stream take messages of at most
// 8 KiB: an event with a larger attribute is refused for what it is.
func streamOfSmallMessages(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	cfg := events.StreamConfig(events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute})
	cfg.MaxMsgSize = 8 << 10
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// gatedOutbox reads nothing while closed, so that a test's commits share a
// window.
type gatedOutbox struct {
	*Store
	closed atomic.Bool
}

func (g *gatedOutbox) ReadOutbox(after uint64, limit int) ([]OutboxRow, error) {
	if g.closed.Load() {
		return nil, nil
	}
	return g.Store.ReadOutbox(after, limit)
}

const nuidDigits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// nuidSeq decodes a nuid's sequence: its last 10 base-62 digits.
func nuidSeq(s string) int64 {
	var n int64
	for _, c := range s[len(s)-10:] {
		n = n*62 + int64(strings.IndexRune(nuidDigits, c))
	}
	return n
}

// nuidWithSeq is the nuid of prefix (12 digits) and sequence seq.
func nuidWithSeq(prefix string, seq int64) string {
	b := make([]byte, 10)
	for i := 9; i >= 0; i-- {
		b[i] = nuidDigits[seq%62]
		seq /= 62
	}
	return prefix + string(b)
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// TestBatchesKeepToTheServersLimit: a NATS server whose
// jetstream.limits.max_batch_size is below the publisher's batches
// refuses the first as too large, naming its limit; the publisher says so
// once, at Warn, and publishes the rest in batches of that size, every
// event once and in order. It used to take the refusal for what one of
// the batch's events might be, and send each batch's events one at a time,
// each waiting for the one before to be stored, for as long as it ran.
func TestBatchesKeepToTheServersLimit(t *testing.T) {
	const limit, n = 10, 200
	ns := eventstest.RunServerWith(t, t.TempDir(), -1, func(o *server.Options) { o.JetStreamLimits.MaxBatchSize = limit })
	s, _, _ := openStore(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	for i := range n {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	logs := &eventstest.Log{}
	runPublisher(t, s, js, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), PublisherOptions{AckTimeout: 10 * time.Second})
	outboxEmpties(t, s)
	checkOrder(t, streamContents(t, js, n))
	out := logs.String()
	if got := strings.Count(out, "level=WARN msg=\"the NATS server refuses atomic batches of more than this many events"); got != 1 || !strings.Contains(out, fmt.Sprintf("max_batch=%d ", limit)) {
		t.Fatalf("said %d times that the server's limit is lower (want once, max_batch=%d):\n%s", got, limit, out)
	}
	if strings.Contains(out, "they go one at a time") {
		t.Fatalf("events went one at a time:\n%s", out)
	}
}

// TestSolePublisherChainsItsWindows: the sole publisher (the embedded
// server) sends a window's events after its first as a chain by the
// stream's last sequence, not in atomic batches: on a stream that refuses
// atomic batches every event is stored once, in order, without a batch
// refused and its events sent one at a time (what the publisher of a
// shared stream does there), and a run of duplicates at the window's
// start (events kept and sent again after a restart) goes before the
// chain.
func TestSolePublisherChainsItsWindows(t *testing.T) {
	ns := eventstest.RunServer(t)
	s, _, _ := openStore(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	cfg := events.StreamConfig(events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute})
	cfg.AllowAtomicPublish = false
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	const kept, n = 30, 200
	for i := range kept {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"k%d"`, i)))
	}
	// Published, and still in the outbox as if kept across a restart.
	rows, err := s.ReadOutbox(0, kept)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if _, err := js.PublishMsg(ctx, row.Msg); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n - kept {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	logs := &eventstest.Log{}
	var observed atomic.Int64
	runPublisher(t, s, js, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		PublisherOptions{AckTimeout: 10 * time.Second, Sole: true, Observe: func(time.Time) { observed.Add(1) }})
	outboxEmpties(t, s)
	checkOrder(t, streamContents(t, js, n))
	if out := logs.String(); strings.Contains(out, "they go one at a time") || strings.Contains(out, "failed") {
		t.Fatalf("the chain went as atomic batches, or failed:\n%s", out)
	}
	if got := observed.Load(); got != n-kept {
		t.Fatalf("%d events published by this publisher, counted %d", n-kept, got)
	}
}

// TestRaisedBatchLimitIsTakenAfterAReconnect: the publisher kept to a
// server's batch limit of 10 says to raise it; once the server is
// restarted with 1,000 (as the advice asks), the publisher, reconnected,
// sends batches of 1,000 again. It kept to 10 for as long as it ran.
func TestRaisedBatchLimitIsTakenAfterAReconnect(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns := eventstest.RunServerWith(t, dir, port, func(o *server.Options) { o.JetStreamLimits.MaxBatchSize = 10 })
	s, _, _ := openStore(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	for i := range 100 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	logs := &eventstest.Log{}
	p := runPublisher(t, s, js, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), PublisherOptions{AckTimeout: 10 * time.Second})
	outboxEmpties(t, s)
	if !strings.Contains(logs.String(), "raise jetstream.limits.max_batch_size on the server") {
		t.Fatalf("no advice:\n%s", logs.String())
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	eventstest.RunServerWith(t, dir, port, func(o *server.Options) { o.JetStreamLimits.MaxBatchSize = 1000 })
	for i := range 2000 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"v%d"`, i)))
	}
	outboxEmpties(t, s)
	checkOrder(t, streamContents(t, js, 2100))
	p.window.Lock() // maxBatch changes under it
	got := p.maxBatch
	p.window.Unlock()
	if got != maxAtomicBatch {
		t.Fatalf("the server now takes batches of 1,000; the publisher still sends batches of %d", got)
	}
}
