package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/scim"
)

// Tokens is the token store the admin API manages.
type Tokens interface {
	CreateToken(ctx context.Context, tenant, name string, expires time.Time) (string, relay.Token, error)
	ListTokens(ctx context.Context, tenant string) ([]relay.Token, error)
	RevokeToken(ctx context.Context, id string) (relay.Token, error)
	RotateToken(ctx context.Context, tenant, name string, expires time.Time, overlap time.Duration) (string, relay.Token, []relay.Token, error)
}

var _ Tokens = (*relay.Store)(nil)

// TokenRequest asks for a token. Expires is a duration from now ("90d",
// "never"); empty means 90 days.
type TokenRequest struct {
	Tenant  string `json:"tenant"`
	Name    string `json:"name"`
	Expires string `json:"expires"`
	// Overlap applies to rotation: how long the old tokens keep working.
	Overlap string `json:"overlap,omitempty"`
}

// TokenResponse carries a new token's secret, shown once.
type TokenResponse struct {
	Secret  string        `json:"secret"`
	Token   relay.Token   `json:"token"`
	Expired []relay.Token `json:"expiring,omitempty"` // rotation: the tokens that now expire after the overlap
}

func (h *Handler) listTokens(w http.ResponseWriter, r *http.Request) error {
	if h.o.Tokens == nil {
		return unavailable("token management")
	}
	list, err := h.o.Tokens.ListTokens(r.Context(), r.URL.Query().Get("tenant"))
	if err != nil {
		return tokenError(err)
	}
	WriteJSON(w, http.StatusOK, list)
	return nil
}

// tokenRequest decodes a create or rotate request.
func (h *Handler) tokenRequest(r *http.Request) (TokenRequest, time.Time, error) {
	if h.o.Tokens == nil {
		return TokenRequest{}, time.Time{}, unavailable("token management")
	}
	var req TokenRequest
	if err := DecodeJSON(r, &req); err != nil {
		return req, time.Time{}, err
	}
	expires, err := expiry(req.Expires)
	return req, expires, err
}

func (h *Handler) createToken(w http.ResponseWriter, r *http.Request) error {
	req, expires, err := h.tokenRequest(r)
	if err != nil {
		return err
	}
	if req.Name == "" {
		req.Name = "unnamed"
	}
	secret, tok, err := h.o.Tokens.CreateToken(r.Context(), req.Tenant, req.Name, expires)
	if err != nil {
		return tokenError(err)
	}
	WriteJSON(w, http.StatusCreated, TokenResponse{Secret: secret, Token: tok})
	return nil
}

func (h *Handler) rotateToken(w http.ResponseWriter, r *http.Request) error {
	req, expires, err := h.tokenRequest(r)
	if err != nil {
		return err
	}
	overlap := 24 * time.Hour
	if req.Overlap != "" {
		if overlap, err = config.ParseDuration(req.Overlap); err != nil {
			return Errorf(http.StatusBadRequest, "overlap: %v", err)
		}
	}
	if req.Name == "" {
		req.Name = "rotated"
	}
	secret, tok, old, err := h.o.Tokens.RotateToken(r.Context(), req.Tenant, req.Name, expires, overlap)
	if err != nil {
		return tokenError(err)
	}
	WriteJSON(w, http.StatusCreated, TokenResponse{Secret: secret, Token: tok, Expired: old})
	return nil
}

func (h *Handler) revokeToken(w http.ResponseWriter, r *http.Request) error {
	if h.o.Tokens == nil {
		return unavailable("token management")
	}
	tok, err := h.o.Tokens.RevokeToken(r.Context(), r.PathValue("id"))
	if err != nil {
		return tokenError(err)
	}
	WriteJSON(w, http.StatusOK, tok)
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
	if err != nil || d <= 0 {
		return time.Time{}, Errorf(http.StatusBadRequest, "expires: want a duration such as 90d, or never; got %q", s)
	}
	return time.Now().Add(d), nil
}

func tokenError(err error) error {
	switch {
	case errors.Is(err, relay.ErrTokenNotFound), errors.Is(err, scim.ErrNotFound):
		return Errorf(http.StatusNotFound, "%v", err)
	}
	return err
}
