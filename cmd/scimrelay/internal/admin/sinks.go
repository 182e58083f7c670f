// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/sinks"
)

// Sinks is the delivery side the admin API manages.
type Sinks interface {
	DeadLetters(ctx context.Context, sink string) ([]sinks.DeadLetter, error)
	Redrive(ctx context.Context, sink, id string, all bool) (sinks.RedriveResult, error)
	Replay(ctx context.Context, sink string, since time.Time) (sinks.ReplayResult, error)
}

var _ Sinks = (*sinks.Manager)(nil)

// RedriveRequest asks to deliver dead letters again: one by event id, or all.
type RedriveRequest struct {
	ID  string `json:"id,omitempty"`
	All bool   `json:"all,omitempty"`
}

// ReplayRequest asks to send a sink the events since a duration ago.
type ReplayRequest struct {
	Since string `json:"since"`
}

// SinkRoutes returns the admin endpoints of the sinks: dead letters,
// redrive, replay and delivery attempts.
func SinkRoutes(s Sinks, js jetstream.JetStream) map[string]http.Handler {
	wrap := func(f apiFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := f(w, r); err != nil {
				status := http.StatusInternalServerError
				var se *statusError
				switch {
				case errors.As(err, &se):
					status = se.status
				case errors.Is(err, sinks.ErrUnknownSink):
					status = http.StatusNotFound
				}
				WriteError(w, status, err)
			}
		})
	}
	return map[string]http.Handler{
		"GET /admin/v1/sinks/{sink}/dlq": wrap(func(w http.ResponseWriter, r *http.Request) error {
			list, err := s.DeadLetters(r.Context(), r.PathValue("sink"))
			if err != nil {
				return err
			}
			WriteJSON(w, http.StatusOK, list)
			return nil
		}),
		"POST /admin/v1/sinks/{sink}/dlq/redrive": wrap(func(w http.ResponseWriter, r *http.Request) error {
			var req RedriveRequest
			if err := DecodeJSON(r, &req); err != nil {
				return err
			}
			if req.All == (req.ID != "") {
				return Errorf(http.StatusBadRequest, "give either an id or all")
			}
			res, err := s.Redrive(r.Context(), r.PathValue("sink"), req.ID, req.All)
			if err != nil {
				return err
			}
			WriteJSON(w, http.StatusOK, res)
			return nil
		}),
		"POST /admin/v1/sinks/{sink}/replay": wrap(func(w http.ResponseWriter, r *http.Request) error {
			var req ReplayRequest
			if err := DecodeJSON(r, &req); err != nil {
				return err
			}
			d, err := config.ParseDuration(req.Since)
			if err != nil || d <= 0 {
				return Errorf(http.StatusBadRequest, "since: want a duration such as 24h, got %q", req.Since)
			}
			res, err := s.Replay(r.Context(), r.PathValue("sink"), time.Now().Add(-d))
			if err != nil {
				return err
			}
			WriteJSON(w, http.StatusOK, res)
			return nil
		}),
		"GET /admin/v1/deliveries": wrap(func(w http.ResponseWriter, r *http.Request) error {
			q := r.URL.Query()
			since := time.Now().Add(-time.Hour)
			if v := q.Get("since"); v != "" {
				d, err := config.ParseDuration(v)
				if err != nil {
					return Errorf(http.StatusBadRequest, "since: %v", err)
				}
				since = time.Now().Add(-d)
			}
			limit := 1000
			if v := q.Get("limit"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					return Errorf(http.StatusBadRequest, "limit must be a positive number")
				}
				limit = min(n, 100_000)
			}
			list, err := sinks.Attempts(r.Context(), js, q.Get("sink"), since, limit)
			if err != nil {
				return err
			}
			WriteJSON(w, http.StatusOK, list)
			return nil
		}),
	}
}
