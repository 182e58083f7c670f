// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestRefusedHostNamesAreBounded: KnownHostsOnly says each refused name
// once, and after maxSaidHosts names says once that it stops: a stream of
// made-up names cannot flood the log. Every refusal is still a 421.
func TestRefusedHostNamesAreBounded(t *testing.T) {
	var logBuf eventstest.Log
	h := KnownHostsOnly(http.NotFoundHandler(), []string{"console.example.com"}, slog.New(slog.NewTextHandler(&logBuf, nil)))
	send := func(host string) int {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for i := range 3 * maxSaidHosts {
		for _, form := range []string{"name-%d.example.com", "NAME-%d.example.com.:8081"} {
			if code := send(fmt.Sprintf(form, i)); code != http.StatusMisdirectedRequest {
				t.Fatalf("Host %s: %d, want 421", fmt.Sprintf(form, i), code)
			}
		}
	}
	if code := send("console.example.com"); code != http.StatusNotFound {
		t.Fatalf("a name in admin.hosts: %d, want it passed on", code)
	}
	log := logBuf.String()
	for name, want := range map[string]int{
		"its host name is not in admin.hosts":                    maxSaidHosts,
		"host=name-0.example.com ":                               1,
		fmt.Sprintf("host=name-%d.example.com ", maxSaidHosts-1): 1,
		fmt.Sprintf("host=name-%d.example.com ", maxSaidHosts):   0,
		"more host names not in admin.hosts refused":             1,
		"console.example.com":                                    0,
	} {
		if n := strings.Count(log, name); n != want {
			t.Errorf("%q in %d lines of the log, want %d:\n%s", name, n, want, log)
		}
	}
}

// TestReadDeadlineBoundsArrivalOnly: WithReadDeadline bounds a request's
// arrival, not its answer. Answers made past the deadline, to a request
// without a body and to one whose body was read, go out whole, their
// context not ended (the body read first: net/http lifts the deadline at
// its end), and the next request on the same keep-alive
// connection is served: before, the deadline fired in net/http's read of
// the connection while the answer was made, which ended that request's
// context and every later one's on the connection. (A trickled body is
// still cut: TestAdminListenerReadDeadline in cmd/scimrelay.)
func TestReadDeadlineBoundsArrivalOnly(t *testing.T) {
	const deadline = 200 * time.Millisecond
	srv := httptest.NewServer(WithReadDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select { // the answer takes longer than the deadline
		case <-time.After(3 * deadline):
		case <-r.Context().Done():
		}
		fmt.Fprintf(w, "%s %q context: %v", r.Method, body, r.Context().Err())
	}), deadline))
	defer srv.Close()
	client := srv.Client()
	for i, req := range []struct{ method, body string }{{"POST", `{"all":true}`}, {"GET", ""}, {"GET", ""}} {
		reused := false
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) { reused = c.Reused }})
		r, err := http.NewRequestWithContext(ctx, req.method, srv.URL, strings.NewReader(req.body))
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.Do(r)
		if err != nil {
			t.Fatalf("%s #%d: %v", req.method, i, err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if want := fmt.Sprintf("%s %q context: <nil>", req.method, req.body); err != nil || res.StatusCode != http.StatusOK || string(got) != want {
			t.Errorf("%s #%d answered past the read deadline: %d %q (%v), want %q", req.method, i, res.StatusCode, got, err, want)
		}
		if i > 0 && !reused {
			t.Errorf("%s #%d came on a new connection: the one before was closed", req.method, i)
		}
	}
}
