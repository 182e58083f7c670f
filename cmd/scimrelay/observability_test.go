// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// repeatedKey returns the first key that appears twice in one object of a
// JSON value (at any depth), "" when none does. encoding/json keeps the
// last of two, which is how a repeated key goes unnoticed.
func repeatedKey(line []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	var walk func() (string, error)
	walk = func() (string, error) {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return "", err
				}
				key := k.(string)
				if seen[key] {
					return key, nil
				}
				seen[key] = true
				if dup, err := walk(); dup != "" || err != nil {
					return dup, err
				}
			}
			_, err = dec.Token()
			return "", err
		case json.Delim('['):
			for dec.More() {
				if dup, err := walk(); dup != "" || err != nil {
					return dup, err
				}
			}
			_, err = dec.Token()
			return "", err
		}
		return "", nil
	}
	return walk()
}

func TestRepeatedKey(t *testing.T) {
	for line, want := range map[string]string{
		`{"a":1,"b":{"a":2}}`:                    "",
		`{"sink":"x","msg":"m","sink":"x"}`:      "sink",
		`{"a":[{"b":1,"b":2}]}`:                  "b",
		`{"level":"INFO","err":{"x":1},"err":2}`: "err",
	} {
		if got, err := repeatedKey([]byte(line)); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", line, got, err, want)
		}
	}
}

// startRelayLogging runs a relay of cfg whose log is relay.yaml's JSON at
// debug level, every line kept in the returned log.
func startRelayLogging(t *testing.T, cfg *config.Config) (*relayProc, *eventstest.Log) {
	t.Helper()
	out := &eventstest.Log{}
	cfg.Log = config.Log{Level: "debug", Format: "json"}
	log, err := newLogger(cfg.Log, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	return startRelayWith(t, cfg, roleAll, log, io.Discard), out
}

// TestLogs runs a relay with relay.yaml's JSON log at debug level through
// what makes it talk (SCIM requests good and bad, /Me, a client that hangs
// up mid-body, a sink that fails and one that is gone for good, an admin
// request for an unknown sink) and reads every line back: each is one JSON
// object without a repeated key, and nothing that was expected (a 501, a
// refused delivery, a client gone) is logged at ERROR.
func TestLogs(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	defer failing.Close()
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }))
	defer gone.Close()
	withSink(cfg, "failing", failing.URL, func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(time.Hour)} })
	withSink(cfg, "gone", gone.URL, nil)
	p, out := startRelayLogging(t, cfg)

	p.createUser(t, "ann")
	p.scim("acme", acmeToken, "GET", "/Me", "").want(t, 501)
	p.scim("acme", "wrong-token-0123456789abcdef", "GET", "/Users", "").want(t, 401)
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}`).want(t, 400)
	hangUp(t, p.scimURL, "/scim/v2/acme/Users", acmeToken)
	// A client gone by the time the write starts (its context cancelled):
	// recorded as 499, not a failure of the relay.
	gave, giveUp := context.WithCancel(context.Background())
	giveUp()
	req, _ := http.NewRequestWithContext(gave, "POST", "/scim/v2/acme/Users", strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`))
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	rec := httptest.NewRecorder()
	p.srv.scimHTTP.Handler.ServeHTTP(rec, req)
	if rec.Code != 499 {
		t.Errorf("a request whose client went away: %d %s, want 499", rec.Code, rec.Body)
	}
	req, _ = http.NewRequest("GET", p.adminURL+"/admin/v1/sinks/nope/dlq", nil)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	do(t, req).want(t, 404)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, want := range []string{"delivery failed; will retry", "delivery failed for good; event dead-lettered"} {
			if !strings.Contains(out.String(), want) {
				return fmt.Errorf("no %q in the log yet", want)
			}
		}
		return nil
	})
	p.stop()

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 10 {
		t.Fatalf("only %d log lines:\n%s", len(lines), out.String())
	}
	for _, line := range lines {
		var entry struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("not a JSON log line: %v\n%s", err, line)
			continue
		}
		if dup, err := repeatedKey([]byte(line)); err != nil || dup != "" {
			t.Errorf("key %q repeated (%v): %s", dup, err, line)
		}
		if entry.Level == "ERROR" {
			t.Errorf("logged at ERROR though nothing failed: %s", line)
		}
	}
}

// hangUp starts a SCIM POST, sends part of its body and closes the
// connection, as a client that gives up does.
func hangUp(t *testing.T, base, path, token string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\nContent-Type: application/scim+json\r\nContent-Length: 1000\r\n\r\n{\"schemas\":", path, token)
	time.Sleep(50 * time.Millisecond) // let the handler start reading; not a wait for a result
	_ = conn.Close()
}

// TestMetricsFollowConventions: latency histograms end in
// _duration_seconds, token expiry is an absolute time (the deprecated
// seconds-left gauge beside it until its removal), and the gauges an
// operator alerts on are there: the oldest undelivered event per sink,
// the outbox's oldest row, the relay's streams, dead letters.
func TestMetricsFollowConventions(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	defer failing.Close()
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }))
	defer gone.Close()
	ok := newHook(t)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "failing", failing.URL, func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(time.Hour)} })
	withSink(cfg, "gone", gone.URL, nil)
	withSink(cfg, "ok", ok.URL, nil)
	p := startRelay(t, cfg, roleAll)
	if code, _, stderr := cli(t, "token", "create", "--tenant", "acme", "--expires", "30d", "--config", cliConfig(t, p, adminSecret)); code != exitOK {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	p.createUser(t, "ann")

	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		switch {
		case ok.distinct() < 1:
			return fmt.Errorf("sink ok has not received the event")
		case metric(t, p, "scimrelay_sink_dead_letters", "sink", "gone") != 1:
			return fmt.Errorf("sink gone: %v dead letters", metric(t, p, "scimrelay_sink_dead_letters", "sink", "gone"))
		case metric(t, p, "scimrelay_sink_oldest_undelivered_age_seconds", "sink", "failing") <= 0:
			return fmt.Errorf("sink failing: oldest undelivered event's age not reported yet")
		// The gauges are read from NATS every 5 s: the receiver has the
		// event a moment before the worker's acknowledgement lands, and a
		// read between the two says it waits until the next.
		case metric(t, p, "scimrelay_sink_oldest_undelivered_age_seconds", "sink", "ok") != 0:
			return fmt.Errorf("sink ok delivered everything but its oldest undelivered event is %v s old", metric(t, p, "scimrelay_sink_oldest_undelivered_age_seconds", "sink", "ok"))
		}
		return nil
	})
	if n := metric(t, p, "scimrelay_stream_messages", "stream", "SCIMRELAY"); n != 1 {
		t.Errorf("scimrelay_stream_messages{stream=SCIMRELAY} = %v, want 1", n)
	}
	if n := metric(t, p, "scimrelay_stream_bytes", "stream", "SCIMRELAY"); n <= 0 {
		t.Errorf("scimrelay_stream_bytes{stream=SCIMRELAY} = %v", n)
	}
	if at := metric(t, p, "scimrelay_token_expiry_timestamp_seconds", "tenant", "acme", "kind", "token"); at < float64(time.Now().Add(29*24*time.Hour).Unix()) || at > float64(time.Now().Add(31*24*time.Hour).Unix()) {
		t.Errorf("scimrelay_token_expiry_timestamp_seconds = %v, want about 30 days from now (unix seconds)", at)
	}
	// Deprecated, still exported for one release: seconds left.
	if left := metric(t, p, "scimrelay_token_expiry_seconds", "tenant", "acme", "kind", "token"); left < (29*24*time.Hour).Seconds() || left > (31*24*time.Hour).Seconds() {
		t.Errorf("scimrelay_token_expiry_seconds = %v, want about 30 days in seconds", left)
	}

	families, err := p.srv.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		// A histogram of seconds is a latency: *_duration_seconds. One of
		// counts (writes per commit) has no unit suffix.
		if f.GetType() == dto.MetricType_HISTOGRAM && strings.HasPrefix(f.GetName(), "scimrelay_") && strings.HasSuffix(f.GetName(), "_seconds") && !strings.HasSuffix(f.GetName(), "_duration_seconds") {
			t.Errorf("histogram %s: latency histograms are named *_duration_seconds", f.GetName())
		}
	}
	for _, want := range []string{"scimrelay_scim_request_duration_seconds", "scimrelay_sink_delivery_duration_seconds",
		"scimrelay_outbox_publish_lag_duration_seconds", "scimrelay_outbox_oldest_age_seconds", "scimrelay_outbox_depth"} {
		if !names[want] {
			t.Errorf("no %s", want)
		}
	}
	for _, old := range []string{"scimrelay_scim_request_seconds", "scimrelay_sink_delivery_seconds", "scimrelay_outbox_publish_lag_seconds"} {
		if names[old] {
			t.Errorf("%s is still exported; it was renamed", old)
		}
	}
}

// TestRateLimitedRequestIsItsTenants: a request of acme's refused with 429
// (its credential accepted, its rate limit spent) is counted under
// tenant="acme" and filed under acme in the provisioning log, as README
// says of a refused request whose path names a configured tenant; it was
// under tenant="", so a per-tenant alert or `log --tenant acme --status
// 429` did not see acme throttled.
func TestRateLimitedRequestIsItsTenants(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.Rate, cfg.Limits.Burst = 0.001, 1 // no request comes back during the test
	p := startRelay(t, cfg, roleAll)
	p.scim("acme", acmeToken, "GET", "/Users?count=0", "").want(t, 200)
	id := p.scim("acme", acmeToken, "GET", "/Users?count=0", "").want(t, 429).header.Get("X-Request-Id")
	if n := metric(t, p, "scimrelay_scim_requests_total", "tenant", "acme", "status", "429"); n != 1 {
		t.Errorf("scimrelay_scim_requests_total{tenant=acme,status=429} = %v, want 1 (under tenant=\"\": %v)",
			n, metric(t, p, "scimrelay_scim_requests_total", "tenant", "", "status", "429"))
	}
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var all []relay.LogEntry
		if err := json.Unmarshal(adminRequest(t, p, "GET", "/admin/v1/log?since=1h&status=429", adminSecret, "").want(t, 200).raw, &all); err != nil {
			return err
		}
		if len(all) != 1 || all[0].RequestID != id {
			return fmt.Errorf("the 429 (%s) is not in the log yet: %+v", id, all)
		}
		if all[0].Tenant != "acme" {
			t.Fatalf("acme's 429 is filed under tenant %q", all[0].Tenant)
		}
		return nil
	})
}

// TestClientGoneLineNamesItsRequest: the Debug line of a SCIM client that
// went away before its answer (recorded 499) carries the request's id, as
// its answer and its log entry do; it had none.
func TestClientGoneLineNamesItsRequest(t *testing.T) {
	p, out := startRelayLogging(t, testConfig(t, t.TempDir()))
	gone, giveUp := context.WithCancel(context.Background())
	giveUp()
	req := httptest.NewRequestWithContext(gone, "POST", "/scim/v2/acme/Users", strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`))
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	rec := httptest.NewRecorder()
	p.srv.scimHTTP.Handler.ServeHTTP(rec, req)
	if rec.Code != 499 {
		t.Fatalf("a request whose client went away: %d %s, want 499", rec.Code, rec.Body)
	}
	id := rec.Header().Get("X-Request-Id")
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "scim client went away before the answer" {
			line = m
		}
	}
	if line == nil || id == "" || line["request_id"] != id {
		t.Fatalf("the line about the request %q: %v\n%s", id, line, out.String())
	}
}
