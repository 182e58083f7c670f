// SPDX-License-Identifier: Apache-2.0

package scim

import "context"

// Backend stores the resources the handlers serve. The relay implements it
// on bbolt; scimtest.Memory is a small in-memory one, and
// scimtest.RunBackendTests is the suite every implementation must pass.
//
// Errors are *Error values or wrap the sentinels of this package
// (ErrNotFound for an unknown tenant or id, ErrUniqueness, ErrInvalidValue for
// a tenant's required attributes or an unknown member, ErrPreconditionFailed,
// ErrTooMany for a sorted list over Query.SortLimit); anything else is
// answered 500 and logged. Implementations must be safe for concurrent use.
//
// Resources come back without meta.location: the handler knows the URL the
// client used and sets it on what it answers.
type Backend interface {
	// Create stores a new resource of r.Type and returns it with id and meta
	// set. A Group's initial members come in r.Attrs["members"]; the
	// returned Group has none (Members pages through them).
	Create(ctx context.Context, tenant string, r *Resource) (WriteResult, error)

	// Get returns a resource. A Group comes without its members (Members
	// pages through them, so that a group of 100,000 members is never one
	// value); a User comes with its read-only groups attribute.
	Get(ctx context.Context, tenant string, rt *ResourceType, id string) (*Resource, error)

	// List returns one page of the resources of rt that match q, in a stable
	// order, and the exact number of matches. Groups come without members.
	// Memory must not grow with the size of a group: a filter on members
	// (or on a User's groups) is matched with Filter.MatchElements.
	List(ctx context.Context, tenant string, rt *ResourceType, q Query) (Page, error)

	// Update changes a resource in one transaction: it calls fn with the stored
	// resource (without a Group's members or a User's groups) and stores what
	// fn returns. fn may be called more than once and must not have side
	// effects. An error from fn is returned as is and changes nothing. An
	// update that changes nothing keeps the version and produces nothing.
	Update(ctx context.Context, tenant string, rt *ResourceType, id string, fn UpdateFunc) (WriteResult, error)

	// Delete removes a resource; deleting a User also removes its memberships.
	// The stored resource must meet ifMatch (else ErrPreconditionFailed).
	// The result has no Resource.
	Delete(ctx context.Context, tenant string, rt *ResourceType, id string, ifMatch Precondition) (WriteResult, error)

	// Members returns up to limit members of a group in a stable order,
	// starting after the member whose value is after ("" = from the start).
	// An unknown group is ErrNotFound. A non-empty version is the group's
	// meta.version as the caller read it: when the group has another
	// version now, or is gone, Members returns ErrChanged and no members,
	// so that an answer never pairs one version's ETag with another's
	// members, or pages of different versions.
	Members(ctx context.Context, tenant, groupID, version, after string, limit int) ([]Member, error)
}

// WriteResult is what a write produced: the resource as stored and the ids
// of what the write told the world about it. The handler reports the ids
// in RequestInfo, so that a request's log entry names what it caused.
type WriteResult struct {
	// Resource is the resource after the write; nil after Delete.
	Resource *Resource
	// EventIDs are the ids of the events the write committed (for the
	// relay, its CloudEvents), in commit order; empty when the write changed
	// nothing or the backend emits no events.
	EventIDs []string
	// Deleted is the resource a Delete removed, or would have removed when
	// refused by a precondition, as it was (nil otherwise).
	Deleted *Resource
}

// UpdateFunc computes the change to a stored resource. It returns an Update
// whose Resource is the complete new state (for a Group, without members).
type UpdateFunc func(cur *Resource) (*Update, error)

// Update is a change to one resource, as computed from its stored state.
type Update struct {
	// Resource is the new state; for a Group, without members.
	Resource *Resource
	// Changes lists what changed in Resource, path by path (members excluded).
	Changes []Change
	// Members lists changes to a Group's membership, applied in order after
	// Resource. The backend decides which of them change anything: adding a
	// member twice adds it once, removing an absent one removes nothing.
	Members []MemberOp
	// Patch marks a PATCH's update: a required attribute the stored state
	// has and Resource lacks was removed, which RFC 7644 §3.5.2.2 refuses
	// with "mutability" (a PUT leaving it out is "invalidValue").
	Patch bool
}

// Changed reports whether the update changes anything.
func (u *Update) Changed() bool { return len(u.Changes) > 0 || len(u.Members) > 0 }

// MemberOpKind says what a MemberOp does.
type MemberOpKind int

// Membership operations.
const (
	// AddMembers adds Members (by value), leaving existing ones in place.
	AddMembers MemberOpKind = iota + 1
	// RemoveMembers removes Members (by value).
	RemoveMembers
	// RemoveAllMembers empties the group.
	RemoveAllMembers
	// RemoveMatchingMembers removes every member matching Filter, a filter on
	// the sub-attributes of members (value, display, type, $ref).
	RemoveMatchingMembers
)

// MemberOp is one change to a group's membership.
type MemberOp struct {
	Kind    MemberOpKind
	Members []Member
	Filter  *Filter
}

// Member is one member of a group.
type Member struct {
	Value   string `json:"value"`             // the member's id
	Display string `json:"display,omitempty"` // as the client sent it
	Type    string `json:"type,omitempty"`    // "User" or "Group"; the backend fills it in
	Ref     string `json:"$ref,omitempty"`    // the member's URI; the handler fills it in on output
}

// Query selects and pages resources.
type Query struct {
	// Filter selects resources; nil selects all.
	Filter *Filter
	// StartIndex is the 1-based index of the first result to return.
	StartIndex int
	// Count is the page size; 0 asks for the total only.
	Count int
	// SortBy orders the results; nil means the backend's stable order.
	SortBy *AttrPath
	// Descending reverses SortBy.
	Descending bool
	// SortLimit bounds what a sorted List holds in memory: with SortBy set,
	// more than SortLimit matches is ErrTooMany. 0 means no limit.
	SortLimit int
	// Stored lets the backend answer with Page.Stored instead of
	// Page.Resources, skipping the decoding of each resource. The handler
	// sets it when it writes the resources whole (no attributes or
	// excludedAttributes). A backend may ignore it.
	Stored bool
}

// Page is one page of a List. With Query.Stored the backend may fill
// Stored instead of Resources; never both.
type Page struct {
	Total     int
	Resources []*Resource
	Stored    []StoredResource
	// Bytes is about what the page holds in memory: its resources' size
	// as stored, with what the backend reads with them (a user's groups).
	// The handler counts it against the tenant's MaxBodiesInFlight until
	// the answer is sent. 0: not told.
	Bytes int
}

// Authenticator checks a request's credentials for a tenant. Both methods
// return nil when the credentials are valid for tenant, an error matching
// ErrNotFound or ErrUnauthorized when the tenant does not exist (the
// handler answers both as a wrong credential, so that tenant names cannot
// be probed), and one matching ErrUnauthorized (with a detail saying why:
// unknown, expired, revoked) otherwise.
type Authenticator interface {
	// Authenticate checks a bearer token.
	Authenticate(ctx context.Context, tenant, token string) error
	// AuthenticateBasic checks HTTP Basic credentials (Okta's "Basic Auth"
	// option): an OAuth client's id as user and its secret as password.
	AuthenticateBasic(ctx context.Context, tenant, user, password string) error
}
