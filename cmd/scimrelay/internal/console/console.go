// SPDX-License-Identifier: Apache-2.0

// Package console is the web console on the admin listener, under /ui/:
// what each application's provisioning page gives its admin (the Tenant
// URL, tokens generated with an expiry and shown once, the set-up steps of
// Microsoft Entra ID), the provisioning log, the sinks with their dead
// letters, and a live tail of events.
//
// The console holds no state of the relay and implements no action: every
// page and every form calls the admin API, in-process, through
// adminclient, with the admin token the user signed in with, so the CLI
// and the console share one code path per action and the admin API's
// checks are the only ones. What the console adds is the browser's
// concerns: sessions (an HttpOnly, SameSite=Strict cookie with an idle
// timeout), a CSRF token on every form, a strict Content-Security-Policy
// and the other security headers on every answer, and a rate limit on
// sign-in. Pages are server-rendered html/template; assets/static/app.js
// adds copy buttons, refreshing of running jobs and the live tail, and
// every page works without it.
package console

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
	"github.com/scimrelay/scimrelay/scim"
)

// Prefix is where the console is served.
const Prefix = "/ui/"

// Defaults of Options.
const (
	DefaultIdleTimeout = 30 * time.Minute
	DefaultMaxAge      = 12 * time.Hour
)

// Options configures the console.
type Options struct {
	// Admin is the admin API's handler, called in-process.
	Admin  http.Handler
	Logger *slog.Logger
	// IdleTimeout ends a session unused for this long (DefaultIdleTimeout
	// when 0); MaxAge ends it this long after sign-in (DefaultMaxAge).
	IdleTimeout time.Duration
	MaxAge      time.Duration
	// Now is the clock (tests move it); nil is time.Now.
	Now func() time.Time
	// TokenAttempts limits wrong admin tokens at sign-in: the admin API's
	// limiter, so that guessing costs one budget on either; nil: one of
	// the console's own.
	TokenAttempts *admin.TokenAttempts
}

// Console serves the web console.
type Console struct {
	o        Options
	log      *slog.Logger
	now      func() time.Time
	sessions *sessions
	attempts *admin.TokenAttempts
	pages    *pages
	root     http.Handler
	// sweepEvery is how often Run sweeps the sessions (tests shorten it).
	sweepEvery time.Duration
	// loginKey signs the sign-in form's tokens; random, the process's own.
	loginKey [32]byte
}

var _ http.Handler = (*Console)(nil)

// New returns the console.
func New(o Options) (*Console, error) {
	if o.Admin == nil {
		return nil, errors.New("console: no admin API to call")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TokenAttempts == nil {
		o.TokenAttempts = admin.NewTokenAttempts(admin.TokenPerAddress, admin.TokenOverall, o.Logger)
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	p, err := loadPages()
	if err != nil {
		return nil, err
	}
	c := &Console{
		o: o, log: o.Logger, now: o.Now, pages: p,
		sessions: newSessions(o.IdleTimeout, o.MaxAge, o.Now),
		attempts: o.TokenAttempts, sweepEvery: sweepEvery,
	}
	_, _ = rand.Read(c.loginKey[:])
	mux := http.NewServeMux()
	// /ui without the slash is the console's answer too, with its headers.
	mux.Handle("GET /ui", http.RedirectHandler(Prefix, http.StatusMovedPermanently))
	mux.HandleFunc("GET /ui/static/{file}", c.static)
	mux.Handle("GET /ui/login", c.handle(c.loginPage))
	mux.Handle("POST /ui/login", c.handle(c.login))
	mux.Handle("POST /ui/logout", c.signedIn(c.logout))
	mux.Handle("GET /ui/{$}", c.signedIn(c.overview))
	mux.Handle("GET /ui/tenants/{tenant}", c.signedIn(c.tenant))
	mux.Handle("POST /ui/tenants/{tenant}/{kind}", c.signedIn(c.issue))
	mux.Handle("POST /ui/tenants/{tenant}/{kind}/rotate", c.signedIn(c.rotate))
	mux.Handle("GET /ui/secrets/{flash}", c.signedIn(c.issued))
	mux.Handle("GET /ui/tenants/{tenant}/{kind}/{id}/revoke", c.signedIn(c.confirmRevoke))
	mux.Handle("POST /ui/tenants/{tenant}/{kind}/{id}/revoke", c.signedIn(c.revoke))
	mux.Handle("GET /ui/log", c.signedIn(c.logPage))
	mux.Handle("GET /ui/log/{key}", c.signedIn(c.logEntry))
	mux.Handle("GET /ui/sinks", c.signedIn(c.sinksPage))
	mux.Handle("GET /ui/sinks/{sink}", c.signedIn(c.sink))
	mux.Handle("POST /ui/sinks/{sink}/redrive", c.signedIn(c.redrive))
	mux.Handle("POST /ui/sinks/{sink}/replay", c.signedIn(c.replay))
	mux.Handle("GET /ui/jobs/{id}", c.signedIn(c.job))
	mux.Handle("GET /ui/events", c.signedIn(c.eventsPage))
	mux.Handle("GET /ui/events/stream", c.signedIn(c.eventStream))
	mux.Handle("GET /ui/keys", c.signedIn(c.keysPage))
	mux.Handle("/ui/", c.handle(func(http.ResponseWriter, *http.Request) error {
		return errorf(http.StatusNotFound, "there is no such page in the console")
	}))
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(c.handle(func(http.ResponseWriter, *http.Request) error { return errCrossOrigin }))
	c.root = withSecurityHeaders(withRequestID(withClient(forgetShown(cop.Handler(c.limitForms(mux))))))
	return c, nil
}

// Run forgets dead sessions and the secrets kept past their display
// window every minute, until ctx ends: a secret nobody displayed, or a
// session nobody uses, must not stay in memory until the next sign-in.
func (c *Console) Run(ctx context.Context) {
	t := time.NewTicker(c.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.sessions.sweep()
		}
	}
}

// ServeHTTP serves a console request.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.root.ServeHTTP(w, r) }

// pageFunc is a page or an action of a signed-in user: it writes its answer
// or returns an error for fail.
type pageFunc func(w http.ResponseWriter, r *http.Request, s *session) error

// handle serves f, answering its error with fail.
func (c *Console) handle(f func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			c.fail(w, r, nil, err)
		}
	})
}

// signedIn serves f to a signed-in user, checking the CSRF token of every
// request that changes something; others are sent to sign in.
func (c *Console) signedIn(f pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := c.session(r)
		if err == nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
			err = s.checkCSRF(r)
		}
		if err == nil {
			err = f(w, r, s)
		}
		if err != nil {
			c.fail(w, r, s, err)
		}
	})
}

// api is the admin API as the signed-in user: their admin token; the
// calls take this request's id from its context (withClient).
func (c *Console) api(s *session) *adminclient.Client {
	return &adminclient.Client{
		BaseURL: "http://admin.in-process",
		Token:   s.token,
		HTTP:    &http.Client{Transport: adminclient.HandlerTransport{Handler: c.o.Admin}},
		Timeout: time.Minute,
	}
}

// maxForm is the most a form may send: the console's are a few fields.
const maxForm = 64 << 10

// limitForms bounds what a request may send, and reads a posted form
// before any handler does: one past the bound is answered 413 here, and
// nothing acts on it, rather than being taken for a form without its
// CSRF token.
func (c *Console) limitForms(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if r.Method == http.MethodPost {
			// ParseMultipartForm alone does not return ParseForm's error.
			err := r.ParseForm()
			if err == nil {
				err = r.ParseMultipartForm(maxForm)
			}
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				c.fail(w, r, nil, errFormTooLarge)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// forgetShown clears the cookie a secret's page set (shownCookie) at the
// next page the browser asks for, so that the next secret's page changes
// it again. The page's own script and styles leave it.
func forgetShown(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie(shownCookie); err == nil && !strings.HasPrefix(r.URL.Path, Prefix+"static/") {
			setCookie(w, r, shownCookie, "", Prefix, -1)
		}
		next.ServeHTTP(w, r)
	})
}

// withClient tells the admin API, through the context of the calls a
// console request makes, the browser's address, which its audit trail
// names as it names the CLI's, and the request's id, which the calls
// take as theirs.
func withClient(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(admin.ForConsoleClient(r.Context(), httpmw.ClientAddress(r), requestIDOf(r.Context()))))
	})
}

type requestIDKey struct{}

// withRequestID gives every console request an id, the relay's own
// (scim.NewRequestID), taken by the admin API calls it makes (withClient)
// and shown with a failure, so that one id finds it in the relay's log.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := scim.NewRequestID()
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

func requestIDOf(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
