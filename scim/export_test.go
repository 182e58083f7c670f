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
