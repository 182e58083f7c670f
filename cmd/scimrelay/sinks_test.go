// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

const sinkSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hook is a webhook receiver that verifies every delivery with the official
// Standard Webhooks library.
type hook struct {
	*httptest.Server
	t     testing.TB
	mu    sync.Mutex
	types []string // ce-type of each verified delivery, in arrival order
	// requests holds the Content-Type of each verified request, bodies
	// its body as it came.
	requests []string
	bodies   []string
	at       map[string]time.Time
	ids      map[string]int // deliveries per event id
	// Order per resource: the highest subjectseq answered 2xx per subject,
	// and the first event that arrived before its predecessor was answered.
	answered  map[string]uint64
	violation string
	latency   time.Duration // how long the receiver takes to answer
}

// goneHook is a hook that answers 410 Gone, permanent, while gone is true,
// as it starts.
func goneHook(t testing.TB) (h *hook, gone *atomic.Bool) {
	h, gone = refusingHook(t, http.StatusGone)
	gone.Store(true)
	return h, gone
}

// refusingHook is a hook that answers status while refusing is true (it
// starts false).
func refusingHook(t testing.TB, status int) (h *hook, refusing *atomic.Bool) {
	h, refusing = newHook(t), &atomic.Bool{}
	receiver := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refusing.Load() {
			w.WriteHeader(status)
			return
		}
		receiver.ServeHTTP(w, r)
	})
	return h, refusing
}

func newHook(t testing.TB) *hook {
	h := &hook{t: t, at: map[string]time.Time{}, ids: map[string]int{}, answered: map[string]uint64{}}
	wh, err := standardwebhooks.NewWebhook(sinkSecret)
	if err != nil {
		t.Fatal(err)
	}
	schemas := eventstest.Schemas(t) // on the test goroutine: it may call t.Fatal
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("signature rejected by the Standard Webhooks library: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		// Binary or structured mode, or a batch of structured events.
		es, err := sinks.ReadDelivery(r.Header, body)
		if err != nil {
			t.Errorf("not a CloudEvent: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ct := r.Header.Get("Content-Type")
		if !strings.HasPrefix(ct, "application/cloudevents+json") && !strings.HasPrefix(ct, "application/cloudevents-batch+json") {
			if err := schemas.CheckWebhookHeaders(r.Header); err != nil {
				t.Error(err)
			}
		}
		h.mu.Lock()
		h.requests = append(h.requests, ct)
		h.bodies = append(h.bodies, string(body))
		next := map[string]uint64{} // within this request, per subject
		for _, e := range es {
			// What the webhook gets matches the contract (relay/events/schema).
			if err := schemas.CheckEvent(e); err != nil {
				t.Error(err)
			}
			seq, _ := events.SubjectSeq(e)
			h.types = append(h.types, e.Subject()+" "+strings.TrimPrefix(e.Type(), "io.scimrelay."))
			h.ids[e.ID()]++
			if _, seen := h.at[e.Subject()]; !seen {
				h.at[e.Subject()] = time.Now()
			}
			cur, ok := next[e.Subject()]
			if !ok {
				cur = h.answered[e.Subject()]
			}
			if seq > cur+1 && h.violation == "" {
				h.violation = fmt.Sprintf("%s: event %d arrived before %d was answered", e.Subject(), seq, cur+1)
			}
			next[e.Subject()] = max(cur, seq)
		}
		latency := h.latency
		h.mu.Unlock()
		time.Sleep(latency) // the receiver's own latency, not a wait for anything
		h.mu.Lock()
		for subject, seq := range next {
			h.answered[subject] = max(h.answered[subject], seq)
		}
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

// distinct returns how many different events arrived.
func (h *hook) distinct() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ids)
}

// orderViolation returns the first event that overtook its predecessor, "" when none did.
func (h *hook) orderViolation() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.violation
}

// repeated returns the events that arrived more than once.
func (h *hook) repeated() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.ids {
		if c > 1 {
			n++
		}
	}
	return n
}

func (h *hook) received() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.types...)
}

func withSink(cfg *config.Config, name, url string, edit func(*config.Sink)) {
	s := config.Sink{Name: name, Type: "webhook", URL: url, Secret: sinkSecret, Format: "binary",
		Timeout: config.Duration(5 * time.Second), AllowPrivate: true, Concurrency: 16}
	if edit != nil {
		edit(&s)
	}
	cfg.Sinks = append(cfg.Sinks, s)
}

// TestWebhooksEndToEnd provisions through SCIM and checks what two sinks
// receive: signed deliveries (the official library verifies them), each
// sink's event and tenant filters, per-resource order.
func TestWebhooksEndToEnd(t *testing.T) {
	all, usersOnly, batched := newHook(t), newHook(t), newHook(t)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "all", all.URL, nil)
	withSink(cfg, "batched", batched.URL, func(s *config.Sink) {
		s.Format = ""
		s.Batch = &config.SinkBatch{MaxEvents: 10, MaxWait: config.Duration(20 * time.Millisecond)}
	})
	withSink(cfg, "users", usersOnly.URL, func(s *config.Sink) {
		s.Events = []string{"user.*"}
		s.Tenants = []string{"acme"}
		s.Format = "structured"
	})
	p := startRelay(t, cfg, roleAll)
	uid := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann","active":true}`).want(t, 201).str("id")
	gid := p.scim("acme", acmeToken, "POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g","members":[{"value":%q}]}`, uid)).want(t, 201).str("id")
	p.scim("acme", acmeToken, "PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`).want(t, 200)
	p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`).want(t, 201)
	p.scim("acme", acmeToken, "DELETE", "/Users/"+uid, "").want(t, 204)

	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if a, u, b := len(all.received()), len(usersOnly.received()), len(batched.received()); a != 7 || u != 3 || b != 7 {
			return fmt.Errorf("sink all got %d of 7, sink users got %d of 3, sink batched %d of 7", a, u, b)
		}
		return nil
	})
	if v := batched.orderViolation(); v != "" {
		t.Error(v)
	}
	batched.mu.Lock()
	for _, ct := range batched.requests {
		if !strings.HasPrefix(ct, "application/cloudevents-batch+json") {
			t.Errorf("the batched sink sent %s", ct)
		}
	}
	batched.mu.Unlock()
	perSubject := map[string][]string{}
	for _, r := range all.received() {
		subject, typ, _ := strings.Cut(r, " ")
		perSubject[subject] = append(perSubject[subject], typ)
	}
	if got := strings.Join(perSubject["Users/"+uid], ","); got != "user.created,user.deactivated,user.deleted" {
		t.Errorf("user events in order: %s", got)
	}
	if got := strings.Join(perSubject["Groups/"+gid], ","); got != "group.created,group.member_added,group.member_removed" {
		t.Errorf("group events in order: %s", got)
	}
	if v := all.orderViolation(); v != "" {
		t.Error(v)
	}
	got := usersOnly.received()
	sort.Strings(got)
	if strings.Join(got, ",") != "Users/"+uid+" user.created,Users/"+uid+" user.deactivated,Users/"+uid+" user.deleted" {
		t.Errorf("the filtered sink got %v", got)
	}
}

// BenchmarkAckToWebhook measures the time from a SCIM POST's 201 to its
// user.created webhook arriving, at 500 writes/s, fsync on.
func BenchmarkAckToWebhook(b *testing.B) {
	h := newHook(b)
	cfg := testConfig(b, b.TempDir())
	withSink(cfg, "bench", h.URL, nil)
	p := startRelay(b, cfg, roleAll)
	// Steady state: the worker has taken its partitions.
	eventstest.CheckFor(b, 10*time.Second, 10*time.Millisecond, func() error { return p.srv.sinks.Ready(context.Background()) })
	const rate, n = 500, 2500
	acked := make(map[string]time.Time, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.ResetTimer()
	for i := 0; i < n; i++ {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", p.scimURL+"/scim/v2/acme/Users", strings.NewReader(fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d"}`, i)))
			req.Header.Set("Authorization", "Bearer "+acmeToken)
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			loc := res.Header.Get("Location")
			res.Body.Close()
			mu.Lock()
			acked["Users/"+loc[strings.LastIndexByte(loc, '/')+1:]] = time.Now()
			mu.Unlock()
		}()
	}
	wg.Wait()
	eventstest.CheckFor(b, time.Minute, 10*time.Millisecond, func() error {
		if got := len(h.received()); got < n {
			return fmt.Errorf("%d of %d webhooks", got, n)
		}
		return nil
	})
	b.StopTimer()
	h.mu.Lock()
	var lat []time.Duration
	for subject, at := range acked {
		lat = append(lat, max(0, h.at[subject].Sub(at)))
	}
	h.mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// TestStructuredBodiesAreVerifiedAsSent holds README's Signatures
// promise: a structured body writes &, < and > as \u0026, \u003c and
// \u003e, so JSON parsed and written again (as JSON.stringify writes it)
// is not the bytes signed and fails verification; the body as it came
// verifies.
func TestStructuredBodiesAreVerifiedAsSent(t *testing.T) {
	var mu sync.Mutex
	var body []byte
	var header http.Header
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if body == nil {
			body, header = b, r.Header.Clone()
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", rc.URL, func(s *config.Sink) { s.Format = "structured" })
	p := startRelay(t, cfg, roleAll)
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann&co<1>@example.com"}`).want(t, 201)
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if body == nil {
			return fmt.Errorf("no delivery yet")
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	wh, err := standardwebhooks.NewWebhook(sinkSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(body, header); err != nil {
		t.Fatalf("the body as it came does not verify: %v", err)
	}
	if !strings.Contains(string(body), `ann\u0026co\u003c1\u003e@example.com`) {
		t.Fatalf("the structured body does not write &, < and > escaped: %s", body)
	}
	var parsed any
	if err := json.Unmarshal(body, &parsed); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	enc := json.NewEncoder(&again)
	enc.SetEscapeHTML(false) // as JSON.stringify writes
	if err := enc.Encode(parsed); err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(bytes.TrimSuffix(again.Bytes(), []byte("\n")), header); err == nil {
		t.Fatal("JSON parsed and written again verified")
	}
}

// TestEventsWriteAmpersandsAndAnglesAsSent holds the rest of that
// promise: binary and batch bodies write &, < and > as they are. The
// resource did; the event's externalId, the changes' old and new values
// and a member's fields were written as \u0026, \u003c and \u003e (until
// 2026-12-07), on NATS too, so a change of a value full of them grew six
// times: a 100 KiB title's change was refused 413 by a NATS taking its
// default max_payload (1 MiB), which README, Events, says only a NATS set
// lower than about 800 KiB sees.
func TestEventsWriteAmpersandsAndAnglesAsSent(t *testing.T) {
	binary, batch := newHook(t), newHook(t)
	ns := eventstest.RunServerWith(t, t.TempDir(), -1, nil) // nats-server's default max_payload
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = eventstest.URL(ns)
	withSink(cfg, "binary", binary.URL, nil)
	withSink(cfg, "batch", batch.URL, func(s *config.Sink) {
		s.Format = ""
		s.Batch = &config.SinkBatch{MaxEvents: 10, MaxWait: config.Duration(20 * time.Millisecond)}
	})
	p := startRelay(t, cfg, roleAll)
	const user = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],`
	id := p.scim("acme", acmeToken, "POST", "/Users", user+`"userName":"ann","externalId":"e&1","displayName":"R&D <Ann>","title":"a"}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "PATCH", "/Users/"+id, `{`+patchSchema+`,"Operations":[{"op":"replace","path":"title","value":"<&>"}]}`).want(t, 200)
	p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g","members":[{"value":"`+id+`"}]}`).want(t, 201)
	big := p.scim("acme", acmeToken, "POST", "/Users", user+`"userName":"big","title":"`+strings.Repeat("&", 100<<10)+`"}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "PATCH", "/Users/"+big, `{`+patchSchema+`,"Operations":[{"op":"replace","path":"title","value":"`+strings.Repeat("<", 100<<10)+`"}]}`).want(t, 200)
	for name, h := range map[string]*hook{"binary": binary, "batch": batch} {
		eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
			if n := h.distinct(); n < 6 {
				return fmt.Errorf("sink %s got %d of 6 events", name, n)
			}
			return nil
		})
		h.mu.Lock()
		bodies := strings.Join(h.bodies, "\n")
		h.mu.Unlock()
		for _, want := range []string{`"externalId":"e&1"`, `"new":"<&>"`, `"display":"R&D <Ann>"`} {
			if !strings.Contains(bodies, want) {
				t.Errorf("%s: no %s in what came", name, want)
			}
		}
		for _, escaped := range []string{`\u0026`, `\u003c`, `\u003e`} {
			if strings.Contains(bodies, escaped) {
				t.Errorf("%s: a body writes %s", name, escaped)
			}
		}
	}
}

// TestReceiveTakesAStructuredDeliveryOfAnyEventTheRelayTakes: scimrelay
// receive (sinks.NewReceiver) answers 204 to a delivery it verified. A
// user whose title holds 1.5 MiB of '&' is an event of ~1.5 MiB, within
// the relay's 8 MiB; a structured sink writes each '&' as \u0026, a body
// of 9 MiB, and the receiver, which took 8 MiB, answered 413: the sink
// dead-lettered a genuine event (a review of the receivers). A SCIM
// request can no longer make a user that large (relay.MaxResourceBytes);
// an earlier release's event in the stream can be.
func TestReceiveTakesAStructuredDeliveryOfAnyEventTheRelayTakes(t *testing.T) {
	var mu sync.Mutex
	var statuses []int
	var handled int
	h, err := sinks.NewReceiver(sinkSecret, func(event.Event) {
		mu.Lock()
		handled++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	var size int
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		mu.Lock()
		statuses = append(statuses, rec.Code)
		size = int(r.ContentLength)
		mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
	}))
	t.Cleanup(rc.Close)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", rc.URL+"/h", func(s *config.Sink) {
		s.Format = "structured"
		// Verifying 1.5 MiB under -race on a loaded machine took over
		// the default 5 s: the attempt was cut off and retried past the
		// wait (CI, 2026-12-05).
		s.Timeout = config.Duration(time.Minute)
	})
	// The POST of a 1.5 MiB title, under -race and a loaded machine (the
	// test took 86 s): write_timeout's 60 s would cut its answer.
	cfg.Limits.WriteTimeout = config.Duration(10 * time.Minute)
	p := startRelay(t, cfg, roleAll)
	title := strings.Repeat("&", 1536<<10)
	publishUserEvent(t, p, events.UserCreated, "ann", title, "", "")
	eventstest.CheckFor(t, 2*time.Minute, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(statuses) == 0 {
			return fmt.Errorf("no delivery yet")
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if handled != 1 {
		t.Fatalf("scimrelay receive answered %v to the structured delivery of a %d KiB event (request body %d bytes), handled %d events, want 204 and 1", statuses, len(title)>>10, size, handled)
	}
}

// TestSinksListWithNATSAnsweringLate: with NATS answering every request a
// quarter of a second late, `sinks list` of eight sinks answers within
// README's 5 s: each sink's figures are read at once (sinks'
// TestStatusWithNATSAnsweringLate), and four sinks at a time. One sink
// after another, it took 8 s.
func TestSinksListWithNATSAnsweringLate(t *testing.T) {
	slow := eventstest.NewSlowProxy(t, eventstest.RunServer(t).Addr().String())
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = "nats://" + slow.Addr
	const n = 8
	hooks := make([]*hook, n)
	for i := range hooks {
		hooks[i] = newHook(t)
		withSink(cfg, "s"+strconv.Itoa(i), hooks[i].URL, nil)
	}
	p := startRelay(t, cfg, roleAll)
	config := cliConfig(t, p, adminSecret)
	p.createUser(t, "ann")
	for _, h := range hooks {
		waitDelivered(t, h, 1)
	}

	const late = 250 * time.Millisecond
	slow.SetDelay(late)
	start := time.Now()
	code, out, stderr := cli(t, "sinks", "list", "--json", "--config", config)
	took := time.Since(start)
	if code != exitOK || strings.Count(out, `"attempts_5m":1`) != n {
		t.Fatalf("sinks list --json: exit %d, %s%s", code, out, stderr)
	}
	t.Logf("sinks list of %d sinks took %s with NATS answering %s late", n, took, late)
	if took > 5*time.Second {
		t.Errorf("sinks list of %d sinks took %s with NATS answering %s late, past README's 5 s", n, took, late)
	}
	slow.SetDelay(0) // the relay stops without waiting on it
}

// orderReceiver applies events as README's Order section says: the highest
// subjectseq per mark (subject, or subject and member.value for member
// events), kept after a delete; member events dropped once their group's
// group.deleted is applied; a member not known yet taken from the member
// event, unless its deletion was applied.
type orderReceiver struct {
	mu      sync.Mutex
	marks   map[string]uint64
	gone    map[string]bool            // Users/<id>, Groups/<id> whose delete was applied
	users   map[string]string          // id: userName
	members map[string]map[string]bool // group id: member ids
	trace   []string                   // type and member of each event applied, in order
}

func (o *orderReceiver) apply(typ, subject string, sseq uint64, d events.Data) {
	o.mu.Lock()
	defer o.mu.Unlock()
	mark := subject
	member := typ == "group.member_added" || typ == "group.member_removed"
	if member {
		mark += " " + d.Member.Value
	}
	if sseq <= o.marks[mark] || member && o.gone[subject] {
		return
	}
	o.marks[mark] = sseq
	o.trace = append(o.trace, typ)
	switch typ {
	case "user.created", "user.updated":
		var u struct{ UserName string }
		_ = json.Unmarshal(d.Resource, &u)
		o.users[d.ID] = u.UserName
	case "user.deleted":
		delete(o.users, d.ID)
		o.gone[subject] = true
	case "group.deleted":
		delete(o.members, d.ID)
		o.gone[subject] = true
	case "group.member_added":
		if _, known := o.users[d.Member.Value]; d.Member.Type == "User" && !known && !o.gone["Users/"+d.Member.Value] {
			o.users[d.Member.Value] = d.Member.UserName // a member not known yet
		}
		if o.members[d.ID] == nil {
			o.members[d.ID] = map[string]bool{}
		}
		o.members[d.ID][d.Member.Value] = true
	case "group.member_removed":
		delete(o.members[d.ID], d.Member.Value)
	}
}

// TestReceiverKeepsNoDeletedMember: a group's events held back behind a
// failure reach the receiver after the user.deleted of a member they add
// and remove. A receiver that takes an unknown member from a member event
// would make the deleted user again, for good; one that keeps the deleted
// user's mark does not.
func TestReceiverKeepsNoDeletedMember(t *testing.T) {
	o := &orderReceiver{marks: map[string]uint64{}, gone: map[string]bool{}, users: map[string]string{}, members: map[string]map[string]bool{}}
	var mu sync.Mutex
	failing := "" // the subject the receiver fails on
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		es, err := sinks.ReadDelivery(r.Header, body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		f := failing
		mu.Unlock()
		for _, e := range es {
			if f != "" && e.Subject() == f {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		for _, e := range es {
			sseq, _ := events.SubjectSeq(e)
			d, err := events.DataOf(e)
			if err != nil {
				t.Error(err)
			}
			o.apply(strings.TrimPrefix(e.Type(), "io.scimrelay."), e.Subject(), sseq, d)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", srv.URL, nil)
	p := startRelay(t, cfg, roleAll)

	uid := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201).str("id")
	gid := p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g"}`).want(t, 201).str("id")
	mu.Lock()
	failing = "Groups/" + gid
	mu.Unlock()
	p.scim("acme", acmeToken, "PATCH", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[{"value":%q}]}]}`, uid)).want(t, 204)
	p.scim("acme", acmeToken, "DELETE", "/Users/"+uid, "").want(t, 204)
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if !o.gone["Users/"+uid] {
			return fmt.Errorf("user.deleted not applied yet")
		}
		return nil
	})
	mu.Lock()
	failing = ""
	mu.Unlock()
	eventstest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.marks["Groups/"+gid+" "+uid] < 3 {
			return fmt.Errorf("the group's member events not applied yet")
		}
		return nil
	})
	p.scim("acme", acmeToken, "GET", "/Users/"+uid, "").want(t, 404)
	o.mu.Lock()
	defer o.mu.Unlock()
	if slices.Index(o.trace, "user.deleted") > slices.Index(o.trace, "group.member_added") {
		t.Fatalf("the member_added did not come after the user.deleted: %v", o.trace)
	}
	if name, ok := o.users[uid]; ok {
		t.Errorf("the receiver holds user %s (%s), deleted in the relay", uid, name)
	}
	if len(o.members[gid]) != 0 {
		t.Errorf("group %s holds %v in the receiver, none in the relay", gid, o.members[gid])
	}
}
