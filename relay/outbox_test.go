// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// TestQuarantineDamagedMessage: a stored message that is cut short, or
// whose header block is not NATS's, is set aside like an undecodable
// structured row; the rows behind it are published.
func TestQuarantineDamagedMessage(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	create(t, s, "acme", user(t, `"userName":"one"`))
	rows, err := s.ReadOutbox(0, 1)
	if err != nil || len(rows) != 1 {
		t.Fatalf("outbox: %d rows, %v", len(rows), err)
	}
	good := events.Message{Subject: rows[0].Msg.Subject, Data: rows[0].Msg.Data}
	good.Header = []byte("NATS/1.0\r\nce-id: x\r\nNats-Msg-Id: x\r\n\r\n")
	cut := good.Append(nil)
	cut = cut[:len(cut)-len(good.Data)-10] // inside the header block
	bad := good
	bad.Header = []byte("HTTP/1.1 200 OK\r\n\r\n")
	keys := []uint64{injectOutboxRow(t, s, cut), injectOutboxRow(t, s, bad.Append(nil))}
	create(t, s, "acme", user(t, `"userName":"two"`))

	startPublisher(t, s, js, slog.New(slog.DiscardHandler))
	checkOrder(t, streamContents(t, js, 2))
	outboxEmpties(t, s)
	q, err := s.QuarantinedRows(0, 10)
	if err != nil || len(q) != 2 || q[0].Key != keys[0] || q[1].Key != keys[1] {
		t.Fatalf("quarantine: %+v, %v", q, err)
	}
	for _, r := range q {
		if !strings.Contains(r.Reason, "decoding outbox row") || !strings.Contains(r.Reason, "not a stored event message") {
			t.Errorf("row %d: reason %q", r.Key, r.Reason)
		}
	}
}

// TestCommitMetrics: every commit is timed and counted with the writes it
// held, so that stalls and batch sizes show on /metrics.
func TestCommitMetrics(t *testing.T) {
	s, _, _ := openStore(t)
	reg := prometheus.NewRegistry()
	NewMetrics(reg, s, nil)
	var wg sync.WaitGroup
	for i := range 20 {
		u := user(t, fmt.Sprintf(`"userName":"m%d"`, i))
		wg.Go(func() {
			if _, err := s.Create(ctx, "acme", u); err != nil {
				t.Errorf("Create: %v", err)
			}
		})
	}
	wg.Wait()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.Histogram{}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "scimrelay_store_commit_") {
			got[f.GetName()] = f.GetMetric()[0].GetHistogram()
		}
	}
	d, w := got["scimrelay_store_commit_duration_seconds"], got["scimrelay_store_commit_writes"]
	if d == nil || w == nil || d.GetSampleCount() == 0 || d.GetSampleCount() != w.GetSampleCount() || w.GetSampleSum() < 20 {
		t.Fatalf("commit metrics: %v", got)
	}
}

// TestEventTooLargeForTheBus: a change whose event the bus would refuse
// (NATS's max_payload, which serve gives the store) is refused, 413, and
// not committed: neither the change nor an event, and the writes sharing
// its commit go through. Before, it was answered and its event was
// quarantined, a gap in the sequences.
func TestEventTooLargeForTheBus(t *testing.T) {
	s, _, _ := openStore(t)
	s.LimitEvents(64<<10 + eventHeadroom)
	big := strings.Repeat("x", 80<<10)
	_, err := s.Create(ctx, "acme", user(t, `"userName":"ann","title":"`+big+`"`))
	wantErr(t, err, scim.ErrPayloadTooLarge, "too large for its event")
	if n := len(outbox(t, s)); n != 0 {
		t.Fatalf("%d events after a refused create", n)
	}
	bob := create(t, s, "acme", user(t, `"userName":"bob","title":"Guide"`))
	// An update's event carries the resource, and the old and the new
	// value: 20 KiB fits (twice, the old being short); 30 KiB over 20 KiB
	// does not (three times).
	half := strings.Repeat("y", 20<<10)
	if _, err := patch(t, s, "acme", scim.UserResourceType, bob.ID(), `{"op":"replace","path":"title","value":"`+half+`"}`); err != nil {
		t.Fatalf("a change whose event fits: %v", err)
	}
	_, err = patch(t, s, "acme", scim.UserResourceType, bob.ID(), `{"op":"replace","path":"title","value":"`+strings.Repeat("z", 30<<10)+`"}`)
	wantErr(t, err, scim.ErrPayloadTooLarge, "too large for its event")
	got, err := s.Get(ctx, "acme", scim.UserResourceType, bob.ID())
	if err != nil || got.String("title") != half || got.Meta().Version != `W/"2"` {
		t.Fatalf("bob after a refused update: %v, version %s", err, got.Meta().Version)
	}
	if n := len(outbox(t, s)); n != 2 {
		t.Fatalf("%d events, want bob's created and the update that fitted", n)
	}
}
