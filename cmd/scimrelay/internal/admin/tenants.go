// SPDX-License-Identifier: Apache-2.0

package admin

import "net/http"

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
	if list == nil {
		list = []TenantInfo{}
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}
