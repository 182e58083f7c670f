// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// Two SCIM front ends, each with tenants of its own, publish into one
// stream: neither's events may be stored out of their resource's order,
// which the delivery worker would take for duplicates.
func TestTwoFrontEndsPublishIntoOneStream(t *testing.T) {
	ns := eventstest.RunServer(t)
	h := newHook(t)
	configure := func(tenant, token string) *config.Config {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL = eventstest.URL(ns)
		cfg.Tenants = []config.Tenant{{Name: tenant, Tokens: []string{token}}}
		withSink(cfg, "crm", h.URL, nil)
		return cfg
	}
	a, b := startRelay(t, configure("acme", acmeToken), roleSCIM), startRelay(t, configure("globex", globexToken), roleSCIM)
	wcfg := configure("acme", acmeToken)
	wcfg.Tenants = append(wcfg.Tenants, config.Tenant{Name: "globex", Tokens: []string{globexToken}})
	worker := startRelay(t, wcfg, roleSinks)
	worker.wantStatus("/readyz", 200, 20*time.Second)
	const writers, per = 4, 40
	var wg sync.WaitGroup
	for _, f := range []struct {
		p             *relayProc
		tenant, token string
	}{{a, "acme", acmeToken}, {b, "globex", globexToken}} {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var ids []string
				for i := range per {
					r := f.p.scim(f.tenant, f.token, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d-%d"}`, w, i))
					if r.status != 201 {
						t.Errorf("%s: POST %d", f.tenant, r.status)
						return
					}
					ids = append(ids, r.body["id"].(string))
				}
				var members []string
				for _, id := range ids {
					members = append(members, fmt.Sprintf(`{"value":%q}`, id))
				}
				r := f.p.scim(f.tenant, f.token, "POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g%d","members":[%s]}`, w, strings.Join(members, ",")))
				if r.status != 201 {
					t.Errorf("%s: POST group %d", f.tenant, r.status)
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, p := range []*relayProc{a, b} {
		eventstest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
			if n, err := p.srv.store.OutboxDepth(); err != nil || n != 0 {
				return fmt.Errorf("the outbox still holds %d events (%v)", n, err)
			}
			return nil
		})
	}
	perTenant := writers * (per + 1 + per)
	got := readStream(t, a.srv.js, 2*perTenant)
	lastOf := map[string]uint64{}
	var overtaken []string
	for _, s := range got {
		k := s.tenant + "/" + s.subject
		if s.subjectSeq < lastOf[k] {
			overtaken = append(overtaken, fmt.Sprintf("%s subjectseq %d stored after %d", k, s.subjectSeq, lastOf[k]))
		}
		lastOf[k] = max(lastOf[k], s.subjectSeq)
	}
	if len(overtaken) > 0 {
		t.Errorf("%d events stored after a later event of their resource, first: %s", len(overtaken), overtaken[0])
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := h.distinct(); n != 2*perTenant {
			return fmt.Errorf("the receiver got %d distinct events, want %d; the worker passed over %v as duplicates", n, 2*perTenant, metric(t, worker, "scimrelay_sink_events_total", "outcome", "duplicate"))
		}
		return nil
	})
	if v := h.orderViolation(); v != "" {
		t.Errorf("out of order at the receiver: %s", v)
	}
}

// TestFrontEndsOfOtherTenantsShareATenantScopedSink: README, Deploying (a
// front end per set of tenants) and Filters. Sink crm takes acme (front
// end A's) and globex (front end B's, beside initech). Neither front end's
// relay.yaml can name the other's tenant, so A's gives the sink acme and
// B's globex; the workers' give it both. A restarts (an upgrade, a node
// drained): the sink still receives globex's events. Before, A's start
// wrote acme alone into the sink's consumers, and globex's events were
// passed over by every worker, never sent, with nothing said.
func TestFrontEndsOfOtherTenantsShareATenantScopedSink(t *testing.T) {
	ns := eventstest.RunServer(t)
	h := newHook(t)
	acme := config.Tenant{Name: "acme", Tokens: []string{acmeToken}}
	globex := config.Tenant{Name: "globex", Tokens: []string{globexToken}}
	initech := config.Tenant{Name: "initech", Tokens: []string{"initech-static-token-0123456789abcdef"}}
	configure := func(dir string, sinkTenants []string, tenants ...config.Tenant) *config.Config {
		cfg := testConfig(t, dir)
		cfg.NATS.URL = eventstest.URL(ns)
		cfg.Tenants = tenants
		withSink(cfg, "crm", h.URL, func(s *config.Sink) { s.Tenants = sinkTenants })
		if ps := checkConfig(cfg, roleSCIM); len(ps) > 0 {
			t.Fatalf("relay.yaml refused: %v", ps)
		}
		return cfg
	}
	aDir := t.TempDir()
	a := startRelay(t, configure(aDir, []string{"acme"}, acme), roleSCIM)
	b := startRelay(t, configure(t.TempDir(), []string{"globex"}, globex, initech), roleSCIM)
	worker := startRelay(t, configure(t.TempDir(), []string{"acme", "globex"}, acme, globex, initech), roleSinks)
	worker.wantStatus("/readyz", 200, 20*time.Second)
	a.stop()
	a = startRelay(t, configure(aDir, []string{"acme"}, acme), roleSCIM)
	a.wantStatus("/readyz", 200, 20*time.Second)

	var want []string
	for i := range 2 * events.DefaultPartitions { // across the partitions
		id := b.scim("globex", globexToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"g%d"}`, i)).want(t, 201).str("id")
		want = append(want, "Users/"+id+" user.created")
	}
	want = append(want, "Users/"+a.createUser(t, "ann")+" user.created")
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		got := h.received()
		if missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return slices.Contains(got, w) }); len(missing) > 0 {
			return fmt.Errorf("%d of the %d events not delivered after front end A's restart, %s the first", len(missing), len(want), missing[0])
		}
		return nil
	})
}
