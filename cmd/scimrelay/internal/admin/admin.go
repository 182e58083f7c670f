// SPDX-License-Identifier: Apache-2.0

// Package admin serves the admin listener: /healthz, /readyz, /metrics and
// the admin API under /admin/v1/ that the CLI uses, guarded by the admin
// token. Each service it exposes is a small interface defined here, so that
// a process without a bbolt file (role sinks) serves what it has.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// Check is one readiness check: nil when ready.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Options configures the admin handler. Nil services are answered with 503
// "not available in this role".
type Options struct {
	Token   string
	Logger  *slog.Logger
	Metrics http.Handler
	Checks  []Check
	Tokens  Credentials // SCIM bearer tokens
	Clients Credentials // OAuth clients
	Backup  Backup
	Log     Log
	// Subscribers manages the embedded NATS server's subscribers.
	Subscribers Subscribers
	// Routes adds endpoints under /admin/v1/ that other packages serve
	// (the sinks' dead-letter queues, the provisioning log, event tails).
	Routes map[string]http.Handler
}

// Handler serves the admin listener.
type Handler struct {
	o   Options
	mux *http.ServeMux
	log *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns the admin handler.
func NewHandler(o Options) *Handler {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{o: o, mux: http.NewServeMux(), log: log}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	h.mux.HandleFunc("GET /readyz", h.ready)
	if o.Metrics != nil {
		h.mux.Handle("GET /metrics", o.Metrics)
	}
	h.credentialRoutes("/admin/v1/tokens", "token management", o.Tokens)
	h.clientRoutes(o.Clients)
	h.api("GET /admin/v1/backup", h.backup)
	h.api("GET /admin/v1/log", h.queryLog)
	if o.Subscribers != nil {
		h.api("GET /admin/v1/subscribers", h.listSubscribers)
		h.api("POST /admin/v1/subscribers", h.addSubscriber)
		h.api("DELETE /admin/v1/subscribers/{name}", h.removeSubscriber)
	}
	// Profiles, for when the relay is slow and nobody knows why; behind the
	// admin token like the rest of the API.
	h.mux.Handle("GET /debug/pprof/", h.authenticate(http.HandlerFunc(pprof.Index)))
	h.mux.Handle("GET /debug/pprof/profile", h.authenticate(http.HandlerFunc(pprof.Profile)))
	h.mux.Handle("GET /debug/pprof/trace", h.authenticate(http.HandlerFunc(pprof.Trace)))
	for pattern, route := range o.Routes {
		h.mux.Handle(pattern, h.authenticate(route))
	}
	h.mux.Handle("/admin/", h.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, fmt.Errorf("no admin endpoint %s %s", r.Method, r.URL.Path))
	})))
	return h
}

// ServeHTTP routes a request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// apiFunc is an admin endpoint: it returns an error with a status (see
// statusError) or writes its answer.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

func (h *Handler) api(pattern string, f apiFunc) {
	h.mux.Handle(pattern, h.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			status := http.StatusInternalServerError
			var se *statusError
			if errors.As(err, &se) {
				status = se.status
			} else {
				h.log.ErrorContext(r.Context(), "admin request failed", "path", r.URL.Path, "err", err)
			}
			WriteError(w, status, err)
		}
	})))
}

// authenticate requires the admin token as a bearer token.
func (h *Handler) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if h.o.Token == "" || !strings.EqualFold(scheme, "Bearer") ||
			subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), []byte(h.o.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scimrelay-admin"`)
			WriteError(w, http.StatusUnauthorized, errors.New("the admin API needs Authorization: Bearer <admin token> (admin.token in relay.yaml, or data_dir/admin.token)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *Handler) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	type result struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		Error string `json:"error,omitempty"`
	}
	var results []result
	ready := true
	for _, c := range h.o.Checks {
		res := result{Name: c.Name, OK: true}
		if err := c.Check(ctx); err != nil {
			res.OK, res.Error, ready = false, err.Error(), false
		}
		results = append(results, res)
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	WriteJSON(w, status, map[string]any{"ready": ready, "checks": results})
}

// statusError is an error with the HTTP status it answers.
type statusError struct {
	status int
	err    error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// Errorf returns an error answered with status.
func Errorf(status int, format string, args ...any) error {
	return &statusError{status: status, err: fmt.Errorf(format, args...)}
}

// WriteJSON writes v as the JSON answer.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes {"error": "..."} with status.
func WriteError(w http.ResponseWriter, status int, err error) {
	WriteJSON(w, status, map[string]string{"error": err.Error()})
}

// DecodeJSON reads a JSON request body of at most 1 MiB into v.
func DecodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(http.StatusBadRequest, "request body: %v", err)
	}
	return nil
}

func unavailable(what string) error {
	return Errorf(http.StatusServiceUnavailable, "%s is not available on this relay (its role does not hold the data file)", what)
}
