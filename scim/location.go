// SPDX-License-Identifier: Apache-2.0

package scim

import "strings"

// The handler computes every URL it hands out with these, once per
// resource; backends return resources without meta.location.

// TenantURL returns a tenant's SCIM base URL under the service's URL:
// https://relay.example.com/scim/v2/acme.
func TenantURL(serviceURL, tenant string) string {
	return strings.TrimRight(serviceURL, "/") + "/scim/v2/" + tenant
}

// Location returns the URL of a resource (its meta.location and the
// Location header of a create) under a tenant's base URL.
func Location(tenantURL string, rt *ResourceType, id string) string {
	return tenantURL + rt.Endpoint + "/" + id
}
