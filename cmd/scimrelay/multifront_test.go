// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
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
