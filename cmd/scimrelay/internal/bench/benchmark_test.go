// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// BenchmarkReceiverDelivery measures one signed binary-mode delivery through
// the receiver's handler: verification, CloudEvent parsing, bookkeeping.
func BenchmarkReceiverDelivery(b *testing.B) {
	secret := newSecret(b)
	r, err := newReceiver(secret)
	if err != nil {
		b.Fatal(err)
	}
	wh, _ := standardwebhooks.NewWebhook(secret)
	h, body := craftedEvent("e", "group.member_added", "Groups/g1", "1", "u1", false)
	now := time.Now()
	i := 0
	for b.Loop() {
		i++
		id := "msg_" + strconv.Itoa(i)
		sig, _ := wh.Sign(id, now, body)
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header = h.Clone()
		req.Header.Set(standardwebhooks.HeaderWebhookID, id)
		req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
		req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != http.StatusNoContent {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkLatencyOf measures exact percentiles over a 10,000-user cycle's
// worth of latencies.
func BenchmarkLatencyOf(b *testing.B) {
	src := make([]time.Duration, 50_000)
	for i := range src {
		src[i] = time.Duration((i*7919)%50_000) * time.Microsecond
	}
	ds := make([]time.Duration, len(src))
	for b.Loop() {
		copy(ds, src)
		latencyOf(ds)
	}
}

// BenchmarkCycleBaseline runs a 1,000-user cycle against the minimal
// handler: the bench's own cost per request, and the loopback ceiling.
func BenchmarkCycleBaseline(b *testing.B) {
	srv := httptest.NewServer(baselineHandler())
	defer srv.Close()
	o, err := Options{URL: srv.URL + "/scim/v2/b", Users: 1000, Groups: 10, MembersPerGroup: 100, Concurrency: 8}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	var reqs, errs int
	var wall time.Duration
	for b.Loop() {
		c := newCycle(o, o.URL, nil, false)
		if err := c.run(context.Background()); err != nil {
			b.Fatal(err)
		}
		_, total := c.rec.stats(c.end.Sub(c.start))
		reqs += total.Count
		errs += total.ErrorCount()
		wall += c.end.Sub(c.start)
		c.close()
	}
	if errs > 0 {
		b.Fatalf("%d errors against the baseline handler", errs)
	}
	b.ReportMetric(float64(reqs)/wall.Seconds(), "req/s")
}
