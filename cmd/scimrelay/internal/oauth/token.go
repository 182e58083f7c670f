// SPDX-License-Identifier: Apache-2.0

// Package oauth serves the OAuth 2.0 token endpoint of each tenant on the
// SCIM listener, POST /oauth2/<tenant>/token: the client credentials grant
// (RFC 6749 §4.4) that Entra's "OAuth2 Client Credentials Grant"
// authentication method and Okta's OAuth 2 option use. The clients and the
// access tokens are the relay's (relay/clients.go); this package speaks the
// protocol: client authentication by client_secret_basic or
// client_secret_post, the token response (§5.1), the error responses (§5.2),
// no caching, a rate limit per client and per caller's address, and a report of every request for the
// provisioning log.
package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// PathPrefix starts every token endpoint path: PathPrefix + tenant + "/token".
const PathPrefix = "/oauth2/"

// PathPattern is the token endpoint's path, as ServiceProviderConfig advertises it.
const PathPattern = PathPrefix + "{tenant}/token"

// Issuer authenticates clients and issues access tokens.
type Issuer interface {
	// IssueAccessToken returns an access token for the client of tenant,
	// or an error wrapping relay.ErrInvalidClient or relay.ErrClientTenant.
	IssueAccessToken(ctx context.Context, tenant, clientID, secret string, lifetime time.Duration) (relay.AccessToken, error)
	// HasTenant reports whether a tenant is configured.
	HasTenant(name string) bool
}

var _ Issuer = (*relay.Store)(nil)

// Limiter decides whether a key (a client, or a caller's address) may be
// answered now.
type Limiter interface {
	Allow(key string) (ok bool, retryAfter time.Duration)
}

// Options configures the token endpoint.
type Options struct {
	Issuer Issuer
	// Lifetime of the access tokens; 0 is relay.DefaultAccessTokenLifetime.
	Lifetime time.Duration
	// Limiter, when set, is charged every request: a token issued to its
	// client's bucket, anything else to the caller's address's (serve).
	Limiter Limiter
	// Observe, when set, is called after every request (the provisioning
	// log and the request metrics hang off it). Operation is "token", Name
	// the client_id; Detail carries the error code and description, never
	// a secret.
	Observe func(ctx context.Context, info *scim.RequestInfo)
	Logger  *slog.Logger
}

// Handler is the token endpoint.
type Handler struct {
	o   Options
	log *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns the token endpoint.
func NewHandler(o Options) *Handler {
	if o.Lifetime <= 0 {
		o.Lifetime = relay.DefaultAccessTokenLifetime
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{o: o, log: log}
}

// maxBody bounds a token request: a few short form fields.
const maxBody = 16 << 10

// Error codes of RFC 6749 §5.2.
const (
	errInvalidRequest       = "invalid_request"
	errInvalidClient        = "invalid_client"
	errUnauthorizedClient   = "unauthorized_client"
	errUnsupportedGrantType = "unsupported_grant_type"
)

// tokenError is an error response of RFC 6749 §5.2.
type tokenError struct {
	status     int
	code       string
	detail     string
	retryAfter time.Duration // for 429
}

func (e *tokenError) Error() string { return e.code + ": " + e.detail }

func fail(status int, code, format string, args ...any) *tokenError {
	return &tokenError{status: status, code: code, detail: description(fmt.Sprintf(format, args...))}
}

// description keeps an error_description within the characters RFC 6749
// §5.2 allows (printable ASCII but " and \).
func description(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '"':
			return '\''
		case r == '\\':
			return '/'
		case r < 0x20 || r > 0x7e:
			return '?'
		}
		return r
	}, s)
}

// ServeHTTP answers one token request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info := &scim.RequestInfo{Start: time.Now(), RequestID: scim.NewRequestID(), ClientRequestID: scim.ClientRequestID(r),
		Method: r.Method, Path: r.URL.Path, Operation: "token"}
	// Token responses and errors must not be cached (RFC 6749 §5.1).
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.Header().Set("X-Request-Id", info.RequestID)
	tok, err := h.serve(r, info)
	if err != nil {
		var te *tokenError
		if !errors.As(err, &te) {
			h.log.ErrorContext(r.Context(), "token request failed", "request_id", info.RequestID, "err", err)
			te = fail(http.StatusInternalServerError, "server_error", "internal error (request %s)", info.RequestID)
		}
		info.Status, info.Detail = te.status, te.Error()
		h.writeError(w, te)
	} else {
		info.Status = http.StatusOK
		writeJSON(w, http.StatusOK, tokenResponse{AccessToken: tok.Token, TokenType: "Bearer", ExpiresIn: int64(tok.ExpiresIn / time.Second)})
	}
	info.Latency = time.Since(info.Start)
	if h.o.Observe != nil {
		h.o.Observe(r.Context(), info)
	}
}

// tokenResponse is the successful answer (RFC 6749 §5.1).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// serve answers a token request and charges it to the rate limit: a token
// issued to its client's bucket, any other outcome to the caller's
// address's. A client is never refused for what others send (a bucket per
// tenant let anyone who knew its name keep its Entra from getting
// tokens), and failed attempts are limited per address, the same whatever
// tenant name they give, so that the limit tells no tenant from another
// name. The work done before charging is a form and a hash: no more than a
// 429 would cost. (The limiter drops buckets back at full past 10,000.)
func (h *Handler) serve(r *http.Request, info *scim.RequestInfo) (relay.AccessToken, error) {
	tok, err := h.issue(r, info)
	info.Authenticated = err == nil
	if h.o.Limiter == nil {
		return tok, err
	}
	key := "address " + httpmw.ClientAddress(r)
	if err == nil {
		key = "client " + info.Tenant + "/" + tok.ClientID
	}
	if ok, wait := h.o.Limiter.Allow(key); !ok {
		te := fail(http.StatusTooManyRequests, errInvalidRequest, "too many token requests; retry later")
		te.retryAfter = wait
		return relay.AccessToken{}, te
	}
	return tok, err
}

// issue checks a token request and issues its access token.
func (h *Handler) issue(r *http.Request, info *scim.RequestInfo) (relay.AccessToken, error) {
	tenant, ok := tenantOf(r.URL.EscapedPath())
	if !ok {
		return relay.AccessToken{}, fail(http.StatusNotFound, errInvalidRequest, "no token endpoint at %s; it is %s", scim.Truncate(r.URL.Path, 128), PathPattern)
	}
	if r.Method != http.MethodPost {
		return relay.AccessToken{}, fail(http.StatusMethodNotAllowed, errInvalidRequest, "the token endpoint takes POST, not %s", scim.Truncate(r.Method, 16))
	}
	known := h.o.Issuer.HasTenant(tenant)
	if known {
		// Only configured tenants label the log and metrics: the path is
		// the caller's to choose.
		info.Tenant = tenant
	}
	form, err := readForm(r)
	if err != nil {
		return relay.AccessToken{}, err
	}
	id, secret, err := clientCredentials(r, form)
	info.Name = clientIDForLog(id)
	if err != nil {
		return relay.AccessToken{}, err
	}
	switch gt := form.Get("grant_type"); {
	case gt == "":
		return relay.AccessToken{}, fail(http.StatusBadRequest, errInvalidRequest, "grant_type is missing; this endpoint issues tokens for grant_type=client_credentials")
	case gt != "client_credentials":
		return relay.AccessToken{}, fail(http.StatusBadRequest, errUnsupportedGrantType, "grant_type %q is not supported; use client_credentials", scim.Truncate(gt, 64))
	}
	tok, err := h.o.Issuer.IssueAccessToken(r.Context(), tenant, id, secret, h.o.Lifetime)
	switch {
	case errors.Is(err, relay.ErrInvalidClient):
		return relay.AccessToken{}, fail(http.StatusUnauthorized, errInvalidClient, "%v", err)
	case errors.Is(err, relay.ErrClientTenant):
		return relay.AccessToken{}, fail(http.StatusBadRequest, errUnauthorizedClient, "%v", err)
	case err != nil:
		return relay.AccessToken{}, err
	}
	return tok, nil
}

// tenantOf reads the tenant from an escaped path /oauth2/<tenant>/token.
func tenantOf(escaped string) (string, bool) {
	rest, ok := strings.CutPrefix(escaped, PathPrefix)
	if !ok {
		return "", false
	}
	tenant, tail, ok := strings.Cut(rest, "/")
	if !ok || strings.TrimRight(tail, "/") != "token" || !events.ValidName(tenant) {
		return "", false
	}
	return tenant, true
}

// readForm reads the form-encoded body (RFC 6749 §4.4.2, appendix B).
// Credentials in the query string are refused (§2.3.1), and so is any
// parameter given a value twice (§3.2; an empty one is omitted).
func readForm(r *http.Request) (url.Values, error) {
	for _, p := range []string{"client_secret", "client_id", "grant_type"} {
		if r.URL.Query().Has(p) {
			return nil, fail(http.StatusBadRequest, errInvalidRequest, "%s must be sent in the form-encoded body, not in the URL", p)
		}
	}
	// Content-Type is one value (RFC 9110 §8.3), as the SCIM listener
	// reads it: of two, the second's charset was not seen.
	if len(r.Header.Values("Content-Type")) > 1 {
		return nil, fail(http.StatusBadRequest, errInvalidRequest, "more than one Content-Type header; send exactly one")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, fail(http.StatusBadRequest, errInvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	// Not decoded from a content coding, as the SCIM listener reads a
	// body (a gzipped form was refused for its credentials, a misleading
	// answer). The charset is no matter: the parameters the endpoint
	// reads are ASCII, the same in ISO-8859-1, which Apache HttpClient's
	// forms say by default.
	if coding := scim.ContentCoding(r.Header); coding != "" {
		return nil, fail(http.StatusBadRequest, errInvalidRequest, "Content-Encoding %q is not supported; send the body uncompressed", scim.Truncate(coding, 32))
	}
	r.Body = http.MaxBytesReader(nil, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		return nil, fail(http.StatusBadRequest, errInvalidRequest, "reading the form: %s", formError(err))
	}
	for k, v := range r.PostForm {
		// "Parameters sent without a value MUST be treated as if they
		// were omitted" (§3.2): an empty one is no second value.
		v = slices.DeleteFunc(v, func(s string) bool { return s == "" })
		switch {
		case len(v) == 0:
			delete(r.PostForm, k)
		case len(v) > 1:
			return nil, fail(http.StatusBadRequest, errInvalidRequest, "parameter %s is given %d times", scim.Truncate(k, 32), len(v))
		default:
			r.PostForm[k] = v
		}
	}
	return r.PostForm, nil
}

// formError describes a form that could not be read without quoting it:
// it may hold a secret.
func formError(err error) string {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return "the body is larger than " + strconv.Itoa(maxBody) + " bytes"
	}
	return "the body is not valid form encoding"
}

// clientCredentials returns the client's id and secret. Exactly one method
// may be used: HTTP Basic (client_secret_basic) or client_id and
// client_secret in the body (client_secret_post), RFC 6749 §2.3.1.
func clientCredentials(r *http.Request, form url.Values) (id, secret string, err error) {
	// Checked before the first header is read: an empty one before a
	// Basic one would hide the Basic credentials (and a second method).
	if len(r.Header.Values("Authorization")) > 1 {
		return "", "", fail(http.StatusBadRequest, errInvalidRequest, "more than one Authorization header")
	}
	hdr := r.Header.Get("Authorization")
	postID, postSecret := form.Get("client_id"), form.Get("client_secret")
	if hdr == "" {
		if postID == "" || postSecret == "" {
			return postID, "", fail(http.StatusUnauthorized, errInvalidClient,
				"no client authentication: send the client's id and secret with HTTP Basic, or as client_id and client_secret in the body")
		}
		return postID, postSecret, nil
	}
	user, password, ok := r.BasicAuth()
	if !ok {
		return "", "", fail(http.StatusUnauthorized, errInvalidClient, "the Authorization header must be Basic with the client's id and secret")
	}
	// The id and secret are form-encoded before Basic encodes them (§2.3.1).
	if u, err := url.QueryUnescape(user); err == nil {
		user = u
	}
	if p, err := url.QueryUnescape(password); err == nil {
		password = p
	}
	if postSecret != "" {
		return user, "", fail(http.StatusBadRequest, errInvalidRequest, "the client authenticated twice (HTTP Basic and client_secret in the body); use one method")
	}
	if postID != "" && postID != user {
		return user, "", fail(http.StatusBadRequest, errInvalidRequest, "client_id in the body differs from the one in the Authorization header")
	}
	return user, password, nil
}

// writeError writes an RFC 6749 §5.2 error response.
func (h *Handler) writeError(w http.ResponseWriter, te *tokenError) {
	switch {
	case te.status == http.StatusUnauthorized:
		// RFC 6749 §5.2: invalid_client with 401 carries a challenge for
		// the scheme the client may use in the Authorization header.
		w.Header().Set("WWW-Authenticate", `Basic realm="scimrelay", charset="UTF-8"`)
	case te.status == http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	case te.status == http.StatusTooManyRequests:
		secs := int((te.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	writeJSON(w, te.status, map[string]string{"error": te.code, "error_description": te.detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// clientIDForLog is what the provisioning log says of a client id: the id
// when it has a client id's form (cli_ and 16 hex digits), and otherwise
// not what was sent, which may be the secret given in the id's place.
func clientIDForLog(id string) string {
	if hex, ok := strings.CutPrefix(id, "cli_"); ok && len(hex) == 16 && strings.Trim(hex, "0123456789abcdef") == "" {
		return id
	}
	if id == "" {
		return ""
	}
	return "(not a client id)"
}
