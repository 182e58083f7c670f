// SPDX-License-Identifier: Apache-2.0

package scim

// What the external tests (package scim_test) share with the internal ones.
// The external tests exist because they use scimtest, which imports scim.
const (
	MemberChunk   = memberChunk
	ReadAttempts  = readAttempts
	BaseUserJSON  = baseUserJSON
	BaseGroupJSON = baseGroupJSON
	UserSchemas   = userSchemas
)

var (
	Fixture       = fixture
	PatchBody     = patchBody
	MemberOpsJSON = memberOpsJSON
)

// BodiesHeld is the bytes of request bodies tenant's requests hold
// (inflight.go).
func (h *Handler) BodiesHeld(tenant string) int64 { return h.inFlight.of(tenant).Load() }
