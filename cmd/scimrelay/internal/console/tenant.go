// SPDX-License-Identifier: Apache-2.0

package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay"
)

// defaultDays is the expiry a new token or client is offered with: 90
// days, as the SAFE guide's default.
const defaultDays = int(relay.DefaultTokenLifetime / (24 * time.Hour))

// kinds are the credential collections the tenant page manages, by their
// path segment.
var kinds = map[string]adminclient.Kind{"tokens": adminclient.Tokens, "clients": adminclient.Clients}

// tenantData is the tenant page: what to paste into Entra ID, and the
// tenant's credentials.
type tenantData struct {
	Now         time.Time
	Tenant      admin.TenantInfo
	Sections    []credentialSection // tokens, then OAuth clients
	DefaultDays int
}

// credentialSection is the list and forms of one kind of credential.
type credentialSection struct {
	Kind, Noun, Title, About, Button string
	List                             []relay.Token
}

// tenantOf returns the tenant the path names.
func tenantOf(r *http.Request, api *adminclient.Client) (admin.TenantInfo, error) {
	return tenantNamed(r, api, r.PathValue("tenant"))
}

// tenantNamed returns the tenant called name.
func tenantNamed(r *http.Request, api *adminclient.Client, name string) (admin.TenantInfo, error) {
	list, err := api.Tenants(r.Context())
	if err != nil {
		return admin.TenantInfo{}, err
	}
	for _, t := range list {
		if t.Name == name {
			return t, nil
		}
	}
	return admin.TenantInfo{}, errorf(http.StatusNotFound, "relay.yaml has no tenant %q", name)
}

// kindOf returns the credential collection the path names.
func kindOf(r *http.Request) (string, adminclient.Kind, error) {
	k, ok := kinds[r.PathValue("kind")]
	if !ok {
		return "", "", errorf(http.StatusNotFound, "there is no such page in the console")
	}
	return r.PathValue("kind"), k, nil
}

// GET /ui/tenants/{tenant}
func (c *Console) tenant(w http.ResponseWriter, r *http.Request, s *session) error {
	api := c.api(s)
	t, err := tenantOf(r, api)
	if err != nil {
		return err
	}
	all, err := credentialsOf(r, api, t.Name)
	if err != nil {
		return err
	}
	tokens := credentialSection{Kind: "tokens", Noun: "token", Title: "Tokens", Button: "Generate token",
		About: "Bearer tokens for Authentication Method: Bearer Authentication (Entra's Secret Token, Okta's HTTP Header)."}
	clients := credentialSection{Kind: "clients", Noun: "client", Title: "OAuth clients", Button: "Create client",
		About: "Clients for Authentication Method: OAuth2 Client Credentials Grant (Entra), or Basic Auth (Okta): Entra fetches an access token from the Token Endpoint, valid an hour."}
	for _, cr := range all {
		if cr.Kind == relay.KindClient {
			clients.List = append(clients.List, cr)
		} else {
			tokens.List = append(tokens.List, cr)
		}
	}
	d := tenantData{Now: c.now(), Tenant: t, Sections: []credentialSection{tokens, clients}, DefaultDays: defaultDays}
	c.render(w, r, http.StatusOK, "tenant", page{Title: "Tenant " + t.Name, Nav: "tenants", CSRF: s.csrf, Notice: s.takeNotice(), Data: d})
	return nil
}

// credentialRequest reads the form of a new token or client: a name and an
// expiry in days, or never.
func credentialRequest(r *http.Request, tenant string) (admin.TokenRequest, error) {
	req := admin.TokenRequest{Tenant: tenant, Name: strings.TrimSpace(r.PostFormValue("name")), Expires: "never"}
	if r.PostFormValue("never") == "" {
		days, err := strconv.Atoi(strings.TrimSpace(r.PostFormValue("days")))
		if err != nil || days < 1 || days > 3650 {
			return req, errorf(http.StatusBadRequest, "expiry: give a number of days from 1 to 3650, or choose never")
		}
		req.Expires = strconv.Itoa(days) + "d"
	}
	return req, nil
}

// POST /ui/tenants/{tenant}/{kind}: Generate token (or client).
func (c *Console) issue(w http.ResponseWriter, r *http.Request, s *session) error {
	return c.issueWith(w, r, s, (*adminclient.Client).Issue)
}

// POST /ui/tenants/{tenant}/{kind}/rotate: a new one; the others expire
// after the overlap.
func (c *Console) rotate(w http.ResponseWriter, r *http.Request, s *session) error {
	return c.issueWith(w, r, s, (*adminclient.Client).Rotate)
}

// issueWith issues a credential with call (Issue or Rotate) and sends the
// browser to the page that shows its secret once: the secret is never in
// the answer to the POST, which a browser may offer to send again.
func (c *Console) issueWith(w http.ResponseWriter, r *http.Request, s *session, call func(*adminclient.Client, context.Context, adminclient.Kind, admin.TokenRequest) (admin.TokenResponse, error)) error {
	kind, k, err := kindOf(r)
	if err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	req, err := credentialRequest(r, tenant)
	if err != nil {
		return err
	}
	if o := strings.TrimSpace(r.PostFormValue("overlap")); o != "" {
		hours, err := strconv.Atoi(o)
		if err != nil || hours < 0 || hours > 24*90 {
			return errorf(http.StatusBadRequest, "overlap: give a number of hours from 0 to 2160")
		}
		req.Overlap = strconv.Itoa(hours) + "h"
	}
	res, err := call(c.api(s), r.Context(), k, req)
	if err != nil {
		return err
	}
	flash := s.keepIssued(issued{kind: kind, tenant: tenant, res: res, at: c.now()})
	http.Redirect(w, r, Prefix+"secrets/"+flash, http.StatusSeeOther)
	return nil
}

// issuedData is the page that shows a new credential's secret, once.
type issuedData struct {
	Tenant admin.TenantInfo
	Client bool // an OAuth client: Entra's "OAuth2 Client Credentials Grant"
	admin.TokenResponse
}

// GET /ui/secrets/{flash}: the session's new secret, once.
func (c *Console) issued(w http.ResponseWriter, r *http.Request, s *session) error {
	it, ok := s.takeIssued(r.PathValue("flash"), c.now())
	if !ok {
		return errorf(http.StatusGone, "this secret was shown once and is not kept: if it was not copied, revoke it and generate another")
	}
	t, err := tenantNamed(r, c.api(s), it.tenant)
	if err != nil {
		return err
	}
	kind := it.kind
	setCookie(w, r, shownCookie, r.PathValue("flash"), Prefix, 0)
	c.render(w, r, http.StatusOK, "issued", page{Title: "New secret for " + t.Name, Nav: "tenants", CSRF: s.csrf,
		Data: issuedData{Tenant: t, Client: kind == "clients", TokenResponse: it.res}})
	return nil
}

// revokeData is the revocation's confirmation.
type revokeData struct {
	Kind   string
	Tenant string
	Token  relay.Token
}

// credentialOf returns the credential the path names, of the path's tenant.
func credentialOf(r *http.Request, api *adminclient.Client) (revokeData, error) {
	kind, k, err := kindOf(r)
	if err != nil {
		return revokeData{}, err
	}
	d := revokeData{Kind: kind, Tenant: r.PathValue("tenant")}
	list, err := api.Credentials(r.Context(), k, d.Tenant)
	if err != nil {
		return d, err
	}
	for _, t := range list {
		if t.ID == r.PathValue("id") {
			d.Token = t
			return d, nil
		}
	}
	return d, errorf(http.StatusNotFound, "tenant %s has no %s %q", d.Tenant, strings.TrimSuffix(kind, "s"), r.PathValue("id"))
}

// GET /ui/tenants/{tenant}/{kind}/{id}/revoke asks to confirm.
func (c *Console) confirmRevoke(w http.ResponseWriter, r *http.Request, s *session) error {
	d, err := credentialOf(r, c.api(s))
	if err != nil {
		return err
	}
	c.render(w, r, http.StatusOK, "revoke", page{Title: "Revoke " + d.Token.Name, Nav: "tenants", CSRF: s.csrf, Data: d})
	return nil
}

// POST /ui/tenants/{tenant}/{kind}/{id}/revoke
func (c *Console) revoke(w http.ResponseWriter, r *http.Request, s *session) error {
	api := c.api(s)
	d, err := credentialOf(r, api)
	if err != nil {
		return err
	}
	kind, k, _ := kindOf(r)
	t, err := api.Revoke(r.Context(), k, d.Token.ID)
	if err != nil {
		return err
	}
	if t.AlreadyRevoked {
		noun := strings.TrimSuffix(kind, "s")
		s.say(fmt.Sprintf("%s %s (%s) was revoked already, at %s.", strings.ToUpper(noun[:1])+noun[1:], t.ID, t.Name, when(t.Revoked)))
	} else {
		s.say(fmt.Sprintf("Revoked %s %s (%s): it stops working at once.", strings.TrimSuffix(kind, "s"), t.ID, t.Name))
	}
	http.Redirect(w, r, Prefix+"tenants/"+url.PathEscape(d.Tenant)+"#"+kind, http.StatusSeeOther)
	return nil
}
