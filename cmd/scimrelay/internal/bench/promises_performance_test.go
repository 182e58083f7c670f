// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestFailuresNameEveryEventProblem: what --fail-on-errors exits 1 for in
// the cycle, "an event was missing, repeated, out of order or badly
// signed" (and a delivery that is no CloudEvent), each counted by the
// receiver from real deliveries and named in the report's failures. A
// clean run's report names none (TestThrottledRequestsWaitForRetryAfter);
// the CLI exits 1 on any (TestCLIBench, TestBenchFailOnErrorsInEveryMode).
func TestFailuresNameEveryEventProblem(t *testing.T) {
	r, srv, good := signingReceiver(t)
	wrong, _ := standardwebhooks.NewWebhook(newSecret(t))
	start := time.Now()
	for _, d := range []struct {
		id, typ, subject, seq string
		wh                    *standardwebhooks.Webhook
		want                  int
	}{
		{"e1", "user.created", "Users/u1", "1", good, http.StatusNoContent},
		{"e1", "user.created", "Users/u1", "1", good, http.StatusNoContent}, // repeated
		{"e3", "user.deactivated", "Users/u1", "3", good, http.StatusNoContent},
		{"e2", "user.updated", "Users/u1", "2", good, http.StatusNoContent}, // after 3: out of order
		{"e4", "user.created", "Users/u2", "1", wrong, http.StatusUnauthorized},
	} {
		h, body := craftedEvent(d.id, d.typ, d.subject, d.seq, "", false)
		if status, err := postSigned(d.wh, srv.URL, d.id, time.Now(), h, body, body); err != nil || status != d.want {
			t.Fatalf("delivery %s: %d %v, want %d", d.id, status, err, d.want)
		}
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if status, err := postSigned(good, srv.URL, "e5", time.Now(), h, []byte(`{"hello":1}`), []byte(`{"hello":1}`)); err != nil || status != http.StatusBadRequest {
		t.Fatalf("a delivery that is no CloudEvent: %d %v", status, err)
	}
	acks := newAcks()
	for _, k := range []eventKey{{typeUserCreated, "u1", ""}, {typeUserUpdated, "u1", ""}, {typeUserDeactivated, "u1", ""}, {typeUserCreated, "u2", ""}} {
		acks.add(k, start)
	}
	rep := &Report{Events: r.stats(acks, start)}
	failures := strings.Join(rep.Failures(), "; ")
	for _, want := range []string{"1 events missing", "1 events delivered twice", "1 events out of order", "1 signatures that did not verify", "1 deliveries that were not CloudEvents"} {
		if !strings.Contains(failures, want) {
			t.Errorf("the report's failures %q do not say %q", failures, want)
		}
	}
}
