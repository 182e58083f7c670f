// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"strings"

	"github.com/scimrelay/scimrelay/scim"
)

// What a request's work costs its tenant's rate limit beyond the request
// itself: every EventsPerRequest events it makes, every
// MembershipsPerRequest memberships it reads one by one (what the
// membership bound counts, maxMembershipsExamined), every BytesPerRequest
// of stored resource a write reads and stores, and every
// ComparedBytesPerRequest of resources a list's filter tests times its
// terms, cost one request more, charged once it is done, refused or not.
//
// A membership change is one event per member, and every tenant's events
// go through one outbox in commit order: a PATCH of 100 bytes removing
// 5,000 members, sent at 7% of the request limit, held another tenant's
// events back from its own webhook for 6-7 s (the tenant review). A write
// walking a million memberships holds the committer, which every tenant's
// writes wait for, for about a second, and one refused by the bound had
// cost its sender one request.
//
// A write decodes, copies, checks and encodes the whole resource it
// changes inside the committer: a one-attribute PATCH of a user of 2.4 MB
// (100,000 phone numbers, within limits.max_body) held it about 250 ms,
// and eight at once held every tenant's writes for four seconds, at the
// cost of eight requests (an attack round). MaxResourceBytes bounds one
// write; BytesPerRequest makes a tenant that writes large resources pay
// for them, about a millisecond of the committer a request.
const (
	EventsPerRequest      = 100
	MembershipsPerRequest = 1000
	BytesPerRequest       = 8 << 10
	// ComparedBytesPerRequest: a list's filter decodes and tests every
	// resource no index narrows it to, and each term reads (folds and
	// compares) the values it names anew: a 100-term filter of `co`s over
	// one user holding a 1 MiB value took 2 s of CPU. Every MiB of
	// resources tested, times the filter's terms, costs one request
	// more: a one-term filter over a million users of 2 KiB about 2,000,
	// some ten seconds of the tenant's rate for about as much CPU.
	ComparedBytesPerRequest = 1 << 20
)

// MaxResourceBytes bounds a user or group as stored, its members aside (a
// group's are kept apart): a create, or a write that leaves a resource
// larger than this and grows it by more than resizeSlack, is refused (400
// invalidValue). A resource an earlier release stored larger can still be
// written without growing, deactivated (active, meta.version and
// lastModified grow it by a few bytes) and deleted. An identity
// provider's users are a few KiB; the bound is on what one write can make
// the committer do.
const MaxResourceBytes = 256 << 10

// resizeSlack is what a write may grow a resource already over
// MaxResourceBytes by.
const resizeSlack = 256

// checkSize refuses a resource whose stored value (header included) is
// size bytes, once it is over MaxResourceBytes and over was (the value it
// replaces; 0 for a create) by more than resizeSlack.
func checkSize(rt *scim.ResourceType, size, was int) error {
	if size-recordHeader <= MaxResourceBytes || (was > 0 && size <= was+resizeSlack) {
		return nil
	}
	return scim.Errorf(scim.ErrInvalidValue, "the %s would be %d bytes as stored (its members aside); the limit is %d", strings.ToLower(rt.Name), size-recordHeader, MaxResourceBytes)
}

// ChargeTo sets what the store charges a tenant's requests to (the SCIM
// listener's rate limit): charge takes requests from tenant's limit,
// past what it holds if need be. Set before the store serves.
func (s *Store) ChargeTo(charge func(tenant string, requests int)) { s.charge = charge }

// work is what a request did that its tenant pays for.
type work struct {
	events      int // events it made
	memberships int // memberships it read one by one
	stored      int // bytes of stored resources a write read and encoded
	compared    int // bytes of stored resources a list's filter tested, times its terms
}

// chargeFor charges tenant for w.
func (s *Store) chargeFor(tenant string, w work) {
	n := w.events/EventsPerRequest + w.memberships/MembershipsPerRequest + w.stored/BytesPerRequest + w.compared/ComparedBytesPerRequest
	if n > 0 && tenant != "" && s.charge != nil {
		s.charge(tenant, n)
	}
}
