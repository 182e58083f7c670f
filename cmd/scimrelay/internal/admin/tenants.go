// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// TenantInfo is a tenant as an identity provider's admin is told about it:
// where to point the provisioning job.
type TenantInfo struct {
	Name string `json:"name"`
	// SCIMURL is the Tenant URL (Entra) or SCIM connector base URL (Okta).
	SCIMURL string `json:"scim_url"`
	// TokenEndpoint is the tenant's OAuth 2.0 token endpoint.
	TokenEndpoint string `json:"token_endpoint"`
	// Unique is the attribute that must be unique: userName or email.
	Unique string `json:"unique"`
	// Required lists attributes a user must have.
	Required []string `json:"required,omitempty"`
}

// GET /admin/v1/tenants
func (h *Handler) tenants(w http.ResponseWriter, _ *http.Request) error {
	var list []TenantInfo
	if h.o.Tenants != nil {
		list = h.o.Tenants()
	}
	writeList(w, list)
	return nil
}

// tenantNames returns the configured tenants' names.
func (h *Handler) tenantNames() []string {
	var names []string
	if h.o.Tenants != nil {
		for _, t := range h.o.Tenants() {
			names = append(names, t.Name)
		}
	}
	return names
}

// checkTenant answers a tenant parameter once its answer is known: a
// configured tenant's, or one not configured of which the answer found
// something (found: a removed tenant's tokens, log entries or events stay
// until it is purged, and are read to be revoked or looked into), is
// answered; any other name is a misspelt one, 404 naming the parameter,
// as an unknown sink is. Without a list of tenants (Options.Tenants nil)
// nothing is refused.
func (h *Handler) checkTenant(tenant string, found bool) error {
	if found {
		return nil
	}
	return h.checkConfigured(tenant, ", and the relay holds nothing of that name that this asks for")
}

// checkConfigured refuses a tenant parameter that names no configured
// tenant, 404 naming the parameter, saying why after "not configured";
// as checkTenant, it refuses nothing without a list of tenants. A
// credential is issued only to a configured tenant.
func (h *Handler) checkConfigured(tenant, why string) error {
	if tenant == "" || h.o.Tenants == nil {
		return nil
	}
	names := h.tenantNames()
	if slices.Contains(names, tenant) {
		return nil
	}
	return errorf(http.StatusNotFound, "tenant: no such tenant %q: it is not configured%s (tenants: %s)", tenant, why, TenantNames(names))
}

// namedTenants is how many tenant names a message names at most.
const namedTenants = 10

// TenantNames lists configured tenants, in order, in a message that
// refuses a name none of them has: "none", the names, or, of a relay
// hosting more than namedTenants, the first of them and how many more
// there are (a relay of 2,000 tenants answered a misspelt one with some
// 22 KB).
func TenantNames(names []string) string {
	sorted := slices.Sorted(slices.Values(names))
	switch {
	case len(sorted) == 0:
		return "none"
	case len(sorted) <= namedTenants:
		return strings.Join(sorted, ", ")
	}
	return fmt.Sprintf("%s and %d more; GET /admin/v1/tenants lists them", strings.Join(sorted[:namedTenants], ", "), len(sorted)-namedTenants)
}

// checkTenantHeld is checkTenant for a query within a time window: a
// window without entries of a tenant no longer configured says nothing of
// whether the relay holds any (the tenant's last request may be a day
// old), so held, a look outside the window, decides; it is asked only
// then.
func (h *Handler) checkTenantHeld(tenant string, found bool, held func() (bool, error)) error {
	if !found && tenant != "" && h.o.Tenants != nil && !slices.Contains(h.tenantNames(), tenant) {
		var err error
		if found, err = held(); err != nil {
			return err
		}
	}
	return h.checkTenant(tenant, found)
}

// narrowedBy reports whether a query narrows its answer by more than its
// tenant and time window, with any of names (a page cursor, a filter): an
// empty page of such a query says nothing of whether the relay holds
// anything of a tenant no longer configured (checkTenant), so it is
// answered, not refused.
func narrowedBy(v url.Values, names ...string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return v.Get(n) != "" })
}

// writeList answers a listing: an empty one is [], never null.
func writeList[T any](w http.ResponseWriter, list []T) {
	if list == nil {
		list = []T{}
	}
	writeJSON(w, http.StatusOK, list)
}
