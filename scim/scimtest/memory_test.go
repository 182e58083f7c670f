// SPDX-License-Identifier: Apache-2.0

package scimtest

import (
	"testing"

	"github.com/scimrelay/scimrelay/scim"
)

// TestMemoryBackend holds the in-memory backend to the contract the relay's
// store is held to.
func TestMemoryBackend(t *testing.T) {
	RunBackendTests(t, func(t *testing.T) scim.Backend {
		return NewMemory(map[string]string{Tenant: "t1", OtherTenant: "t2"})
	})
}
