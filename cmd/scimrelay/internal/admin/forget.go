// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/scimrelay/scimrelay/sinks"
)

// SinkForgetter deletes what a sink no longer configured left in NATS
// (sinks.Manager.Forget).
type SinkForgetter interface {
	Forget(ctx context.Context, sink string) (sinks.Forgotten, error)
}

var _ SinkForgetter = (*sinks.Manager)(nil)

// actionSinkForget is the audited action of a sink forgotten.
const actionSinkForget = "sink.forget"

// POST /admin/v1/sinks/{sink}/forget deletes what a sink removed from
// relay.yaml left in NATS: its consumers, its parking bucket, its dead
// letters and delivery attempts; it answers what it deleted. A sink still
// configured, or still run by a worker of a process not yet reloaded, is
// 409; a name under which nothing is stored, 404.
func (h *Handler) forgetSink(w http.ResponseWriter, r *http.Request) error {
	if h.o.ForgetSinks == nil {
		return errorf(http.StatusServiceUnavailable, "forgetting a sink is not available on this relay: a delivery worker's NATS user may not delete a sink's bucket nor its dead letters; ask the admin API of a SCIM front end (--role scim or all)")
	}
	name := r.PathValue("sink")
	f, err := h.o.ForgetSinks.Forget(r.Context(), name)
	switch {
	case errors.Is(err, sinks.ErrSinkConfigured), errors.Is(err, sinks.ErrSinkRunning):
		return &statusError{status: http.StatusConflict, err: err}
	case err != nil:
		return fmt.Errorf("forgetting sink %s: %w", name, fromNATS(r.Context(), err))
	}
	h.audit(r, actionSinkForget, "sink", name, "consumers", f.Consumers, "undelivered", f.Undelivered,
		"buckets", f.Buckets, "parked", f.Parked, "dead_letters", f.DeadLetters, "attempts", f.Attempts)
	writeJSON(w, http.StatusOK, f)
	return nil
}
