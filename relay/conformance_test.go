// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"path/filepath"
	"testing"

	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// TestBackendConformance holds the store to the contract the SCIM handlers
// rely on, the same suite the in-memory backend passes.
func TestBackendConformance(t *testing.T) {
	scimtest.RunBackendTests(t, func(t *testing.T) scim.Backend {
		s, err := Open(filepath.Join(t.TempDir(), "scimrelay.db"), Options{
			Tenants: []TenantOptions{{Name: scimtest.Tenant}, {Name: scimtest.OtherTenant}},
			// The suite is about what the store answers, not durability.
			NoSync: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
