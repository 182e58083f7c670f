// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// scraped is one series of a process's /metrics, with the instance label
// Prometheus adds to what it scrapes of each process.
type scraped struct {
	labels map[string]string
	value  float64
}

// scrapeProcs reads /metrics of every process over HTTP, as Prometheus
// scrapes each one, and returns the series of name, each with its
// process's instance label.
func scrapeProcs(t *testing.T, name string, procs map[string]*relayProc) ([]scraped, error) {
	t.Helper()
	var out []scraped
	for instance, p := range procs {
		c := &adminclient.Client{BaseURL: p.adminURL, Token: adminSecret, Timeout: 10 * time.Second}
		families, err := c.Metrics(t.Context())
		if err != nil {
			return nil, fmt.Errorf("scraping %s: %w", instance, err)
		}
		f := families[name]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{"instance": instance}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			out = append(out, scraped{labels: l, value: m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()})
		}
	}
	return out, nil
}

// maxWithout evaluates PromQL's max without (drop...) (series): by hand,
// grouping by the labels left.
func maxWithout(series []scraped, drop ...string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range series {
		var keys []string
		for k, v := range s.labels {
			if !slices.Contains(drop, k) {
				keys = append(keys, k+"="+v)
			}
		}
		sort.Strings(keys)
		key := "{" + strings.Join(keys, ",") + "}"
		if v, ok := out[key]; !ok || s.value > v {
			out[key] = s.value
		}
	}
	return out
}

func describeSeries(series []scraped) string {
	var b strings.Builder
	for _, s := range series {
		fmt.Fprintf(&b, "  %v = %v\n", s.labels, s.value)
	}
	return b.String()
}

// TestDeadLettersAlertEndsOnceRedrivenInTheDeployedShape: the deployed
// shape (a front end and two sink workers on one NATS, each scraped on its
// own) with a receiver that refused an event for good (a dead letter).
// The operator points the sink at the mended receiver (a reload of every
// process, as the front end's relay.yaml must list the workers' sinks) and
// redrives the queue through a worker (README: `docker compose exec
// relay-sinks-1 scimrelay ...`): the queue is empty, the workers say 0,
// and ScimrelayDeadLetters (max without (instance, pod)
// (scimrelay_sink_dead_letters) > 0) must stop firing.
func TestDeadLettersAlertEndsOnceRedrivenInTheDeployedShape(t *testing.T) {
	if testing.Short() {
		t.Skip("a front end and two workers")
	}
	gone, _ := goneHook(t)
	mended := newHook(t)
	d := runDeployedShape(t, sinkYAML("crm", gone.URL))
	front, w1, w2 := d.procs[0], d.procs[1], d.procs[2]
	procs := map[string]*relayProc{"front": front, "worker-1": w1, "worker-2": w2}
	front.createUser(t, "ann")
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if n := metric(t, w1, "scimrelay_sink_dead_letters") + metric(t, w2, "scimrelay_sink_dead_letters"); n != 2 {
			return fmt.Errorf("the workers say %v dead letters, want 1 each", n)
		}
		return nil
	})
	// The sink is pointed at the mended receiver, in every process.
	d.write(sinkYAML("crm", mended.URL))
	d.reload(front, w1, w2)
	res, err := w1.srv.sinks.Redrive(t.Context(), sinks.RedriveQuery{Sink: "crm"}, nil)
	if err != nil || res.Delivered != 1 {
		t.Fatalf("the redrive through worker 1: %+v, %v", res, err)
	}
	waitDelivered(t, mended, 1)
	deadLettersAlertEnds(t, procs)
}

// deadLettersAlertEnds waits until ScimrelayDeadLetters, max without
// (instance, pod) (scimrelay_sink_dead_letters) > 0 over every process's
// series, fires for no sink (the workers read the queue every 5 s).
func deadLettersAlertEnds(t *testing.T, procs map[string]*relayProc) {
	t.Helper()
	eventstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		series, err := scrapeProcs(t, "scimrelay_sink_dead_letters", procs)
		if err != nil {
			return err
		}
		for group, v := range maxWithout(series, "instance", "pod") {
			if v > 0 {
				return fmt.Errorf("ScimrelayDeadLetters fires for %s (value %v) with the queue empty; the series scraped:\n%s", group, v, describeSeries(series))
			}
		}
		return nil
	})
}

// TestSinkStateAlertQuietOnceAFailedReloadIsRedone: in the deployed shape,
// the front end's reload adding sink erp fails (NATS away: its consumers
// cannot be made), which leaves erp idle until the next reload and sets
// its scimrelay_sink_state_read_timestamp_seconds, so that
// ScimrelaySinkStateStale fires for it (TestIdleAddedSinkIsSeenByTheStateAlert).
// NATS back, every process is reloaded and erp set up and delivering:
// every process's state read of every sink must then keep advancing (the
// workers read it every 5 s), or the alert, which takes no maximum, fires
// on that process's series for good.
func TestSinkStateAlertQuietOnceAFailedReloadIsRedone(t *testing.T) {
	if testing.Short() {
		t.Skip("a front end and two workers, NATS stopped")
	}
	crm, erp := newHook(t), newHook(t)
	dir := t.TempDir()
	ns := eventstest.RunServerAt(t, dir, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	d := &deployedShape{t: t, nats: eventstest.URL(ns)}
	for range 3 {
		d.paths = append(d.paths, filepath.Join(t.TempDir(), "relay.yaml"))
	}
	d.write(sinkYAML("crm", crm.URL))
	for i, role := range []string{roleSCIM, roleSinks, roleSinks} {
		d.procs = append(d.procs, startReloadableAs(t, d.paths[i], role, io.Discard, withMaxReload(3*time.Second)))
	}
	front, w1, w2 := d.procs[0], d.procs[1], d.procs[2]
	procs := map[string]*relayProc{"front": front, "worker-1": w1, "worker-2": w2}
	front.createUser(t, "ann")
	waitDelivered(t, crm, 1)

	ns.Shutdown()
	ns.WaitForShutdown()
	d.write(sinkYAML("crm", crm.URL) + sinkYAML("erp", erp.URL))
	if _, err := front.srv.reload(t.Context()); err == nil {
		t.Fatal("the front end's reload adding erp with NATS away succeeded")
	}
	eventstest.RunServerAt(t, dir, port)
	eventstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if !front.srv.nc.IsConnected() {
			return fmt.Errorf("the front end is not connected to NATS again")
		}
		return nil
	})
	d.reload(front, w1, w2)
	front.createUser(t, "bob")
	waitDelivered(t, erp, 1)
	// The alert takes no maximum: a process whose state read stays as a
	// failed reload left it fires a minute on, for good. The front end
	// reads no sink's state (it runs no worker): it must export none.
	series, err := scrapeProcs(t, "scimrelay_sink_state_read_timestamp_seconds", procs)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range series {
		if s.labels["instance"] == "front" {
			t.Errorf("the front end exports a state read it never reads again, on which ScimrelaySinkStateStale fires a minute on: %v; series:\n%s", s.labels, describeSeries(series))
		}
	}
}

// TestDeadLettersAlertEndsOncePurgedInTheDeployedShape: a receiver
// refused globex's event for good (a dead letter); globex leaves
// relay.yaml, which restarts the front end (the Helm chart rolls its pods
// when the ConfigMap changes), and is purged through the front end, the
// only process that can: its dead letters are deleted, the workers say 0,
// and ScimrelayDeadLetters must stop firing.
func TestDeadLettersAlertEndsOncePurgedInTheDeployedShape(t *testing.T) {
	if testing.Short() {
		t.Skip("a front end and two workers")
	}
	gone, _ := goneHook(t)
	d := runDeployedShape(t, sinkYAML("crm", gone.URL))
	front, w1, w2 := d.procs[0], d.procs[1], d.procs[2]
	front.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"gil"}`).want(t, 201)
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if n := metric(t, w1, "scimrelay_sink_dead_letters") + metric(t, w2, "scimrelay_sink_dead_letters"); n != 2 {
			return fmt.Errorf("the workers say %v dead letters, want 1 each", n)
		}
		return nil
	})
	// globex leaves relay.yaml; the front end restarts on it.
	text, err := os.ReadFile(d.paths[0])
	if err != nil {
		t.Fatal(err)
	}
	without := strings.Replace(string(text), "  - name: globex\n    tokens: ["+globexToken+"]\n", "", 1)
	if err := os.WriteFile(d.paths[0], []byte(without), 0o600); err != nil {
		t.Fatal(err)
	}
	front.stop()
	front = startReloadableAs(t, d.paths[0], roleSCIM, io.Discard)
	procs := map[string]*relayProc{"front": front, "worker-1": w1, "worker-2": w2}
	c := &adminclient.Client{BaseURL: front.adminURL, Token: adminSecret, Timeout: 10 * time.Second}
	j, err := c.PurgeTenant(t.Context(), "globex")
	if err != nil {
		t.Fatal(err)
	}
	if j, err = c.Follow(t.Context(), j, nil); err != nil || j.State != "done" {
		t.Fatalf("the purge: %+v, %v", j, err)
	}
	deadLettersAlertEnds(t, procs)
}

// refusedCredentialsRule is ScimrelayRefusedCredentials' expression, which
// refusedCredentialsFiring evaluates by hand.
const refusedCredentialsRule = "max without (instance, pod) (scimrelay_tenant_credential_refused_timestamp_seconds) > max without (instance, pod) (scimrelay_tenant_credential_accepted_timestamp_seconds)"

// refusedCredentialsFiring evaluates refusedCredentialsRule over every
// process's scrape: the groups (tenants) it fires for.
func refusedCredentialsFiring(t *testing.T, procs map[string]*relayProc) []string {
	t.Helper()
	refused, err := scrapeProcs(t, "scimrelay_tenant_credential_refused_timestamp_seconds", procs)
	if err != nil {
		t.Fatal(err)
	}
	accepted, err := scrapeProcs(t, "scimrelay_tenant_credential_accepted_timestamp_seconds", procs)
	if err != nil {
		t.Fatal(err)
	}
	last := maxWithout(accepted, "instance", "pod")
	var firing []string
	for group, v := range maxWithout(refused, "instance", "pod") {
		if a, ok := last[group]; ok && v > a {
			firing = append(firing, group)
		}
	}
	sort.Strings(firing)
	return firing
}

// TestRefusedCredentialsAlertFiresAtEntrasCadence: in the deployed shape,
// Entra provisions acme; the operator revokes its token without putting a
// new one into Entra; Entra's next cycle is refused once, and Entra, its
// job in quarantine, sends nothing for hours. ScimrelayRefusedCredentials
// must fire for acme from then on with no further request (the rule until
// this release, a rate of 401s over 10 minutes for 15 minutes, held for
// ten minutes after such a refusal and so never fired), for acme alone,
// and end at the first request the new token makes. A wrong token anyone
// can send fires nothing.
func TestRefusedCredentialsAlertFiresAtEntrasCadence(t *testing.T) {
	if testing.Short() {
		t.Skip("a front end and two workers")
	}
	raw, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "- alert: ScimrelayRefusedCredentials\n        expr: "+refusedCredentialsRule+"\n") {
		t.Fatalf("alerts.yaml's ScimrelayRefusedCredentials is not the expression this test evaluates:\n%s", refusedCredentialsRule)
	}
	d := runDeployedShape(t, sinkYAML("crm", newHook(t).URL))
	front := d.procs[0]
	procs := map[string]*relayProc{"front": front, "worker-1": d.procs[1], "worker-2": d.procs[2]}
	store := front.srv.store
	secret, tok, err := store.Tokens().Create(t.Context(), "acme", "entra", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	front.scim("acme", secret, "GET", "/Users", "").want(t, 200)
	front.scim("globex", globexToken, "GET", "/Users", "").want(t, 200)
	front.scim("acme", "scimrelay_tok_not-one-of-ours", "GET", "/Users", "").want(t, 401)
	if f := refusedCredentialsFiring(t, procs); len(f) != 0 {
		t.Fatalf("fires for %v after a wrong token anyone can send", f)
	}

	if _, _, err := store.Tokens().Revoke(t.Context(), tok.ID); err != nil {
		t.Fatal(err)
	}
	front.scim("acme", secret, "GET", "/Users", "").want(t, 401)
	front.scim("globex", globexToken, "GET", "/Users", "").want(t, 200)
	// No request from here on: the condition must hold at every
	// evaluation, for the rule's `for`.
	for range 3 {
		if f := refusedCredentialsFiring(t, procs); !slices.Equal(f, []string{"{tenant=acme}"}) {
			t.Fatalf("with Entra refused and quiet, the rule fires for %v, want acme alone", f)
		}
	}

	fresh, _, err := store.Tokens().Create(t.Context(), "acme", "entra-2", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	front.scim("acme", fresh, "GET", "/Users", "").want(t, 200)
	if f := refusedCredentialsFiring(t, procs); len(f) != 0 {
		t.Fatalf("fires for %v once the new token is in", f)
	}
}
