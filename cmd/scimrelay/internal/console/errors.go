// SPDX-License-Identifier: Apache-2.0

package console

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
)

// The console's one error model, as the admin API's: pages and actions
// return errors and fail alone answers them. The admin API's refusals are
// the user's to read (they name what is wrong); a failure of the console
// itself is logged under the request id and shown with that id only.

// statusError is an error answered with its status and message.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &statusError{status: status, msg: fmt.Sprintf(format, args...)}
}

// Errors with an answer of their own.
var (
	// errSignIn: no session, or one that ended; the user signs in again.
	errSignIn = errors.New("sign in to the console")
	// errCSRF: a form without this session's token.
	errCSRF = &statusError{http.StatusForbidden, "this form is out of date or did not come from this console: reload the page and try again"}
	// errFormTooLarge: a form past maxForm, not read.
	errFormTooLarge = &statusError{http.StatusRequestEntityTooLarge, fmt.Sprintf("this form is larger than the console takes (%d KiB): nothing was done", maxForm>>10)}
	// errCrossOrigin: a request another site's page sent.
	errCrossOrigin = &statusError{http.StatusForbidden, "cross-origin requests are refused: use the console's own pages"}
)

// tooManyError refuses a sign-in attempt over the rate limit.
type tooManyError struct{ retryAfter int }

func (e *tooManyError) Error() string {
	return fmt.Sprintf("too many sign-in attempts: try again in %d s", e.retryAfter)
}

// fail answers err. s is the request's session, nil when it has none.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var (
		se   *statusError
		api  *adminclient.Error
		many *tooManyError
	)
	status, msg := http.StatusInternalServerError, ""
	switch {
	case errors.Is(err, errSignIn):
		c.toSignIn(w, r)
		return
	case errors.As(err, &api) && api.Status == http.StatusUnauthorized:
		// The admin token the session holds is no longer the relay's.
		if s != nil {
			c.sessions.end(s)
		}
		c.toSignIn(w, r)
		return
	case errors.As(err, &many):
		w.Header().Set("Retry-After", strconv.Itoa(many.retryAfter))
		c.render(w, r, http.StatusTooManyRequests, "login", page{Title: "Sign in", Error: many.Error(), Data: loginData{CSRF: c.loginToken(w, r)}})
		return
	case errors.As(err, &se):
		status, msg = se.status, se.msg
	case errors.As(err, &api):
		status, msg = api.Status, api.Message
	default:
		c.log.ErrorContext(r.Context(), "console request failed", "request_id", requestIDOf(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error; the relay's log has the details under request_id " + requestIDOf(r.Context())
	}
	p := page{Title: http.StatusText(status), Error: msg}
	if s != nil {
		p.CSRF = s.csrf
	}
	c.render(w, r, status, "error", p)
}

// toSignIn sends the browser to the sign-in page; the live tail's stream
// gets a 401 its script understands instead.
func (c *Console) toSignIn(w http.ResponseWriter, r *http.Request) {
	c.sessions.clearCookie(w, r)
	if r.Header.Get("Accept") == "text/event-stream" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}
