// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/scimrelay/scimrelay/sinks"
)

// maxDeliveryBytes bounds one webhook body. Events carry one resource
// without group members, so this is far more than one needs.
const maxDeliveryBytes = 4 << 20

// extSubjectSeq is the CloudEvents extension that numbers a resource's
// events 1, 2, 3 … (relay/events.ExtSubjectSeq).
const extSubjectSeq = "subjectseq"

// receiver is the webhook endpoint of the bench. It verifies each delivery,
// answers at once, and records what arrived when.
type receiver struct {
	wh  *standardwebhooks.Webhook // nil: signatures are not checked
	now func() time.Time

	srv    *http.Server
	served chan struct{}

	mu       sync.Mutex
	ids      map[string]struct{} // webhook-ids seen
	lastSeq  map[string]uint64   // per subject, the highest subjectseq seen
	arrivals map[eventKey]time.Time
	received int // distinct deliveries, verified and parsed
	requests int // requests verified and parsed (a batch is one)
	dups     int // deliveries of a webhook-id seen before
	outOrder int
	badSig   int
	invalid  int // not a CloudEvent, wrong method, too large
}

var _ http.Handler = (*receiver)(nil)

// newReceiver returns a receiver verifying signatures with secret ("" = none).
func newReceiver(secret string) (*receiver, error) {
	r := &receiver{
		now:      time.Now,
		ids:      map[string]struct{}{},
		lastSeq:  map[string]uint64{},
		arrivals: map[eventKey]time.Time{},
	}
	if secret != "" {
		wh, err := sinks.ParseSecret(secret)
		if err != nil {
			return nil, fmt.Errorf("%w: receiver secret is not a Standard Webhooks secret: %w", ErrInvalidOptions, err)
		}
		r.wh = wh
	}
	return r, nil
}

// startReceiver listens on o.Receiver (or serves o.ReceiverListener).
func startReceiver(o Options) (*receiver, error) {
	r, err := newReceiver(o.ReceiverSecret)
	if err != nil {
		return nil, err
	}
	ln := o.ReceiverListener
	if ln == nil {
		ln, err = net.Listen("tcp", o.Receiver)
		if err != nil {
			return nil, fmt.Errorf("starting the webhook receiver on %s: %w", o.Receiver, err)
		}
	}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	r.served = make(chan struct{})
	go func() {
		defer close(r.served)
		_ = r.srv.Serve(ln) // returns ErrServerClosed on stop
	}()
	return r, nil
}

// stop shuts the receiver's server down, letting deliveries in progress end.
func (r *receiver) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		_ = r.srv.Close()
	}
	<-r.served
}

// ServeHTTP takes one delivery: Standard Webhooks signature over the raw
// body, then a CloudEvent in binary (ce-* headers, JSON data as body) or
// structured mode (application/cloudevents+json).
func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	arrived := r.now()
	if req.Method != http.MethodPost {
		r.count(&r.invalid)
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "deliveries are POSTs", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxDeliveryBytes))
	if err != nil {
		r.count(&r.invalid)
		status := http.StatusBadRequest
		if errors.As(err, new(*http.MaxBytesError)) {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "reading delivery: "+err.Error(), status)
		return
	}
	if r.wh != nil {
		if err := r.wh.Verify(body, req.Header); err != nil {
			r.count(&r.badSig)
			http.Error(w, "verifying signature: "+err.Error(), http.StatusUnauthorized)
			return
		}
	}
	ds, err := parseDeliveries(req.Header, body)
	if err != nil {
		r.count(&r.invalid)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.requests++
	for _, d := range ds {
		r.recordLocked(d, arrived)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) count(n *int) {
	r.mu.Lock()
	*n++
	r.mu.Unlock()
}

// delivery is what the receiver keeps of one webhook.
type delivery struct {
	id      string // webhook-id, else the event id
	subject string
	seq     uint64 // 0 = no usable subjectseq
	key     eventKey
}

// parseDeliveries reads the CloudEvents of a request whose body was read
// (sinks.ReadDelivery): one, or a batch taken in order. A batch's events
// are told apart by their own ids (its webhook-id names the request); a
// single event's by its webhook-id.
func parseDeliveries(h http.Header, body []byte) ([]delivery, error) {
	es, err := sinks.ReadDelivery(h, body)
	if err != nil {
		return nil, err
	}
	batch := sinks.IsBatch(h)
	out := make([]delivery, 0, len(es))
	for i := range es {
		id := h.Get(standardwebhooks.HeaderWebhookID)
		if batch {
			id = es[i].ID()
		}
		d, err := deliveryOf(&es[i], id)
		if err != nil {
			if batch {
				return nil, fmt.Errorf("event %d of the batch: %w", i, err)
			}
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// deliveryOf is what the receiver keeps of event e, known by id ("" = the
// event's id).
func deliveryOf(e *event.Event, id string) (delivery, error) {
	d := delivery{id: id, subject: e.Subject()}
	if d.id == "" {
		d.id = e.ID()
	}
	if v, ok := e.Extensions()[extSubjectSeq]; ok {
		if n, err := strconv.ParseUint(fmt.Sprint(v), 10, 64); err == nil {
			d.seq = n
		}
	}
	// Subjects are Users/<id> or Groups/<id>.
	_, id, ok := strings.Cut(e.Subject(), "/")
	if !ok {
		id = e.Subject()
	}
	d.key = eventKey{typ: e.Type(), id: id}
	if strings.HasSuffix(e.Type(), ".member_added") || strings.HasSuffix(e.Type(), ".member_removed") {
		var data struct {
			Member struct {
				Value string `json:"value"`
			} `json:"member"`
		}
		if err := json.Unmarshal(e.Data(), &data); err != nil {
			return delivery{}, fmt.Errorf("reading the member of %s event %s: %w", e.Type(), e.ID(), err)
		}
		d.key.member = data.Member.Value
	}
	return d, nil
}

func (r *receiver) recordLocked(d delivery, arrived time.Time) {
	if _, seen := r.ids[d.id]; seen {
		// An at-least-once redelivery: not an ordering problem.
		r.dups++
		return
	}
	r.ids[d.id] = struct{}{}
	r.received++
	if d.seq > 0 {
		if d.seq < r.lastSeq[d.subject] {
			r.outOrder++
		} else {
			r.lastSeq[d.subject] = d.seq
		}
	}
	if _, ok := r.arrivals[d.key]; !ok {
		r.arrivals[d.key] = arrived
	}
}

// drain waits until every expected event has arrived, timeout has passed
// since the call, or ctx is done.
func (r *receiver) drain(ctx context.Context, a *acks, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if r.allArrived(a) || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *receiver) allArrived(a *acks) bool {
	r.mu.Lock()
	received := r.received
	r.mu.Unlock()
	if received < a.len() {
		return false // cheap: no copy of the acks until it can be true
	}
	want := a.snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range want {
		if _, ok := r.arrivals[k]; !ok {
			return false
		}
	}
	return true
}

// stats compares what arrived with what the cycle caused; start is when
// the cycle began.
func (r *receiver) stats(a *acks, start time.Time) *EventStats {
	want := a.snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &EventStats{
		Expected: len(want), Received: r.received, Duplicated: r.dups, OutOfOrder: r.outOrder,
		SignatureFailures: r.badSig, Invalid: r.invalid, SignaturesVerified: r.wh != nil,
		Requests: r.requests,
	}
	var last time.Time
	byType := map[string]*TypeStats{}
	typeStats := func(typ string) *TypeStats {
		t := byType[typ]
		if t == nil {
			t = &TypeStats{Type: typ}
			byType[typ] = t
		}
		return t
	}
	lat := make([]time.Duration, 0, len(want))
	for k, acked := range want {
		t := typeStats(k.typ)
		t.Expected++
		arrived, ok := r.arrivals[k]
		if !ok {
			s.Missing++
			t.Missing++
			continue
		}
		t.Received++
		if arrived.After(last) {
			last = arrived
		}
		// A webhook can beat the SCIM response to the bench; that is 0, not negative.
		lat = append(lat, max(arrived.Sub(acked), 0))
	}
	for k := range r.arrivals {
		if _, ok := want[k]; !ok {
			s.Unexpected++
			typeStats(k.typ).Unexpected++
		}
	}
	s.Latency = latencyOf(lat)
	if s.Missing == 0 && !last.IsZero() {
		s.CaughtUp = last.Sub(start)
	}
	for _, t := range byType {
		s.ByType = append(s.ByType, *t)
	}
	slices.SortFunc(s.ByType, func(a, b TypeStats) int { return strings.Compare(a.Type, b.Type) })
	return s
}
