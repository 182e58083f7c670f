// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// getFails answers every Get with err, or panics with it.
type getFails struct {
	scim.Backend
	err    error
	panics bool
}

func (b getFails) Get(context.Context, string, *scim.ResourceType, string) (*scim.Resource, error) {
	if b.panics {
		panic(b.err)
	}
	return nil, b.err
}

// TestFailureLogged: RequestInfo.FailureLogged is set exactly when the
// handler logged the failure with its cause (an internal error, 500), so
// that an observer logging 5xx answers logs each failure once; a 503 the
// backend chose is the observer's to log, and a client that hung up is
// no failure (499).
func TestFailureLogged(t *testing.T) {
	for _, tt := range []struct {
		name   string
		err    error
		panics bool
		status int
		logged bool
	}{
		{"internal", errors.New("disk on fire"), false, http.StatusInternalServerError, true},
		{"panic", errors.New("nil map"), true, http.StatusInternalServerError, true},
		{"unavailable", scim.Errorf(scim.ErrUnavailable, "retry later"), false, http.StatusServiceUnavailable, false},
		// Writing the answer found the connection closed (a list or a
		// Bulk's answer under way when the client hung up): expected,
		// recorded 499 at Debug as a client gone before its answer.
		{"broken pipe", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, false, 499, false},
		{"connection reset", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)}, false, 499, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mem := scimtest.NewMemory(map[string]string{"acme": tokenAcme})
			var got scim.RequestInfo
			h := scim.NewHandler(getFails{mem, tt.err, tt.panics}, mem, scim.Options{
				ValidTenant: func(string) bool { return true },
				Observe:     func(_ context.Context, info *scim.RequestInfo) { got = *info },
			})
			req := httptest.NewRequest("GET", "/scim/v2/acme/Users/x", nil)
			req.Header.Set("Authorization", "Bearer "+tokenAcme)
			h.ServeHTTP(httptest.NewRecorder(), req)
			if got.Status != tt.status || got.FailureLogged != tt.logged {
				t.Errorf("status %d, FailureLogged %v; want %d, %v", got.Status, got.FailureLogged, tt.status, tt.logged)
			}
		})
	}
}

// brokenConn is a response writer whose connection is gone: every Write
// fails as writing to a socket the client closed does. It counts the
// statuses written.
type brokenConn struct {
	*httptest.ResponseRecorder
	statuses int
}

func (b *brokenConn) WriteHeader(code int) { b.statuses++; b.ResponseRecorder.WriteHeader(code) }

func (b *brokenConn) Write([]byte) (int, error) {
	return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
}

// answers are answers that fail to be written: fill makes what the answer
// holds, through do (a request's method, path and body; it returns the id
// made), and returns the path to read. A short list fits net/http's
// buffers, which net/http writes after the handler returned; a long list is
// written whole by its handler, in one write past those buffers; a large
// group is sent in chunks of 64 KiB, its status line out before the first.
var answers = []struct {
	name  string
	large bool // written by the handler: a failing write is the handler's to see
	fill  func(do func(method, path, body string) string) string
}{
	{"a short list", false, func(func(string, string, string) string) string { return "/Users" }},
	{"a long list", true, func(do func(string, string, string) string) string {
		for i := range 100 {
			do("POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%03d","displayName":%q}`, i, strings.Repeat("x", 1000)))
		}
		return "/Users?count=100"
	}},
	{"a large group", true, func(do func(string, string, string) string) string {
		var members []string
		for i := range 2000 {
			id := do("POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"m%04d"}`, i))
			members = append(members, `{"value":"`+id+`"}`)
		}
		return "/Groups/" + do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"big","members":[`+strings.Join(members, ",")+`]}`)
	}},
}

// handlerWithAnswer returns a handler whose tenant acme holds what fill
// makes, the path fill returned, a request maker, and the RequestInfo of
// the last request observed.
func handlerWithAnswer(t *testing.T, fill func(do func(method, path, body string) string) string, o scim.Options) (http.Handler, string, func(method, path, body string) *http.Request, *scim.RequestInfo) {
	t.Helper()
	mem := scimtest.NewMemory(map[string]string{"acme": tokenAcme})
	got := new(scim.RequestInfo)
	o.ValidTenant = func(string) bool { return true }
	o.Observe = func(_ context.Context, info *scim.RequestInfo) { *got = *info }
	h := scim.NewHandler(mem, mem, o)
	request := func(method, path, body string) *http.Request {
		req := httptest.NewRequest(method, "/scim/v2/acme"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tokenAcme)
		req.Header.Set("Content-Type", "application/scim+json")
		return req
	}
	path := fill(func(method, path, body string) string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, request(method, path, body))
		if w.Code != http.StatusCreated {
			t.Fatalf("%s %s: %d %s", method, path, w.Code, w.Body)
		}
		var v struct{ ID string }
		_ = json.Unmarshal(w.Body.Bytes(), &v)
		return v.ID
	})
	return h, path, request, got
}

// TestAnswerToAClientGoneIsRecorded499: an answer that cannot be written
// (the client hung up once its status line went out) is recorded as a
// client gone, 499 and not the 200 that went out, and not as a failure;
// and no error answer follows the one under way (a second status, which
// net/http warns of, and an error appended to a page). A list fails its
// one write (writeError; brokenConn has no buffer to hide a short one in);
// a large group fails the write of a chunk, which cuts the connection
// (Handler.fail): until a review found it, that was recorded with the 200
// and no detail, as an answer delivered whole.
func TestAnswerToAClientGoneIsRecorded499(t *testing.T) {
	for _, tt := range answers {
		t.Run(tt.name, func(t *testing.T) {
			h, path, request, got := handlerWithAnswer(t, tt.fill, scim.Options{})
			w := &brokenConn{ResponseRecorder: httptest.NewRecorder()}
			func() {
				defer func() { // net/http's way to drop a connection whose answer is under way
					if p := recover(); p != nil && p != http.ErrAbortHandler {
						panic(p)
					}
				}()
				h.ServeHTTP(w, request("GET", path, ""))
			}()
			if w.statuses != 1 {
				t.Errorf("%d statuses written to one answer; want 1", w.statuses)
			}
			if got.Status != 499 || got.FailureLogged || got.Detail != "the client closed the request" {
				t.Errorf("recorded %d %q, FailureLogged %v; want 499, the client gone, not a failure (README, Logs)", got.Status, got.Detail, got.FailureLogged)
			}
		})
	}
}

// TestAnswerCutByTheWriteTimeoutIsAFailure: an answer the relay's own
// limits.write_timeout cuts (a client reading slowly, a long answer) is
// no client gone: the client waited, and got no whole answer. It is
// recorded as a failure, 500 and logged at Error with its cause, so the
// operator can tell the relay's limit from a client that hung up (README,
// Logs). Served by a real net/http server whose write timeout has passed
// before the answer is written, so that every write fails as it does
// then, and net/http cancels the request's context as it does. Until a
// read-through found it, an answer sent in chunks (the large group) was
// recorded with the 200 that went out and no log line. A short answer is written by
// net/http after the handler returned, its failure unseen by the handler
// (README says so).
func TestAnswerCutByTheWriteTimeoutIsAFailure(t *testing.T) {
	for _, tt := range answers {
		if !tt.large {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			h, path, _, got := handlerWithAnswer(t, tt.fill, scim.Options{Logger: slog.New(slog.NewJSONHandler(&log, nil))})
			observed := make(chan struct{})
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(observed)
				h.ServeHTTP(w, r)
			}))
			srv.Config.WriteTimeout = time.Nanosecond // passed when the handler writes
			srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
			srv.Start()
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL+"/scim/v2/acme"+path, nil)
			req.Header.Set("Authorization", "Bearer "+tokenAcme)
			if resp, err := srv.Client().Do(req); err == nil {
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if rerr == nil {
					t.Fatalf("answered %d with %d bytes whole: the write timeout did not cut it (precondition)", resp.StatusCode, len(body))
				}
			}
			<-observed
			if got.Status != http.StatusInternalServerError || !got.FailureLogged {
				t.Errorf("recorded %d %q, FailureLogged %v; want 500, a failure the handler logged", got.Status, got.Detail, got.FailureLogged)
			}
			if !strings.Contains(log.String(), `"level":"ERROR"`) || !strings.Contains(log.String(), "timeout") {
				t.Errorf("logged %q; want the failure at ERROR with its cause (a timeout)", log.String())
			}
		})
	}
}
