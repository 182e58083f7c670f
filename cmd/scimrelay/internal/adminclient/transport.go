// SPDX-License-Identifier: Apache-2.0

package adminclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
)

// HandlerTransport is an http.RoundTripper that serves each request with
// Handler in this process, without a socket: the web console calls the
// admin API this way, through the same routes, checks and error adapter as
// the CLI over HTTP. Answers stream: RoundTrip returns as soon as the
// handler has written its header (or flushed), and the body delivers what
// the handler writes after, so an event tail works as over a connection.
// Closing the body, or the request's context ending, makes the handler's
// writes fail and its context end.
type HandlerTransport struct {
	Handler http.Handler
}

var _ http.RoundTripper = HandlerTransport{}

// RoundTrip serves req with the handler.
func (t HandlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The handler is served as over a connection: its context ends when
	// the caller's does, and carries no deadline of the caller's (the
	// console's Client.Timeout), which would stand in for the bounds the
	// handler's own calls take when given none (a JetStream request's
	// 5 s): NATS silent, a console page waited the minute out and said
	// "internal error" where the API says "JetStream did not answer in
	// time" (503) after 5 s.
	ctx, cancel := context.WithCancel(context.WithoutCancel(req.Context()))
	stop := context.AfterFunc(req.Context(), cancel)
	in := req.Clone(ctx)
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = admin.InProcess
	if in.Body == nil {
		in.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	go func() {
		defer stop()
		defer cancel()
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { // as net/http takes it: an answer cut short, its error logged
					w.fail(fmt.Errorf("the answer to %s %s was cut short: the relay's log says why", req.Method, req.URL.Path))
					return
				}
				w.fail(fmt.Errorf("the admin handler panicked serving %s %s: %v", req.Method, req.URL.Path, p))
				return
			}
			w.finish()
		}()
		t.Handler.ServeHTTP(w, in)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		_ = pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	if w.err != nil {
		return nil, w.err
	}
	return &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}, nil
}

// pipeWriter is the handler's ResponseWriter: the header is handed over
// once, the body goes through a pipe to the response's reader.
type pipeWriter struct {
	header http.Header
	pw     *io.PipeWriter
	once   sync.Once
	ready  chan struct{} // closed once status and sent are set, or err
	status int
	sent   http.Header
	err    error
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(status int) {
	if status < 200 && status != http.StatusSwitchingProtocols {
		return // informational answers are not handed over
	}
	w.once.Do(func() {
		w.status, w.sent = status, w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(b)
}

// Flush hands the header over; what was written has already gone through
// the pipe.
func (w *pipeWriter) Flush() { w.WriteHeader(http.StatusOK) }

// finish ends the answer once the handler returned.
func (w *pipeWriter) finish() {
	w.WriteHeader(http.StatusOK)
	_ = w.pw.Close()
}

// fail ends the answer with err: before the header, RoundTrip returns it;
// after, the body's reader gets it.
func (w *pipeWriter) fail(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.ready)
	})
	_ = w.pw.CloseWithError(err)
}
