// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/sinks"
)

// The admin API's one error model, like the SCIM handler's: handlers
// return errors and writeError alone turns them into answers. An *Error
// is the caller's mistake or a known state and is answered with its status
// and message; the services' sentinel errors map to theirs; NATS being away
// is a state too, answered 503 naming NATS; anything else is the relay's
// own failure, logged with the request id and answered 500 with that id
// and without its text.

// statusError is an error answered with its status and message.
type statusError struct {
	status int
	err    error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// errorf returns an error answered with status and the formatted message.
func errorf(status int, format string, args ...any) error {
	return &statusError{status: status, err: fmt.Errorf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return errorf(http.StatusBadRequest, format, args...)
}

func unavailable(what string) error {
	return errorf(http.StatusServiceUnavailable, "%s is not available on this relay (its role does not hold the data file)", what)
}

// natsRetryAfter is the Retry-After of an answer that NATS is away: about
// as long as the relay's connection takes to come back once NATS does.
const natsRetryAfter = 5 * time.Second

// natsAway says why err means that NATS, rather than the relay, failed the
// request: the relay is not connected to it, or JetStream did not answer;
// "" when it does not. A deadline exceeded is NATS not answering only when
// fromNATS marked it so: nats.go reports a JetStream request that ran out
// of time as a bare context.DeadlineExceeded, which a handler's own
// deadline would be too.
func natsAway(err error) string {
	switch {
	case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, jetstream.ErrConnectionClosed), errors.Is(err, jetstream.ErrServerShutdown):
		return "the relay is not connected to NATS"
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrNoStreamResponse):
		return "no JetStream answered"
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, errNATSNoAnswer):
		return "JetStream did not answer in time"
	}
	return ""
}

// errNATSNoAnswer marks a call to NATS that ran out of its own time (a
// JetStream request whose context has no deadline gets nats.go's, 5 s;
// the sinks and the embedded server bound theirs) while its caller's
// context was live.
var errNATSNoAnswer = errors.New("NATS did not answer in time")

// fromNATS returns the error of a call made with ctx to NATS, or to a
// service that does no more than read or change NATS; a deadline exceeded
// while ctx was live is marked errNATSNoAnswer. One that ctx's own
// deadline ended, a handler's timeout, is not NATS being away.
func fromNATS(ctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("%w (%w)", err, errNATSNoAnswer)
	}
	return err
}

// apiFunc is an admin endpoint: it writes its answer, or returns an error
// for writeError.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id,omitempty"`
	JobID     string `json:"job_id,omitempty"` // 409: the job already running
	// Problems lists, one each, what a refused relay.yaml got wrong (422).
	Problems []string `json:"problems,omitempty"`
	// Applied lists what a reload that failed part-way applied (500).
	Applied []string `json:"applied,omitempty"`
}

// statusOf returns the status an error is answered with, and whether its
// text is for the caller.
func statusOf(err error) (int, bool) {
	var se *statusError
	var ri *reloadIncomplete
	var scimErr *scim.Error
	switch {
	case errors.As(err, &scimErr) && (scimErr.Status == http.StatusInsufficientStorage || scimErr.Status == http.StatusServiceUnavailable):
		return scimErr.Status, true
	case errors.As(err, &se):
		return se.status, true
	case errors.As(err, &ri):
		return http.StatusInternalServerError, true
	case errors.Is(err, sinks.ErrUnknownSink), errors.Is(err, relay.ErrTokenNotFound), errors.Is(err, scim.ErrNotFound),
		errors.Is(err, relay.ErrSubscriberNotFound), errors.Is(err, relay.ErrLogEntryNotFound):
		return http.StatusNotFound, true
	case errors.Is(err, ErrExternalNATS), errors.Is(err, relay.ErrSubscriberExists), errors.Is(err, relay.ErrStaticToken):
		return http.StatusConflict, true
	case errors.Is(err, sinks.ErrInvalidCursor), errors.Is(err, relay.ErrInvalidLogKey), errors.Is(err, relay.ErrSubscriberTenantGone):
		return http.StatusBadRequest, true
	case errors.Is(err, ErrReloadRefused):
		return http.StatusUnprocessableEntity, true
	}
	return http.StatusInternalServerError, false
}

// writeError answers err. When the answer had already begun (a stream, a
// backup), it can only be cut short: the error is logged and the answer
// aborted (http.ErrAbortHandler), so that the client reads an error, not
// an answer that ended as a whole one does (a --no-follow event tail
// exited 0 with part of the events).
func (h *Handler) writeError(w *responseWriter, r *http.Request, err error) {
	id, ids := requestIDOf(r.Context()), requestIDs(r.Context())
	status, public := statusOf(err)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The caller went away (a tail or a log follow ended with ^C):
		// nothing failed, and nobody reads an answer.
		h.log.DebugContext(r.Context(), "admin client went away", append(ids, "path", r.URL.Path)...)
		return
	}
	if w.started {
		h.log.ErrorContext(r.Context(), "admin request failed after its answer began", append(ids, "path", r.URL.Path, "err", err)...)
		panic(http.ErrAbortHandler)
	}
	// A length set for the answer that did not begin (a backup's) is not
	// the error's.
	w.Header().Del("Content-Length")
	if reason := natsAway(err); status == http.StatusInternalServerError && !public && reason != "" {
		// Not the relay's failure, and not one its log explains better
		// than the answer: say so, and when to ask again.
		h.log.WarnContext(r.Context(), "admin request failed: NATS is away", append(ids, "method", r.Method, "path", r.URL.Path, "err", err)...)
		w.Header().Set("Retry-After", strconv.Itoa(int(natsRetryAfter.Seconds())))
		err = errorf(http.StatusServiceUnavailable, "NATS is away (%s); try again once it is back: GET /readyz/nats answers 200 then", reason)
		status, public = statusOf(err)
	}
	body := errorBody{Error: err.Error()}
	if !public {
		h.log.ErrorContext(r.Context(), "admin request failed", append(ids, "method", r.Method, "path", r.URL.Path, "err", err)...)
		body = errorBody{Error: "internal error; the relay's log has the details under request_id " + id, RequestID: id}
	}
	var running *jobs.RunningError
	if errors.As(err, &running) {
		body.JobID = running.Job.ID
	}
	if public {
		body.Problems = problemsOf(err)
	}
	if ri := (*reloadIncomplete)(nil); errors.As(err, &ri) {
		body.Applied = ri.applied // the reload logged its failure
	}
	writeJSON(w, status, body)
}

// responseWriter notes whether the answer has begun.
type responseWriter struct {
	http.ResponseWriter
	started bool
}

func (w *responseWriter) WriteHeader(status int) {
	w.started = true
	w.ResponseWriter.WriteHeader(status)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.started = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type (
	requestIDKey       struct{}
	clientRequestIDKey struct{}
)

// withRequestID gives every request the relay's own id and answers with
// it. A caller's X-Request-Id is not taken as the id: anyone who reaches
// the listener, token or not, could give a log line the id of another
// request. The console's in-process calls take the console request's id
// (ForConsoleClient), the relay's own too, so that one id finds a console
// action in the log.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { next.ServeHTTP(w, identify(w, r)) })
}

// identify gives r its id and the answer its X-Request-Id: the console
// request's for an in-process call, else a new one. KnownHostsOnly calls
// it too, for the 421 it answers itself.
func identify(w http.ResponseWriter, r *http.Request) *http.Request {
	id := ""
	if r.RemoteAddr == InProcess {
		id = consoleOf(r.Context()).requestID
	}
	if id == "" {
		id = scim.NewRequestID()
	}
	w.Header().Set("X-Request-Id", id)
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}

// withClientRequestID keeps the X-Request-Id the caller sent, when it is
// a sane one (scim.ClientRequestID), apart from the request's id, for
// its log lines to carry as client_request_id: a script's id, to match
// with its own log. Only for a request whose admin token was accepted.
func withClientRequestID(r *http.Request) *http.Request {
	client := scim.ClientRequestID(r)
	if client == "" {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), clientRequestIDKey{}, client))
}

// requestIDOf is the request's id: the admin API's (withRequestID), or
// the console's for a console request that is not an admin API call (a
// sign-in, whose wrong tokens TokenAttempts logs).
func requestIDOf(ctx context.Context) string {
	if id, ok := ctx.Value(requestIDKey{}).(string); ok {
		return id
	}
	return consoleOf(ctx).requestID
}

// requestIDs are the log attributes that name a request: request_id, and
// client_request_id when the caller's is kept.
func requestIDs(ctx context.Context) []any {
	ids := []any{"request_id", requestIDOf(ctx)}
	if client, ok := ctx.Value(clientRequestIDKey{}).(string); ok {
		ids = append(ids, "client_request_id", client)
	}
	return ids
}

// writeJSON writes v as the JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// maxBody is the largest request body the admin API reads.
const maxBody = 1 << 20

// decodeJSON reads a JSON request body of at most 1 MiB into v.
func decodeJSON(r *http.Request, v any) error { return decodeBody(r, v, false) }

// noBody refuses a body other than none, white space or {}: for an
// endpoint that takes nothing, where a field given would be ignored
// silently (refused as an unknown field, as every endpoint refuses one).
func noBody(r *http.Request) error {
	var nothing struct{}
	return decodeBody(r, &nothing, true)
}

// decodeBody reads a JSON request body of at most 1 MiB into v; a body
// of white space alone is none, which only an optional body may be.
func decodeBody(r *http.Request, v any, optional bool) error {
	// A body its sender says is not JSON is refused, whatever it holds
	// (curl's -d says a form: add -H 'Content-Type: application/json');
	// one without a Content-Type is taken as JSON.
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "request body: Content-Type must be application/json, got %q", ct)
		}
		// Read as UTF-8 whatever it says, a body in another charset
		// would be stored wrong (RFC 8259 §8.1: JSON is UTF-8).
		if cs, ok := params["charset"]; ok && !scim.UTF8Charset(cs) {
			return errorf(http.StatusUnsupportedMediaType, "request body: JSON is UTF-8, got charset %q", scim.Truncate(cs, 64))
		}
	}
	// A body in a content coding is not decoded (RFC 9110 §15.5.16), as
	// the SCIM listener refuses it.
	if coding := scim.ContentCoding(r.Header); coding != "" {
		return errorf(http.StatusUnsupportedMediaType, "request body: Content-Encoding %q is not supported; send the body uncompressed", scim.Truncate(coding, 32))
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	switch {
	case errors.As(err, new(*http.MaxBytesError)):
		return errorf(http.StatusRequestEntityTooLarge, "request body: larger than %d bytes (1 MiB)", maxBody)
	case err != nil:
		return badRequest("request body: not read whole (the connection broke or sent too slowly)")
	}
	if err := scim.CheckText(body); err != nil {
		return badRequest("request body: %v (JSON is UTF-8: a client sending Latin-1 must encode it as UTF-8)", err)
	}
	trimmed := bytes.TrimSpace(body)
	switch {
	case optional && len(trimmed) == 0:
		return nil
	case len(trimmed) == 0:
		return badRequest("request body: the body is empty: send a JSON object (%s)", fieldsOf(v))
	case trimmed[0] != '{':
		return badRequest("request body: the body must be a JSON object (%s)", fieldsOf(v))
	}
	if name := repeatedName(body); name != "" {
		return badRequest("request body: the name %q is given twice in one object; give each once", name)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err, v)
	}
	// One value and nothing after it: a body with more is not what the
	// caller meant, and is not acted on.
	if _, err := dec.Token(); err == io.EOF {
		return nil
	}
	return badRequest("request body: data after the JSON value; send exactly one JSON value")
}
