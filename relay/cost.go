// SPDX-License-Identifier: Apache-2.0

package relay

// What a request's work costs its tenant's rate limit beyond the request
// itself: every EventsPerRequest events it makes, and every
// MembershipsPerRequest memberships it reads one by one (what the
// membership bound counts, maxMembershipsExamined), cost one request more,
// charged once it is done, refused or not.
//
// A membership change is one event per member, and every tenant's events
// go through one outbox in commit order: a PATCH of 100 bytes removing
// 5,000 members, sent at 7% of the request limit, held another tenant's
// events back from its own webhook for 6-7 s (the tenant review). A write
// walking a million memberships holds the committer, which every tenant's
// writes wait for, for about a second, and one refused by the bound had
// cost its sender one request.
const (
	EventsPerRequest      = 100
	MembershipsPerRequest = 1000
)

// ChargeTo sets what the store charges a tenant's requests to (the SCIM
// listener's rate limit): charge takes requests from tenant's limit,
// past what it holds if need be. Set before the store serves.
func (s *Store) ChargeTo(charge func(tenant string, requests int)) { s.charge = charge }

// chargeFor charges tenant for the events a request made and the
// memberships it read.
func (s *Store) chargeFor(tenant string, events, examined int) {
	if n := events/EventsPerRequest + examined/MembershipsPerRequest; n > 0 && tenant != "" && s.charge != nil {
		s.charge(tenant, n)
	}
}
