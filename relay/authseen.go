// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// authSeen is when this process last accepted a credential of one tenant,
// and last refused one of its credentials that no longer works (expired or
// revoked), in unix nanoseconds (0: not since the process started).
//
// The refusal alert compares the two rather than counting 401s over a
// window: an identity provider refused stops for hours between attempts
// (Entra quarantines the job and tries again after 6, 12, then every 24
// hours), so a rate of refusals is zero most of the time provisioning is
// stopped, and an alert on it never held for its `for` duration.
type authSeen struct{ accepted, refused atomic.Int64 }

// authSeenMap holds an authSeen per tenant name, made at the tenant's first
// credential accepted or refused. Only configured tenants' names get in
// (an unknown tenant is refused before either is noted), so it stays as
// small as relay.yaml.
type authSeenMap struct{ m sync.Map } // tenant name → *authSeen

func (a *authSeenMap) of(tenant string) *authSeen {
	if v, ok := a.m.Load(tenant); ok {
		return v.(*authSeen)
	}
	v, _ := a.m.LoadOrStore(tenant, &authSeen{})
	return v.(*authSeen)
}

// noteAccepted records that a credential of tenant was accepted at now.
func (s *Store) noteAccepted(tenant string, now time.Time) {
	a := s.tokens.seen.of(tenant)
	a.accepted.Store(after(now, a.refused.Load()))
}

// noteRefused records that tok, a credential of its tenant that no longer
// works, was presented at now and refused. A tenant no longer configured
// gets no entry: its name would keep it past its purge and configured
// again.
func (s *Store) noteRefused(tok Token, now time.Time) {
	if !s.HasTenant(tok.Tenant) {
		return
	}
	a := s.tokens.seen.of(tok.Tenant)
	a.refused.Store(after(now, a.accepted.Load()))
}

// after is now in unix nanoseconds, or just after other if the clock,
// stepped back since other was noted, says earlier: the alert compares
// the two, and what came later must stay the later.
func after(now time.Time, other int64) int64 {
	return max(now.UnixNano(), other+1)
}

// forgetSeen drops what was noted of the tenants no longer in tenants.
func (a *authSeenMap) forgetSeen(tenants map[string]*tenant) {
	a.m.Range(func(k, _ any) bool {
		if _, ok := tenants[k.(string)]; !ok {
			a.m.Delete(k)
		}
		return true
	})
}

// credentialSeen exports, at each scrape, authSeen of each configured
// tenant.
type credentialSeen struct{ s *Store }

var (
	credentialAcceptedDesc = prometheus.NewDesc("scimrelay_tenant_credential_accepted_timestamp_seconds",
		"When this process last accepted a credential of the tenant (a SCIM request's or the token endpoint's), in unix seconds; 0: not since it started.",
		[]string{"tenant"}, nil)
	credentialRefusedDesc = prometheus.NewDesc("scimrelay_tenant_credential_refused_timestamp_seconds",
		"When this process last refused a credential of the tenant that no longer works (an expired or revoked token or OAuth client), in unix seconds; 0: not since it started. Later than the accepted one: the identity provider's provisioning has stopped.",
		[]string{"tenant"}, nil)
)

func (c credentialSeen) Describe(ch chan<- *prometheus.Desc) {
	ch <- credentialAcceptedDesc
	ch <- credentialRefusedDesc
}

func (c credentialSeen) Collect(ch chan<- prometheus.Metric) {
	seconds := func(ns int64) float64 {
		if ns == 0 {
			return 0
		}
		return unixSeconds(time.Unix(0, ns))
	}
	for name := range c.s.tenantMap() {
		a := c.s.tokens.seen.of(name)
		ch <- prometheus.MustNewConstMetric(credentialAcceptedDesc, prometheus.GaugeValue, seconds(a.accepted.Load()), name)
		ch <- prometheus.MustNewConstMetric(credentialRefusedDesc, prometheus.GaugeValue, seconds(a.refused.Load()), name)
	}
}
