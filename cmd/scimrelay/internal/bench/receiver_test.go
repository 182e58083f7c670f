// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// craftedEvent builds the headers and body of a delivery in binary or
// structured mode.
func craftedEvent(id, typ, subject, seq, member string, structured bool) (http.Header, []byte) {
	data := map[string]any{"tenant": "default", "id": subject[strings.IndexByte(subject, '/')+1:]}
	if member != "" {
		data["member"] = map[string]string{"value": member}
	}
	h := http.Header{}
	if structured {
		body, _ := json.Marshal(map[string]any{
			"specversion": "1.0", "id": id, "source": "/scim/v2/default", "type": "io.scimrelay." + typ,
			"subject": subject, "time": "2026-11-23T09:30:00Z", "subjectseq": seq,
			"datacontenttype": "application/json", "data": data,
		})
		h.Set("Content-Type", "application/cloudevents+json")
		return h, body
	}
	body, _ := json.Marshal(data)
	h.Set("Content-Type", "application/json")
	h.Set("ce-specversion", "1.0")
	h.Set("ce-id", id)
	h.Set("ce-source", "/scim/v2/default")
	h.Set("ce-type", "io.scimrelay."+typ)
	h.Set("ce-subject", subject)
	h.Set("ce-time", "2026-11-23T09:30:00Z")
	if seq != "" {
		h.Set("ce-subjectseq", seq)
	}
	return h, body
}

// signingReceiver serves a receiver with a new secret and returns it with
// the library's signer of that secret.
func signingReceiver(t *testing.T) (*receiver, *httptest.Server, *standardwebhooks.Webhook) {
	t.Helper()
	secret := newSecret(t)
	r, err := newReceiver(secret)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return r, srv, wh
}

// TestReceiverCountsCraftedDeliveries posts deliveries crafted to exercise
// every count, signed with the Standard Webhooks library, in order.
func TestReceiverCountsCraftedDeliveries(t *testing.T) {
	r, srv, good := signingReceiver(t)
	wrong, _ := standardwebhooks.NewWebhook(newSecret(t))
	now := time.Now()

	type step struct {
		name                          string
		id, typ, subject, seq, member string
		structured                    bool
		wh                            *standardwebhooks.Webhook // nil: unsigned
		ts                            time.Time                 // zero: now
		tamper                        bool
		method                        string
		rawBody                       string
		want                          int
	}
	steps := []step{
		{name: "binary, signed", id: "w1", typ: "user.created", subject: "Users/u1", seq: "00000000000000000001", wh: good, want: 204},
		{name: "structured, signed", id: "w2", typ: "user.updated", subject: "Users/u1", seq: "00000000000000000002", structured: true, wh: good, want: 204},
		{name: "signed with another secret", id: "w3", typ: "user.deactivated", subject: "Users/u1", seq: "00000000000000000003", wh: wrong, want: 401},
		{name: "body changed after signing", id: "w4", typ: "user.deactivated", subject: "Users/u1", seq: "00000000000000000003", wh: good, tamper: true, want: 401},
		{name: "unsigned", id: "w5", typ: "user.deactivated", subject: "Users/u1", seq: "00000000000000000003", want: 401},
		{name: "timestamp ten minutes old", id: "w5b", typ: "user.deactivated", subject: "Users/u1", seq: "00000000000000000003", wh: good, ts: now.Add(-10 * time.Minute), want: 401},
		{name: "redelivery of w1", id: "w1", typ: "user.created", subject: "Users/u1", seq: "00000000000000000001", wh: good, want: 204},
		{name: "lower subjectseq after a higher one", id: "w6", typ: "user.updated", subject: "Users/u1", seq: "00000000000000000001", wh: good, want: 204},
		{name: "member added", id: "w7", typ: "group.member_added", subject: "Groups/g1", seq: "1", member: "u1", wh: good, want: 204},
		{name: "member added, seq 3", id: "w8", typ: "group.member_added", subject: "Groups/g1", seq: "3", member: "u2", structured: true, wh: good, want: 204},
		{name: "member added, seq 2 after 3", id: "w9", typ: "group.member_added", subject: "Groups/g1", seq: "2", member: "u3", wh: good, want: 204},
		{name: "another subject's order is its own", id: "w10", typ: "user.created", subject: "Users/u2", seq: "1", wh: good, want: 204},
		{name: "no subjectseq", id: "w11", typ: "user.created", subject: "Users/u4", wh: good, want: 204},
		{name: "not a CloudEvent", id: "w12", wh: good, rawBody: `{"hello":1}`, want: 400},
		{name: "member event without member JSON", id: "w13", typ: "group.member_removed", subject: "Groups/g1", seq: "9", wh: good, rawBody: `not json`, want: 400},
		{name: "GET", method: http.MethodGet, want: 405},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			h, body := craftedEvent(s.id, s.typ, s.subject, s.seq, s.member, s.structured)
			if s.rawBody != "" {
				body = []byte(s.rawBody)
				if s.typ == "" {
					h = http.Header{"Content-Type": {"application/json"}}
				}
			}
			if s.method == http.MethodGet {
				resp, err := http.Get(srv.URL)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != s.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, s.want)
				}
				return
			}
			ts := s.ts
			if ts.IsZero() {
				ts = time.Now()
			}
			signed := body
			if s.tamper {
				signed = append([]byte(nil), body...)
				body = append(append([]byte(nil), body[:len(body)-1]...), []byte(`,"x":1}`)...)
			}
			status, err := postSigned(s.wh, srv.URL, s.id, ts, h, signed, body)
			if err != nil {
				t.Fatal(err)
			}
			if status != s.want {
				t.Fatalf("status %d, want %d", status, s.want)
			}
		})
	}

	acks := newAcks()
	before := now.Add(-time.Second)
	for _, k := range []eventKey{
		{typeUserCreated, "u1", ""}, {typeUserUpdated, "u1", ""}, {typeUserDeactivated, "u1", ""},
		{typeGroupMemberAdded, "g1", "u1"}, {typeGroupMemberAdded, "g1", "u2"}, {typeUserDeleted, "u9", ""},
	} {
		acks.add(k, before)
	}
	got := r.stats(acks, before)
	want := EventStats{
		Expected: 6, Received: 8, Missing: 2, Duplicated: 1, OutOfOrder: 2,
		SignatureFailures: 4, Unexpected: 3, Invalid: 3, SignaturesVerified: true,
	}
	if got.Expected != want.Expected || got.Received != want.Received || got.Missing != want.Missing ||
		got.Duplicated != want.Duplicated || got.OutOfOrder != want.OutOfOrder ||
		got.SignatureFailures != want.SignatureFailures || got.Unexpected != want.Unexpected ||
		got.Invalid != want.Invalid || got.SignaturesVerified != want.SignaturesVerified {
		t.Errorf("stats\n got %+v\nwant %+v", *got, want)
	}
	if got.Latency.P50 < time.Second || got.Latency.Max > time.Minute {
		t.Errorf("latency %+v; the acks were a second before the deliveries", got.Latency)
	}
	byType := map[string]TypeStats{}
	for _, ts := range got.ByType {
		byType[ts.Type] = ts
	}
	if ts := byType[typeGroupMemberAdded]; ts.Expected != 2 || ts.Received != 2 || ts.Unexpected != 1 {
		t.Errorf("member_added %+v", ts)
	}
	if ts := byType[typeUserDeleted]; ts.Expected != 1 || ts.Missing != 1 {
		t.Errorf("user.deleted %+v", ts)
	}
	if r.allArrived(acks) {
		t.Error("allArrived with two events missing")
	}
	if got.Requests != 9 || got.CaughtUp != 0 {
		t.Errorf("requests %d (want 9 verified and parsed), caught up after %s (want 0: events are missing)", got.Requests, got.CaughtUp)
	}
}

// TestReceiverCountsBatches: a batch is verified once and each of its events
// counted in order, by its own id: duplicates, order within and across
// batches, a batch signed for other content refused whole.
func TestReceiverCountsBatches(t *testing.T) {
	r, srv, wh := signingReceiver(t)
	ev := func(id, typ, subject, seq, member string) json.RawMessage {
		_, body := craftedEvent(id, typ, subject, seq, member, true)
		return body
	}
	batch := func(es ...json.RawMessage) []byte {
		b, _ := json.Marshal(es)
		return b
	}
	h := func() http.Header {
		return http.Header{"Content-Type": {"application/cloudevents-batch+json; charset=utf-8"}}
	}
	start := time.Now()
	steps := []struct {
		name   string
		body   []byte
		tamper bool
		want   int
	}{
		{"a user's events and a member", batch(ev("e1", "user.created", "Users/u1", "1", ""), ev("e2", "user.updated", "Users/u1", "2", ""), ev("e3", "group.member_added", "Groups/g1", "1", "u1")), false, 204},
		{"the same batch again", batch(ev("e1", "user.created", "Users/u1", "1", ""), ev("e2", "user.updated", "Users/u1", "2", ""), ev("e3", "group.member_added", "Groups/g1", "1", "u1")), false, 204},
		{"out of order within a batch", batch(ev("e5", "user.created", "Users/u2", "2", ""), ev("e4", "user.deactivated", "Users/u2", "1", "")), false, 204},
		{"signed for other content", batch(ev("e6", "user.created", "Users/u3", "1", "")), true, 401},
		{"not events", []byte(`[{"hello":1}]`), false, 400},
	}
	for _, st := range steps {
		signed := st.body
		if st.tamper {
			signed = batch(ev("e7", "user.created", "Users/u3", "1", ""))
		}
		status, err := postSigned(wh, srv.URL, "batch_"+st.name, time.Now(), h(), signed, st.body)
		if err != nil || status != st.want {
			t.Fatalf("%s: status %d (%v), want %d", st.name, status, err, st.want)
		}
	}
	acks := newAcks()
	for _, k := range []eventKey{{typeUserCreated, "u1", ""}, {typeUserUpdated, "u1", ""}, {typeGroupMemberAdded, "g1", "u1"}, {typeUserCreated, "u2", ""}} {
		acks.add(k, start)
	}
	got := r.stats(acks, start)
	if got.Received != 5 || got.Duplicated != 3 || got.OutOfOrder != 1 || got.SignatureFailures != 1 || got.Invalid != 1 || got.Missing != 0 || got.Unexpected != 1 || got.Requests != 3 {
		t.Errorf("stats %+v", *got)
	}
	if got.CaughtUp <= 0 || got.CaughtUp > time.Minute {
		t.Errorf("caught up after %s", got.CaughtUp)
	}
}

// postSigned signs signed and posts body (they differ to test tampering).
func postSigned(wh *standardwebhooks.Webhook, url, id string, ts time.Time, h http.Header, signed, body []byte) (int, error) {
	if wh != nil {
		sig, err := wh.Sign(id, ts, signed)
		if err != nil {
			return 0, err
		}
		h.Set(standardwebhooks.HeaderWebhookID, id)
		h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
		h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	}
	return post(context.Background(), nil, url, id, ts, h, body)
}

// TestReceiverWithoutSecret accepts unsigned deliveries and says it did not verify.
func TestReceiverWithoutSecret(t *testing.T) {
	r, err := newReceiver("")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	defer srv.Close()
	h, body := craftedEvent("e1", "user.created", "Users/u1", "1", "", false)
	status, err := post(context.Background(), nil, srv.URL, "e1", time.Now(), h, body)
	if err != nil || status != 204 {
		t.Fatalf("status %d, %v", status, err)
	}
	acks := newAcks()
	acks.add(eventKey{typeUserCreated, "u1", ""}, time.Now())
	if !r.allArrived(acks) {
		t.Error("the delivery was not matched by its ce-id")
	}
	if s := r.stats(acks, time.Now().Add(-time.Second)); s.Received != 1 || s.Missing != 0 || s.SignaturesVerified {
		t.Errorf("stats %+v", *s)
	}
}

// TestDrainStopsWhenAllArrived checks that the drain returns as soon as the
// last expected event is in, long before its timeout.
func TestDrainStopsWhenAllArrived(t *testing.T) {
	r, _ := newReceiver("")
	srv := httptest.NewServer(r)
	defer srv.Close()
	acks := newAcks()
	acks.add(eventKey{typeUserCreated, "u1", ""}, time.Now())
	go func() {
		h, body := craftedEvent("e1", "user.created", "Users/u1", "1", "", false)
		_, _ = post(context.Background(), nil, srv.URL, "e1", time.Now(), h, body)
	}()
	start := time.Now()
	r.drain(context.Background(), acks, time.Minute)
	if d := time.Since(start); d > 30*time.Second || !r.allArrived(acks) {
		t.Fatalf("drain returned after %s, all arrived %v", d, r.allArrived(acks))
	}
}
