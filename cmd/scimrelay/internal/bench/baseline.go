// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// baselineHandler is the least a JSON-over-HTTP service does per request:
// decode the body, encode an answer, with the statuses a SCIM server gives
// (filter GET 200 with an empty list, POST 201 with an id, user PATCH 200,
// group PATCH and DELETE 204). No storage, no validation: its rate is the
// ceiling that the machine, net/http and the bench's client leave.
func baselineHandler() http.Handler {
	var next atomic.Uint64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in map[string]any
		if r.Method == http.MethodPost || r.Method == http.MethodPatch {
			if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
				http.Error(w, "decoding body: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		w.Header().Set("Content-Type", "application/scim+json")
		switch r.Method {
		case http.MethodGet:
			_ = json.NewEncoder(w).Encode(map[string]any{
				"schemas":      []string{"urn:ietf:params:scim:api:messages:2.0:ListResponse"},
				"totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []any{},
			})
		case http.MethodPost:
			in["id"] = strconv.FormatUint(next.Add(1), 10)
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(in)
		case http.MethodPatch:
			if strings.Contains(r.URL.Path, "/Groups/") {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"id": r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:], "active": true})
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

// startBaseline serves baselineHandler on a loopback port and returns its
// tenant URL and how to stop it.
func startBaseline() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("starting the baseline server: %w", err)
	}
	srv := &http.Server{Handler: baselineHandler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	stop := func() {
		_ = srv.Close()
		<-served
	}
	return "http://" + ln.Addr().String() + "/scim/v2/baseline", stop, nil
}

// runBaseline runs the cycle of o against baselineHandler on a loopback port.
func runBaseline(ctx context.Context, o Options, b *bar) (*cycle, error) {
	url, stop, err := startBaseline()
	if err != nil {
		return nil, err
	}
	defer stop()
	o.Prefix += "-baseline"
	c := newCycle(o, url, b, false)
	defer c.close()
	if err := c.run(ctx); err != nil {
		return nil, fmt.Errorf("running the baseline: %w", err)
	}
	return c, nil
}
