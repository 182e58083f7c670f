// SPDX-License-Identifier: Apache-2.0

package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
)

// contentSecurityPolicy allows the console's own scripts, styles and
// images and nothing else: no inline script or style (attributes
// included), no framing, forms posting only to the console.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// withSecurityHeaders sets the security headers on every answer, pages,
// assets and errors alike. Nothing but the versioned assets may be cached:
// a page can hold a secret shown once.
func withSecurityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		h.Set("Cache-Control", "no-store")
		if secure(r) {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// loginData is what the sign-in page shows.
type loginData struct {
	CSRF string // the sign-in form's own token (there is no session yet)
}

// loginTokenLife is how long a sign-in form's token is taken: its
// cookie's Max-Age, and the expiry its MAC covers.
const loginTokenLife = time.Hour

// loginToken sets a fresh sign-in form token in a cookie and returns it
// for the form: a double-submit token, since there is no session to bind
// one to; with SameSite=Strict another site's form cannot send the cookie.
// The token is signed (newLoginToken), so that only a pair this process
// gave out in the last hour is taken. That does not stop another service
// on the console's host (cookies ignore ports) from planting a pair it
// fetched from the sign-in page: the cross-origin check refuses the form
// it sends from its own page, another origin.
func (c *Console) loginToken(w http.ResponseWriter, r *http.Request) string {
	tok := c.newLoginToken()
	setCookie(w, r, loginCookie, tok, Prefix+"login", int(loginTokenLife/time.Second))
	return tok
}

// newLoginToken returns 16 random bytes and an expiry, with their
// HMAC-SHA256 under the process's loginKey, base64url-encoded.
func (c *Console) newLoginToken() string {
	b := make([]byte, 24, 24+sha256.Size)
	_, _ = rand.Read(b[:16])
	binary.BigEndian.PutUint64(b[16:], uint64(c.now().Add(loginTokenLife).Unix()))
	return base64.RawURLEncoding.EncodeToString(c.loginMAC(b))
}

// loginMAC appends the MAC of a sign-in token's body to it.
func (c *Console) loginMAC(body []byte) []byte {
	m := hmac.New(sha256.New, c.loginKey[:])
	m.Write(body)
	return m.Sum(body)
}

// checkLoginToken takes a sign-in form's token: the form's and the
// cookie's the same, made by this process (its MAC) and not expired.
func (c *Console) checkLoginToken(r *http.Request) error {
	ck, err := r.Cookie(loginCookie)
	form := r.PostFormValue("csrf")
	if err != nil || form == "" || subtle.ConstantTimeCompare([]byte(form), []byte(ck.Value)) != 1 {
		return errCSRF
	}
	b, err := base64.RawURLEncoding.DecodeString(form)
	if err != nil || len(b) != 24+sha256.Size || !hmac.Equal(c.loginMAC(b[:24:24]), b) ||
		c.now().Unix() >= int64(binary.BigEndian.Uint64(b[16:24])) {
		return errCSRF
	}
	return nil
}

// GET /ui/login
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) error {
	if _, err := c.session(r); err == nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return nil
	}
	c.render(w, r, http.StatusOK, "login", page{Title: "Sign in", Data: loginData{CSRF: c.loginToken(w, r)}})
	return nil
}

// POST /ui/login exchanges the admin token for a session. The admin API
// checks the token (the console has no credential of its own to compare
// with): a token it refuses is refused here.
func (c *Console) login(w http.ResponseWriter, r *http.Request) error {
	if err := c.checkLoginToken(r); err != nil {
		return err
	}
	// The budget of wrong tokens is the admin API's (admin.TokenAttempts),
	// checked before the token is, and it logs the refusals, summed.
	attempt, wait := c.attempts.Begin(r, "console sign-in")
	if attempt == nil {
		return &tooManyError{retryAfter: int(math.Ceil(max(wait.Seconds(), 1)))}
	}
	defer attempt.Done()
	token := strings.TrimSpace(r.PostFormValue("token"))
	probe := &session{token: token}
	var err error
	if token != "" {
		_, err = c.api(probe).Tenants(r.Context())
	}
	var api *adminclient.Error
	if token == "" || errors.As(err, &api) && api.Status == http.StatusUnauthorized {
		if token != "" {
			attempt.Wrong()
		}
		c.render(w, r, http.StatusUnauthorized, "login", page{Title: "Sign in", Error: "That is not the admin token of this relay (admin.token in relay.yaml, or data_dir/admin.token).", Data: loginData{CSRF: c.loginToken(w, r)}})
		return nil
	}
	if err != nil {
		return err
	}
	id, _ := c.sessions.create(token)
	setCookie(w, r, sessionCookie, id, Prefix, 0)
	setCookie(w, r, loginCookie, "", Prefix+"login", -1)
	c.log.InfoContext(r.Context(), "console sign-in", "request_id", requestIDOf(r.Context()), "client", httpmw.ClientAddress(r))
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
	return nil
}

// POST /ui/logout
func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	c.sessions.end(s)
	c.sessions.clearCookie(w, r)
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
	return nil
}
