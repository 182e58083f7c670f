// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"net/http"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
)

// Credentials is a set of stored credentials the admin API manages: the SCIM
// bearer tokens, or the OAuth clients. Both have the same lifecycle, so the
// same endpoints serve them, under /admin/v1/tokens and /admin/v1/clients.
type Credentials interface {
	Create(ctx context.Context, tenant, name string, expires time.Time) (string, relay.Token, error)
	List(ctx context.Context, tenant string) ([]relay.Token, error)
	Revoke(ctx context.Context, id string) (relay.Token, bool, error)
	Rotate(ctx context.Context, tenant, name string, expires time.Time, overlap time.Duration) (string, relay.Token, []relay.Token, error)
}

var _ Credentials = relay.Credentials{}

// credentialRoutes serves the lifecycle of one set of credentials under
// prefix; what names it in errors, noun ("token", "client") in the audit
// trail.
func (h *Handler) credentialRoutes(prefix, what, noun string, store Credentials) {
	c := credentialAPI{h: h, store: store, what: what, noun: noun}
	h.api("GET "+prefix, c.list, "tenant")
	h.api("POST "+prefix, c.create)
	h.api("POST "+prefix+"/rotate", c.rotate)
	h.api("DELETE "+prefix+"/{id}", takesNoBody(c.revoke))
}

// credentialAPI is the admin endpoints of one set of credentials.
type credentialAPI struct {
	h     *Handler
	store Credentials
	what  string
	noun  string
}

// MaxCredentialName is the longest name, in characters, a token or an
// OAuth client may have.
const MaxCredentialName = 100

// checkCredentialName refuses a name no person could read: names go to
// /metrics labels, token list and logs, where a control character (ESC,
// NUL, a newline) would rewrite a terminal or break a line, a format
// character (a bidi override, a zero-width space) would disguise it, and a
// long one would grow every scrape. Empty is not checked: it is given a
// default.
func checkCredentialName(name string) error {
	if n := utf8.RuneCountInString(name); n > MaxCredentialName {
		return badRequest("name: at most %d characters, got %d", MaxCredentialName, n)
	}
	for i, c := range name {
		if !unicode.IsGraphic(c) {
			return badRequest("name: the character U+%04X at byte %d is not printable; a name may hold letters, digits, punctuation, symbols and spaces, not control or format characters", c, i)
		}
	}
	return nil
}

// audit logs an action on credential tok.
func (c credentialAPI) audit(r *http.Request, verb string, tok relay.Token, attrs ...any) {
	c.h.audit(r, c.noun+"."+verb, append([]any{"tenant", tok.Tenant, "id", tok.ID, "name", tok.Name}, attrs...)...)
}

// TokenRequest asks for a token or an OAuth client. Expires is a duration
// from now ("90d", "never"); empty means 90 days.
type TokenRequest struct {
	Tenant  string `json:"tenant"`
	Name    string `json:"name"`
	Expires string `json:"expires"`
	// Overlap applies to rotation: how long the old tokens keep working.
	Overlap string `json:"overlap,omitempty"`
}

// TokenResponse carries a new token's or client's secret, shown once.
type TokenResponse struct {
	Secret  string        `json:"secret"`
	Token   relay.Token   `json:"token"`
	Expired []relay.Token `json:"expiring,omitempty"` // rotation: the tokens that now expire after the overlap
	// StillValid lists, on a rotation, the tenant's relay.yaml tokens,
	// which rotation does not touch; Note says so in words.
	StillValid []relay.Token `json:"still_valid,omitempty"`
	Note       string        `json:"note,omitempty"`
}

// StillValidNote is what a rotation says of the relay.yaml tokens it
// leaves valid.
const StillValidNote = "the tenant's relay.yaml tokens in still_valid keep working after the overlap: rotation does not change relay.yaml; remove them from relay.yaml and reload the relay (SIGHUP or scimrelay reload) to end them"

func (c credentialAPI) list(w http.ResponseWriter, r *http.Request) error {
	if c.store == nil {
		return unavailable(c.what)
	}
	tenant := r.URL.Query().Get("tenant")
	list, err := c.store.List(r.Context(), tenant)
	if err != nil {
		return err
	}
	if err := c.h.checkTenant(tenant, len(list) > 0); err != nil {
		return err
	}
	writeList(w, list)
	return nil
}

// request decodes a create or rotate request.
func (c credentialAPI) request(r *http.Request) (TokenRequest, time.Time, error) {
	if c.store == nil {
		return TokenRequest{}, time.Time{}, unavailable(c.what)
	}
	var req TokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return req, time.Time{}, err
	}
	if req.Tenant == "" {
		return req, time.Time{}, badRequest("tenant is required")
	}
	if err := c.h.checkConfigured(req.Tenant, ""); err != nil {
		return req, time.Time{}, err
	}
	if err := checkCredentialName(req.Name); err != nil {
		return req, time.Time{}, err
	}
	expires, err := expiry(req.Expires)
	return req, expires, err
}

func (c credentialAPI) create(w http.ResponseWriter, r *http.Request) error {
	req, expires, err := c.request(r)
	if err != nil {
		return err
	}
	if req.Overlap != "" {
		// Read by a rotation only: a create given one issued as if it
		// had not been, rotating nothing.
		return badRequest("overlap: applies to a rotation (POST %s/rotate), not to a create, which takes tenant, name and expires", r.URL.Path)
	}
	if req.Name == "" {
		req.Name = "unnamed"
	}
	secret, tok, err := c.store.Create(r.Context(), req.Tenant, req.Name, expires)
	if err != nil {
		return err
	}
	c.audit(r, actionIssue, tok)
	writeJSON(w, http.StatusCreated, TokenResponse{Secret: secret, Token: tok})
	return nil
}

func (c credentialAPI) rotate(w http.ResponseWriter, r *http.Request) error {
	req, expires, err := c.request(r)
	if err != nil {
		return err
	}
	overlap := 24 * time.Hour
	if req.Overlap != "" {
		if overlap, err = config.ParseDuration(req.Overlap); err != nil {
			return badRequest("overlap: %v", err)
		}
	}
	if req.Name == "" {
		req.Name = "rotated"
	}
	secret, tok, old, err := c.store.Rotate(r.Context(), req.Tenant, req.Name, expires, overlap)
	if err != nil {
		return err
	}
	expiring := make([]string, len(old))
	for i, o := range old {
		expiring[i] = o.ID
	}
	res := TokenResponse{Secret: secret, Token: tok, Expired: old}
	// The rotation is done: a failure to list is not one to answer
	// with, and the list is in memory.
	all, _ := c.store.List(r.Context(), req.Tenant)
	var kept []string
	for _, t := range all {
		if t.Source == relay.SourceConfig {
			res.StillValid = append(res.StillValid, t)
			kept = append(kept, t.ID)
		}
	}
	attrs := []any{"expiring", expiring, "overlap", overlap.String()}
	if len(kept) > 0 {
		res.Note = StillValidNote
		attrs = append(attrs, "still_valid", kept)
	}
	c.audit(r, actionRotate, tok, attrs...)
	writeJSON(w, http.StatusCreated, res)
	return nil
}

// RevokeResponse is the credential a revocation answers with (its fields
// at the top level, as before it said more), and whether it was revoked
// already, by an earlier revocation.
type RevokeResponse struct {
	relay.Token
	AlreadyRevoked bool `json:"already_revoked,omitempty"`
}

func (c credentialAPI) revoke(w http.ResponseWriter, r *http.Request) error {
	if c.store == nil {
		return unavailable(c.what)
	}
	tok, revoked, err := c.store.Revoke(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if revoked {
		c.audit(r, actionRevoke, tok)
	}
	writeJSON(w, http.StatusOK, RevokeResponse{Token: tok, AlreadyRevoked: !revoked})
	return nil
}

// expiry turns "90d", "never" or "" (90 days) into a time; zero is never.
func expiry(s string) (time.Time, error) {
	switch s {
	case "":
		return time.Now().Add(relay.DefaultTokenLifetime), nil
	case "never":
		return time.Time{}, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil {
		// Its reason: "100000d" is such a duration, longer than a century.
		return time.Time{}, badRequest("expires: want a duration such as 90d, or never; got %q (%v)", s, err)
	}
	if d <= 0 {
		return time.Time{}, badRequest("expires: want a duration such as 90d, or never; got %q", s)
	}
	return time.Now().Add(d), nil
}
