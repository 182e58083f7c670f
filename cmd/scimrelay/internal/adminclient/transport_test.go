// SPDX-License-Identifier: Apache-2.0

package adminclient

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHandlerTransportStreams: an answer reaches the client as the handler
// writes it, before the handler returns; the client going away ends the
// handler's context.
func TestHandlerTransportStreams(t *testing.T) {
	release, ended := make(chan struct{}), make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "first\n")
		_ = http.NewResponseController(w).Flush()
		<-release
		_, _ = io.WriteString(w, "second\n")
		<-r.Context().Done()
		ended <- r.Context().Err()
	})
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://admin.invalid/admin/v1/events?follow=true", nil)
	res, err := (&http.Client{Transport: HandlerTransport{Handler: h}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusAccepted || res.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("answer %d %v", res.StatusCode, res.Header)
	}
	lines := bufio.NewReader(res.Body)
	if line, err := lines.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first line %q %v: not streamed before the handler went on", line, err)
	}
	close(release)
	if line, err := lines.ReadString('\n'); err != nil || line != "second\n" {
		t.Fatalf("second line %q %v", line, err)
	}
	cancel()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler's context ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context did not end with the client's")
	}
	_ = res.Body.Close()
}

// TestHandlerTransportAnswers: the client sees the handler's status,
// header and body, and its errors as *Error; a handler that panics is an
// error, not a crash.
func TestHandlerTransportAnswers(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/v1/tenants", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("X-Request-Id") != "req-1" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"wrong token"}`)
			return
		}
		_, _ = io.WriteString(w, `[{"name":"acme","scim_url":"https://relay.example.com/scim/v2/acme"}]`)
	})
	mux.HandleFunc("POST /admin/v1/sinks/crm/replay", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"error":"a replay of crm is already running as job job_1","job_id":"job_1"}`)
	})
	mux.HandleFunc("GET /admin/v1/jobs/{id}", func(http.ResponseWriter, *http.Request) { panic("boom") })
	c := &Client{BaseURL: "http://admin.invalid", Token: "tok", RequestID: "req-1", HTTP: &http.Client{Transport: HandlerTransport{Handler: mux}}}

	list, err := c.Tenants(t.Context())
	if err != nil || len(list) != 1 || list[0].SCIMURL != "https://relay.example.com/scim/v2/acme" {
		t.Fatalf("tenants: %+v %v", list, err)
	}
	_, err = c.StartJob(t.Context(), "/admin/v1/sinks/crm/replay", map[string]string{"since": "1h"})
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusConflict || e.JobID != "job_1" || !strings.Contains(e.Error(), "already running") {
		t.Fatalf("409: %#v", err)
	}
	if _, err := c.Job(t.Context(), "job_1"); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panic: %v", err)
	}
	c.Token = "other"
	if _, err := c.Tenants(t.Context()); !errors.As(err, &e) || e.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), "refused the admin token: wrong token") {
		t.Fatalf("401: %v", err)
	}
}

// TestHandlerTransportCutShort: an answer the handler aborts after it began
// (http.ErrAbortHandler, as the admin API does when it fails mid-stream)
// ends in a read error saying so, as over the network, not in the end of a
// whole answer.
func TestHandlerTransportCutShort(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	})
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://admin.invalid/admin/v1/events?follow=false", nil)
	res, err := (&http.Client{Transport: HandlerTransport{Handler: h}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if string(body) != "first\n" || err == nil || !strings.Contains(err.Error(), "was cut short") {
		t.Fatalf("read %q, %v; want the first line, then an error saying the answer was cut short", body, err)
	}
}
