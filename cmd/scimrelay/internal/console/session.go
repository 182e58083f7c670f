// SPDX-License-Identifier: Apache-2.0

package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
)

// Sessions live in the memory of the process that signed the user in: a
// restart signs everyone out, and each relay process has its own (the
// admin listener is per process). The cookie carries a random id; the
// table is keyed by the id's SHA-256, so a look-up's timing says nothing
// about the ids it holds.

// Cookie names.
const (
	sessionCookie = "scimrelay_console"
	loginCookie   = "scimrelay_console_login" // the sign-in form's CSRF token
	// shownCookie is set, to the display's id, by the page that shows a
	// secret, and cleared by the next page: Chromium does not restore a
	// no-store page from its back/forward cache once a cookie changed, so
	// Back asks for the page again (and gets 410) even without the script.
	shownCookie = "scimrelay_console_shown"
)

// Limits of the session table.
const (
	maxSessions   = 1000
	secretKeepFor = 10 * time.Minute // an issued secret not displayed by then is dropped
	// sweepEvery is how often the table forgets dead sessions and secrets
	// kept past secretKeepFor, whether or not anyone signs in or shows
	// another secret.
	sweepEvery = time.Minute
)

// session is one signed-in browser.
type session struct {
	key     [32]byte // SHA-256 of the cookie's id
	token   string   // the admin token the user signed in with
	csrf    string
	created time.Time

	mu   sync.Mutex
	seen time.Time
	// issued are credentials whose secret waits for its one display.
	issued map[string]issued
	// notice is said once, on the next page.
	notice string
	// done is closed when the session ends (sign-out), ending its streams.
	done    chan struct{}
	endOnce sync.Once
}

// ended is closed when the session is ended.
func (s *session) ended() <-chan struct{} { return s.done }

// issued is a new credential whose secret the console shows once.
type issued struct {
	kind   string // "tokens" or "clients"
	tenant string
	res    admin.TokenResponse
	at     time.Time
}

type sessions struct {
	idle, maxAge time.Duration
	now          func() time.Time
	mu           sync.Mutex
	m            map[[32]byte]*session
}

func newSessions(idle, maxAge time.Duration, now func() time.Time) *sessions {
	return &sessions{idle: idle, maxAge: maxAge, now: now, m: map[[32]byte]*session{}}
}

// randomToken returns 32 random bytes, base64url-encoded.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create starts a session for an admin token and returns its cookie id.
func (ss *sessions) create(token string) (string, *session) {
	id := randomToken()
	now := ss.now()
	s := &session{key: sha256.Sum256([]byte(id)), token: token, csrf: randomToken(), created: now, seen: now, issued: map[string]issued{}, done: make(chan struct{})}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, old := range ss.m {
		if !ss.live(old, now) {
			delete(ss.m, k)
		}
	}
	if len(ss.m) >= maxSessions { // drop the least recently used
		var oldest *session
		for _, old := range ss.m {
			if oldest == nil || old.lastSeen().Before(oldest.lastSeen()) {
				oldest = old
			}
		}
		delete(ss.m, oldest.key)
	}
	ss.m[s.key] = s
	return id, s
}

// get returns the live session of a cookie id, marking it used when use
// (a person's request).
func (ss *sessions) get(id string, use bool) (*session, bool) {
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[sha256.Sum256([]byte(id))]
	if !ok {
		return nil, false
	}
	if !ss.live(s, now) {
		delete(ss.m, s.key)
		return nil, false
	}
	if use {
		s.mu.Lock()
		s.seen = now
		s.mu.Unlock()
	}
	return s, true
}

// alive reports whether s is still live, without marking it used (the
// live tail asks while it streams, which is not a person's activity).
func (ss *sessions) alive(s *session) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	cur, ok := ss.m[s.key]
	return ok && cur == s && ss.live(s, ss.now())
}

func (ss *sessions) live(s *session, now time.Time) bool {
	return now.Sub(s.lastSeen()) < ss.idle && now.Sub(s.created) < ss.maxAge
}

// sweep forgets the sessions no longer live, ending their streams, and
// the secrets the others kept past their display window.
func (ss *sessions) sweep() {
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, s := range ss.m {
		if !ss.live(s, now) {
			delete(ss.m, k)
			if s.done != nil {
				s.endOnce.Do(func() { close(s.done) })
			}
			continue
		}
		s.mu.Lock()
		s.forgetExpired(now)
		s.mu.Unlock()
	}
}

// end forgets a session: sign-out, or an admin token the relay refuses.
func (ss *sessions) end(s *session) {
	ss.mu.Lock()
	delete(ss.m, s.key)
	ss.mu.Unlock()
	if s.done != nil {
		s.endOnce.Do(func() { close(s.done) })
	}
}

func (s *session) lastSeen() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// session returns the request's live session, or errSignIn.
func (c *Console) session(r *http.Request) (*session, error) {
	// The live tail's stream, which the browser reconnects by itself
	// when the connection drops, is no person's request: it does not
	// keep the session alive (before, each reconnect did, and a tab left
	// open behind a proxy that cuts long connections stayed signed in).
	use := r.URL.Path != Prefix+"events/stream"
	// Every cookie of the name, not the first alone: another service on
	// the host (cookies ignore ports) can plant one for a deeper path
	// (/ui/tenants/), which the browser sends first; taking it alone
	// signed the user out of those pages for good, and the sign-in page's
	// clearing of the cookie dropped the real one.
	for _, ck := range r.CookiesNamed(sessionCookie) {
		if s, ok := c.sessions.get(ck.Value, use); ok {
			return s, nil
		}
	}
	return nil, errSignIn
}

// secure reports whether the browser reached the console over TLS: on the
// listener itself, or through a proxy that says so. A forged header only
// makes the cookie stricter.
func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

// setCookie sets a console cookie: HttpOnly, SameSite=Strict, Secure over
// TLS, for the console's paths only, gone when the browser closes.
func setCookie(w http.ResponseWriter, r *http.Request, name, value, path string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge,
		HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteStrictMode})
}

// clearCookie removes the session cookie.
func (ss *sessions) clearCookie(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(sessionCookie); err == nil {
		setCookie(w, r, sessionCookie, "", Prefix, -1)
	}
}

// checkCSRF requires the session's CSRF token in the form.
func (s *session) checkCSRF(r *http.Request) error {
	got := r.PostFormValue("csrf")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
		return errCSRF
	}
	return nil
}

// keepIssued holds a new credential until its one display and returns the
// id of that display.
func (s *session) keepIssued(it issued) string {
	id := randomToken()[:16]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetExpired(it.at)
	s.issued[id] = it
	return id
}

// takeIssued returns a credential kept for display and forgets it: its
// secret is shown once. The others kept past their display window are
// forgotten too.
func (s *session) takeIssued(id string, now time.Time) (issued, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.issued[id]
	delete(s.issued, id)
	s.forgetExpired(now)
	if ok && now.Sub(it.at) > secretKeepFor {
		return issued{}, false
	}
	return it, ok
}

// forgetExpired drops the credentials kept longer than secretKeepFor
// before now; s.mu is held.
func (s *session) forgetExpired(now time.Time) {
	for k, it := range s.issued {
		if now.Sub(it.at) > secretKeepFor {
			delete(s.issued, k)
		}
	}
}

// say keeps a notice for the next page.
func (s *session) say(notice string) {
	s.mu.Lock()
	s.notice = notice
	s.mu.Unlock()
}

// takeNotice returns the notice kept for this page, once.
func (s *session) takeNotice() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.notice
	s.notice = ""
	return n
}
