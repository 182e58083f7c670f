// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// subjectCount counts the messages of a stream whose subjects match filter.
func subjectCount(t *testing.T, js jetstream.JetStream, stream, filter string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// tenantHoldings is what the relay holds of a tenant: its events in the
// stream, the delivery attempts of its events, its provisioning log
// entries, its stored credentials whatever their state, its users,
// groups, live credentials and subscribers (Leftovers), and the consumers
// named after it. Nothing is counted through SCIM, whose reads would be
// logged.
type tenantHoldings struct {
	Events, Attempts    uint64
	Log, Credentials    int
	Leftovers           relay.Leftovers
	SubscriberConsumers int
}

func holdingsOf(t *testing.T, p *relayProc, tenant string) tenantHoldings {
	t.Helper()
	var h tenantHoldings
	h.Events = subjectCount(t, p.srv.js, events.StreamName, events.TenantSubjects(tenant))
	h.Attempts = subjectCount(t, p.srv.js, "SCIMRELAY_DELIVERIES", "scimrelay-deliveries.*."+tenant+".>")
	entries, err := p.srv.reqLog.Query(t.Context(), relay.LogQuery{Tenant: tenant, Limit: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	h.Log = len(entries)
	for _, creds := range []relay.Credentials{p.srv.store.Tokens(), p.srv.store.Clients()} {
		list, err := creds.List(t.Context(), tenant)
		if err != nil {
			t.Fatal(err)
		}
		h.Credentials += len(storedOnly(list)) // those a purge deletes
	}
	if h.Leftovers, err = p.srv.store.Leftovers(t.Context(), tenant); err != nil {
		t.Fatal(err)
	}
	st, err := p.srv.js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	names := st.ConsumerNames(t.Context())
	for name := range names.Name() {
		if strings.HasPrefix(name, tenant) {
			h.SubscriberConsumers++
		}
	}
	return h
}

// TestTenantPurge purges a tenant removed from relay.yaml with the CLI,
// on a relay with a sink and the embedded NATS: the tenant's users,
// groups, memberships, stored token and client, subscriber (with its
// consumer), log entries, events in the stream and delivery attempts are
// deleted and counted, its dead letter too (a redrive would deliver it
// under the name to whoever has it next), and one audit
// line says it all. The other tenant keeps exactly what it had. A
// configured tenant and a name that holds nothing are refused, and so is
// a purge without --yes. Added again, the name starts afresh and the old
// token is refused. A purge that did not finish keeps the name from being
// configured, at a reload, and is named at a restart; run again, it
// finishes. The name's events continue the purged tenant's sequence.
func TestTenantPurge(t *testing.T) {
	h := newHook(t)
	receiver := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte(`"userName":"dee"`)) {
			w.WriteHeader(http.StatusGone) // dead-lettered at once
			return
		}
		receiver.ServeHTTP(w, r)
	})
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir(),
		natsListen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))}
	const logJSON = "log:\n  format: json\n"
	sinkFile := "sinks:\n" + sinkYAML("crm", h.URL)
	const acmeOnly = "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n"
	f.write(logJSON + twoTenants + sinkFile)
	var out eventstest.Log
	p := startReloadable(t, f.path, &out)
	cliConf := cliConfig(t, p, adminSecret)
	reload := func(file string) (int, string, string) {
		t.Helper()
		f.write(logJSON + file + sinkFile)
		return cli(t, "reload", "--config", cliConf)
	}
	create := func(tenant, token, path, body string) string {
		t.Helper()
		return p.scim(tenant, token, "POST", path, body).want(t, 201).str("id")
	}
	newUser := func(tenant, token, name string) string {
		return create(tenant, token, "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`)
	}
	newGroup := func(tenant, token, name, member string) string {
		members := ""
		if member != "" {
			members = `,"members":[{"value":"` + member + `"}]`
		}
		return create(tenant, token, "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"`+name+`"`+members+`}`)
	}

	// globex: 3 users (dee's event is dead-lettered), a group of one, a
	// token, a client, a subscriber; acme: 2 users and a group.
	ann := newUser("globex", globexToken, "ann")
	globexSubjects := map[string]bool{"Users/" + ann: true}
	globexSubjects["Users/"+newUser("globex", globexToken, "bob")] = true
	globexSubjects["Users/"+newUser("globex", globexToken, "dee")] = true
	globexSubjects["Groups/"+newGroup("globex", globexToken, "staff", ann)] = true
	// attemptsOf counts the delivery attempts recorded of globex's
	// resources and of others, as the sinks read them.
	attemptsOf := func() (ofGlobex, others int) {
		t.Helper()
		list, err := sinks.Attempts(t.Context(), p.srv.js, sinks.AttemptQuery{Since: time.Now().Add(-time.Hour), Limit: 100_000})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range list {
			if globexSubjects[a.Subject] {
				ofGlobex++
			} else {
				others++
			}
		}
		return ofGlobex, others
	}
	newUser("acme", acmeToken, "carl")
	newUser("acme", acmeToken, "dave")
	newGroup("acme", acmeToken, "ops", "")
	code, secret, stderr := cli(t, "token", "create", "--tenant", "globex", "--config", cliConf)
	if secret = strings.TrimSpace(secret); code != exitOK {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "client", "create", "--tenant", "globex", "--config", cliConf); code != exitOK {
		t.Fatalf("client create: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "subscriber", "add", "globexsub", "--subjects", "scimrelay.globex.>", "--out", filepath.Join(t.TempDir(), "globexsub.nk"), "--config", cliConf); code != exitOK {
		t.Fatalf("subscriber add: %d %s", code, stderr)
	}
	waitDelivered(t, h, 7) // all but dee's
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		page, err := p.srv.sinks.DeadLetters(t.Context(), "crm", "", 10)
		if err != nil || len(page.DeadLetters) != 1 {
			return fmt.Errorf("%d dead letters (%v), want dee's", len(page.DeadLetters), err)
		}
		if hg := holdingsOf(t, p, "globex"); hg.Log != 4 || hg.Attempts < 5 {
			return fmt.Errorf("globex has %d log entries and %d delivery attempts so far", hg.Log, hg.Attempts)
		}
		if ha := holdingsOf(t, p, "acme"); ha.Log != 3 || ha.Attempts < 3 {
			return fmt.Errorf("acme has %d log entries and %d delivery attempts so far", ha.Log, ha.Attempts)
		}
		return nil
	})
	globex := holdingsOf(t, p, "globex")
	acme := holdingsOf(t, p, "acme")
	if globex.Events != 5 || globex.Leftovers.Users != 3 || globex.Leftovers.Groups != 1 || globex.Credentials != 2 || globex.SubscriberConsumers != 1 {
		t.Fatalf("globex holds %+v before its purge", globex)
	}
	globexAttempts, otherAttempts := attemptsOf()
	if globexAttempts != int(globex.Attempts) || otherAttempts != int(acme.Attempts) {
		t.Fatalf("the sinks read %d attempts of globex's resources and %d of acme's; recorded on the tenants' subjects, %d and %d",
			globexAttempts, otherAttempts, globex.Attempts, acme.Attempts)
	}
	acmeUnchanged := func(when string) {
		t.Helper()
		if now := holdingsOf(t, p, "acme"); !reflect.DeepEqual(now, acme) {
			t.Errorf("%s: acme held %+v, now %+v", when, acme, now)
		}
		if g, o := attemptsOf(); o != otherAttempts {
			t.Errorf("%s: the sinks read %d attempts of acme's resources, and %d before (and %d of globex's)", when, o, otherAttempts, g)
		}
	}

	// Refused: a configured tenant (exit 1), a name that holds nothing
	// (exit 2, as a misspelt one), a purge without --yes (exit 2).
	if code, _, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--config", cliConf); code != exitError || !strings.Contains(stderr, "tenant globex is configured: remove it from relay.yaml and reload") {
		t.Errorf("purging configured globex: %d %s", code, stderr)
	}
	if code, stdout, stderr := reload(acmeOnly); code != exitOK || !strings.Contains(stdout, "tenant globex removed") {
		t.Fatalf("reload removing globex: %d %s %s", code, stdout, stderr)
	}
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"acme", "--yes"}, exitError, "tenant acme is configured"},
		{[]string{"glob", "--yes"}, exitUsage, `no tenant "glob" to purge: the data file holds nothing under that name (tenants configured: acme)`},
		{[]string{"globex"}, exitUsage, "add --yes"},
		{[]string{"globex", "--yes", "extra"}, exitUsage, "accepts 1 arg"},
	} {
		if code, stdout, stderr := cli(t, append(append([]string{"tenant", "purge"}, c.args...), "--config", cliConf)...); code != c.code || !strings.Contains(stderr, c.says) || stdout != "" {
			t.Errorf("tenant purge %s: %d %q %s; want %d saying %q", strings.Join(c.args, " "), code, stdout, stderr, c.code, c.says)
		}
	}
	acmeUnchanged("after the refused purges")
	if h := holdingsOf(t, p, "globex"); h.Events != globex.Events || h.Log != globex.Log || h.Credentials != 2 || h.Leftovers.Users != 3 {
		t.Errorf("globex holds %+v after the refused purges; before, %+v", h, globex)
	}

	code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--config", cliConf)
	if code != exitOK {
		t.Fatalf("tenant purge globex: %d %s %s", code, stdout, stderr)
	}
	for _, line := range []string{
		`users +3`, `groups +1`, `memberships +1`, `SCIM tokens +1`, `OAuth clients +1`, `NATS subscribers +1 \(globexsub\)`,
		fmt.Sprintf(`provisioning log entries +%d`, globex.Log), `events in the stream +5`, fmt.Sprintf(`delivery attempts +%d`, globex.Attempts),
		`deleted 1 dead letter of globex from the queue of sink crm`,
	} {
		if !regexp.MustCompile(`(?m)` + line).MatchString(stdout) {
			t.Errorf("tenant purge globex does not say %q:\n%s", line, stdout)
		}
	}
	after := holdingsOf(t, p, "globex")
	if after.Events != 0 || after.Attempts != 0 || after.Log != 0 || after.Credentials != 0 || !after.Leftovers.Empty() || after.SubscriberConsumers != 0 {
		t.Errorf("after its purge globex holds %+v", after)
	}
	acmeUnchanged("after globex's purge")
	if page, err := p.srv.sinks.DeadLetters(t.Context(), "crm", "", 10); err != nil || len(page.DeadLetters) != 0 {
		t.Errorf("sink crm's queue holds %d dead letters (%v) after globex's purge, want none", len(page.DeadLetters), err)
	}
	if g, _ := attemptsOf(); g != 0 {
		t.Errorf("the sinks read %d attempts of globex's resources after its purge", g)
	}
	var audit []map[string]any
	for _, line := range strings.Split(out.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "admin action" && m["action"] == "tenant.purge" {
			audit = append(audit, m)
		}
	}
	// One line when it starts (a purge cut short has deleted something
	// already), one when it ends, with the counts.
	if len(audit) != 2 {
		t.Fatalf("%d audit lines of the purge, want its start and its end:\n%s", len(audit), out.String())
	}
	if audit[0]["outcome"] != "started" || audit[0]["tenant"] != "globex" || audit[0]["job"] != audit[1]["job"] {
		t.Errorf("the purge's first audit line: %v; want its start, with the job of %v", audit[0], audit[1])
	}
	for k, want := range map[string]any{"tenant": "globex", "outcome": "done", "users": 3.0, "groups": 1.0, "memberships": 1.0,
		"tokens": 1.0, "clients": 1.0, "events": 5.0, "log_entries": float64(globex.Log), "via": "api"} {
		if audit[1][k] != want {
			t.Errorf("the purge's last audit line has %s=%v, want %v: %v", k, audit[1][k], want, audit[1])
		}
	}
	// The console shows the purge's job as a tenant's, not a sink's, and
	// what it deleted as the command printed it, kind by kind.
	job, _ := audit[1]["job"].(string)
	b := newBrowser(t, p)
	b.signIn(adminSecret).redirect(t, "/ui/")
	page := b.get("/ui/jobs/"+job).want(t, http.StatusOK, "purge of tenant <strong>globex</strong>", `data-state="done"`)
	if strings.Contains(page.body, "/ui/sinks/globex") {
		t.Errorf("the console's page of the purge links to a sink globex:\n%s", page.body)
	}
	printed := regexp.MustCompile(`(?m)^  (\S.*?)  +(\S.*)$`).FindAllStringSubmatch(stdout, -1)
	if len(printed) < 12 {
		t.Errorf("tenant purge globex printed %d counts:\n%s", len(printed), stdout)
	}
	var missing []string
	for _, row := range printed {
		if shown := "<dt>" + row[1] + "</dt><dd>" + row[2] + "</dd>"; !strings.Contains(page.body, shown) {
			missing = append(missing, shown)
		}
	}
	if deadLetters := "deleted 1 dead letter of globex from the queue of sink crm"; !strings.Contains(page.body, deadLetters) {
		missing = append(missing, deadLetters)
	}
	if len(missing) > 0 {
		t.Errorf("the console's page of the purge does not show what the command printed: %q\n%s", missing, page.body)
	}
	// Nothing left: the name is refused as a misspelt one, for a purge and
	// for token list.
	if code, _, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--config", cliConf); code != exitUsage || !strings.Contains(stderr, "holds nothing") {
		t.Errorf("purging globex again: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "token", "list", "--tenant", "globex", "--config", cliConf); code != exitUsage {
		t.Errorf("token list --tenant globex after its purge: %d %s", code, stderr)
	}

	// Added again, the name is fresh: no users, no groups, the old token
	// refused.
	if code, stdout, stderr := reload(twoTenants); code != exitOK || strings.Contains(stdout, "not fresh") {
		t.Fatalf("reload adding globex again: %d %s %s", code, stdout, stderr)
	}
	for _, path := range []string{"/Users", "/Groups"} {
		if r := p.scim("globex", globexToken, "GET", path, "").want(t, 200); r.str("totalResults") != "0" {
			t.Errorf("GET %s of globex added again: %s", path, r.raw)
		}
	}
	p.scim("globex", globexToken, "GET", "/Users/"+ann, "").want(t, http.StatusNotFound)
	p.scim("globex", secret, "GET", "/Users", "").want(t, http.StatusUnauthorized)
	// Its events continue the sequence of the purged tenant's, which all
	// reached the stream.
	newUser("globex", globexToken, "erin")
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := p.srv.js.Stream(t.Context(), events.StreamName)
		if err != nil {
			return err
		}
		m, err := st.GetLastMsgForSubject(t.Context(), events.TenantSubjects("globex"))
		if err != nil {
			return fmt.Errorf("erin's event: %w", err)
		}
		e, err := events.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			return err
		}
		if seq, err := events.Sequence(e); err != nil || seq != globex.Events+1 {
			t.Errorf("erin's event, globex's first once added again, has sequence %d (%v); the purged tenant's reached %d", seq, err, globex.Events)
		}
		return nil
	})

	// A purge that did not finish (begun, then the relay stopped): a
	// reload adding the name is refused, a restart names it, and run
	// again the purge finishes.
	if code, stdout, stderr := reload(acmeOnly); code != exitOK {
		t.Fatalf("reload removing globex: %d %s %s", code, stdout, stderr)
	}
	if err := p.srv.store.BeginPurge(context.Background(), "globex"); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := reload(twoTenants); code != exitError || !strings.Contains(stderr, "relay.yaml refused; the running configuration stays: tenant globex: being purged") {
		t.Errorf("a reload adding globex while its purge is unfinished: %d %s", code, stderr)
	}
	p.stop()
	f.write(logJSON + acmeOnly + sinkFile)
	var restarted eventstest.Log
	p = startReloadable(t, f.path, &restarted)
	cliConf = cliConfig(t, p, adminSecret)
	warned := false
	for _, line := range strings.Split(restarted.String(), "\n") {
		warned = warned || strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, `"msg":"the purge of a tenant began and did not finish`) && strings.Contains(line, `"tenant":"globex"`)
	}
	if !warned {
		t.Errorf("a restart does not warn of globex's unfinished purge:\n%s", restarted.String())
	}
	// Its result has no step: the purge is done (a step shown while it
	// waited for the workers stayed in the result).
	if code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--json", "--config", cliConf); code != exitOK || !strings.Contains(stdout, `"users":1`) || !strings.Contains(stdout, `"state":"done"`) || strings.Contains(stdout, `"step"`) || !strings.Contains(stderr, "telling the delivery workers") {
		t.Errorf("finishing the purge: %d %s %s", code, stdout, stderr)
	}
	if code, stdout, stderr := reload(twoTenants); code != exitOK {
		t.Errorf("reload adding globex once its purge finished: %d %s %s", code, stdout, stderr)
	}
	if again := holdingsOf(t, p, "globex"); !again.Leftovers.Empty() || again.Events != 0 || again.Log != 0 {
		t.Errorf("globex added again holds %+v", again)
	}
	if _, err := p.srv.js.Consumer(t.Context(), events.StreamName, "globexsub"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("globexsub's consumer: %v", err)
	}
}

// heldReceiver is a webhook receiver that counts deliveries by tenant and
// holds each one unanswered until released, then answers heldStatus to
// the ones it held and 204 to those after.
type heldReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	got      map[string]int
	released chan struct{}
	once     sync.Once
}

func newHeldReceiver(t *testing.T, heldStatus int) *heldReceiver {
	r := &heldReceiver{got: map[string]int{}, released: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.got[req.Header.Get("ce-tenant")]++
		r.mu.Unlock()
		select {
		case <-r.released:
			w.WriteHeader(http.StatusNoContent)
		default:
			<-r.released
			w.WriteHeader(heldStatus)
		}
	}))
	// Released before the relay stops (cleanups run last first), which
	// waits for its deliveries.
	t.Cleanup(r.Close)
	t.Cleanup(r.release)
	return r
}

func (r *heldReceiver) release() { r.once.Do(func() { close(r.released) }) }

// delivered counts the deliveries of tenant's events that reached r.
func (r *heldReceiver) delivered(tenant string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[tenant]
}

// TestPurgeStopsDeliveryOfWhatWorkersHold: a tenant's events a worker has
// taken from the stream already, waiting behind a slow receiver, are not
// delivered once the tenant is purged: the one under way when the purge
// began ends as it would have, the others are counted as purged, and the
// sink goes on delivering the other tenants' events, and those of a tenant
// added again under the name. Before, every one of them was delivered
// after the purge said it was done. The one under way is refused for good
// (410): it is counted as purged too, and no dead letter of the tenant
// outlives the purge.
func TestPurgeStopsDeliveryOfWhatWorkersHold(t *testing.T) {
	slow := newHeldReceiver(t, http.StatusGone)
	delivered := slow.delivered
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir(),
		natsListen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))}
	sinkFile := "sinks:\n" + sinkYAML("crm", slow.URL) + "    concurrency: 1\n    timeout: 5m\n"
	f.write(twoTenants + sinkFile)
	p := startReloadable(t, f.path, io.Discard)
	cliConf := cliConfig(t, p, adminSecret)
	const users = 20
	for i := range users {
		p.scim("globex", globexToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d"}`, i)).want(t, 201)
	}
	// The first is under way, the others wait in the worker.
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := delivered("globex"); n != 1 {
			return fmt.Errorf("%d deliveries under way", n)
		}
		st, err := p.srv.sinks.Status(t.Context(), "crm")
		if err != nil || st.Pending != 0 || st.InFlight != users {
			return fmt.Errorf("the worker holds %d events, %d wait in the stream (%v)", st.InFlight, st.Pending, err)
		}
		return nil
	})
	f.write("tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n" + sinkFile)
	if code, stdout, stderr := cli(t, "reload", "--config", cliConf); code != exitOK {
		t.Fatalf("reload removing globex: %d %s %s", code, stdout, stderr)
	}
	if code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--config", cliConf); code != exitOK || !regexp.MustCompile(fmt.Sprintf(`events in the stream +%d\n`, users)).MatchString(stdout) {
		t.Fatalf("tenant purge globex: %d %s %s", code, stdout, stderr)
	}
	slow.release() // the delivery under way ends
	p.createUser(t, "ann")
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := metric(t, p, "scimrelay_sink_events_total", "outcome", "purged"); n != users {
			return fmt.Errorf("%v events counted as purged, want %d", n, users)
		}
		if n := delivered("acme"); n != 1 {
			return fmt.Errorf("%d of acme's events reached the receiver", n)
		}
		return nil
	})
	if n := delivered("globex"); n != 1 {
		t.Fatalf("%d of the purged tenant's events reached the receiver; want the one under way", n)
	}
	if page, err := p.srv.sinks.DeadLetters(t.Context(), "crm", "", 10); err != nil || len(page.DeadLetters) != 0 {
		t.Fatalf("sink crm's queue holds %d dead letters (%v) after the purge, want none", len(page.DeadLetters), err)
	}
	// Added again, the name's events are numbered after the purged ones'
	// and delivered.
	f.write(twoTenants + sinkFile)
	if code, stdout, stderr := cli(t, "reload", "--config", cliConf); code != exitOK {
		t.Fatalf("reload adding globex again: %d %s %s", code, stdout, stderr)
	}
	p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"new"}`).want(t, 201)
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := delivered("globex"); n != 2 {
			return fmt.Errorf("%d of globex's events reached the receiver, want the new tenant's too", n)
		}
		return nil
	})
}

// holdGlobexEvents creates n of globex's users through front and waits
// until the workers hold every one's event, underWay of them in deliveries
// slow has not answered, none left in the stream.
func holdGlobexEvents(t *testing.T, front *relayProc, slow *heldReceiver, n, underWay int) {
	t.Helper()
	for i := range n {
		front.scim("globex", globexToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d"}`, i)).want(t, 201)
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := front.srv.sinks.Status(t.Context(), "crm")
		if err != nil || st.Pending != 0 || st.InFlight != n || slow.delivered("globex") != underWay {
			return fmt.Errorf("the workers hold %d events, %d wait in the stream, %d deliveries under way (%v)", st.InFlight, st.Pending, slow.delivered("globex"), err)
		}
		return nil
	})
}

// purgeAcrossRelays starts, on the NATS at natsURL, a front end (user front) with
// tenants acme and globex and sink crm, which delivers to slow one event
// at a time, and n delivery workers of the sink (user worker), the shape
// deployed. purge removes globex from the front end's relay.yaml, reloads
// it and purges the tenant.
func purgeAcrossRelays(t *testing.T, natsURL string, slow *heldReceiver, n int) (front *relayProc, workers []*relayProc, purge func()) {
	t.Helper()
	path, dataDir := filepath.Join(t.TempDir(), "relay.yaml"), t.TempDir()
	sinkFile := "sinks:\n" + sinkYAML("crm", slow.URL) + "    concurrency: 1\n    timeout: 5m\n"
	writeFront := func(tenants string) {
		t.Helper()
		text := fmt.Sprintf("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  url: %s\n  user: front\n  password: front-secret\n%s%s",
			dataDir, adminSecret, natsURL, tenants, sinkFile)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFront(twoTenants)
	front = startReloadableAs(t, path, roleSCIM, io.Discard)
	cliConf := cliConfig(t, front, adminSecret)
	for range n {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = natsURL, "worker", "worker-secret"
		withSink(cfg, "crm", slow.URL, func(s *config.Sink) { s.Concurrency, s.Timeout = 1, config.Duration(5*time.Minute) })
		workers = append(workers, startRelay(t, cfg, roleSinks))
	}
	return front, workers, func() {
		t.Helper()
		writeFront("tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n")
		if code, stdout, stderr := cli(t, "reload", "--config", cliConf); code != exitOK {
			t.Fatalf("reload removing globex: %d %s %s", code, stdout, stderr)
		}
		if code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--config", cliConf); code != exitOK {
			t.Fatalf("tenant purge globex: %d %s %s", code, stdout, stderr)
		}
	}
}

// TestPurgeStopsDeliveryAcrossWorkers: the same in the shape deployed, a
// front end and two delivery workers, each a relay of its own, on an
// external NATS where the workers have exactly their permission row
// (README, Who can reach what): each worker reads the purge's notice and
// delivers none of what it holds of the tenant, past the deliveries under
// way when the purge ended.
func TestPurgeStopsDeliveryAcrossWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("two workers on an external NATS")
	}
	slow := newHeldReceiver(t, http.StatusNoContent)
	front, workers, purge := purgeAcrossRelays(t, natsWithWorkerUser(t).ClientURL(), slow, 2)
	// Both workers have taken their share of the partitions: no hand-over
	// comes while deliveries are held.
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		p1, p2 := metric(t, workers[0], "scimrelay_sink_partitions"), metric(t, workers[1], "scimrelay_sink_partitions")
		if p1 == 0 || p2 == 0 || p1+p2 != float64(events.DefaultPartitions) {
			return fmt.Errorf("the workers own %v and %v partitions", p1, p2)
		}
		for _, w := range workers {
			if err := w.srv.sinks.Ready(t.Context()); err != nil {
				return err
			}
		}
		return nil
	})
	const users = 40
	// Both workers hold some: each one's first is under way, its others wait.
	holdGlobexEvents(t, front, slow, users, 2)
	purge()
	slow.release()
	front.createUser(t, "ann")
	purged := func() float64 {
		return metric(t, workers[0], "scimrelay_sink_events_total", "outcome", "purged") + metric(t, workers[1], "scimrelay_sink_events_total", "outcome", "purged")
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := purged(); n != users-2 {
			return fmt.Errorf("%v events counted as purged by the two workers, want %d", n, users-2)
		}
		if n := slow.delivered("acme"); n != 1 {
			return fmt.Errorf("%d of acme's events reached the receiver", n)
		}
		return nil
	})
	if n := slow.delivered("globex"); n != 2 {
		t.Fatalf("%d of the purged tenant's events reached the receiver; want the two under way", n)
	}
	for i, w := range workers {
		if n := metric(t, w, "scimrelay_sink_events_total", "outcome", "purged"); n == 0 {
			t.Errorf("worker %d dropped none of what it held", i+1)
		}
	}
}

// TestPurgeWaitsOutAWorkerThatCannotReadTheNotices: a worker that holds a
// tenant's events behind a slow receiver and cannot read the purge's
// notice (here its NATS user loses the read of the workers' stream, while
// its announcements still go through) delivers none of them after the
// purge said it was done, past the one under way: it renews its lease only
// by a heartbeat that read the notices, so it stopped delivering before
// the purge's wait for the workers ended. Before, the announcement alone
// renewed the lease, and the worker delivered all it held. Once it can
// read again it delivers the other tenant's events.
func TestPurgeWaitsOutAWorkerThatCannotReadTheNotices(t *testing.T) {
	if testing.Short() {
		t.Skip("a front end and a worker on an external NATS")
	}
	natsURL, workerMay := externalNATSWithWorkerUser(t)
	slow := newHeldReceiver(t, http.StatusNoContent)
	front, workers, purge := purgeAcrossRelays(t, natsURL, slow, 1)
	worker := workers[0]
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := metric(t, worker, "scimrelay_sink_partitions"); n != float64(events.DefaultPartitions) {
			return fmt.Errorf("the worker owns %v partitions", n)
		}
		return worker.srv.sinks.Ready(t.Context())
	})
	const users = 20
	holdGlobexEvents(t, front, slow, users, 1)
	// The worker may announce itself, and no longer read the workers'
	// stream, where the notices are.
	workerMay(slices.DeleteFunc(slices.Clone(workerPublish), func(s string) bool { return s == "$JS.API.STREAM.INFO.SCIMRELAY_WORKERS" }))
	purge()
	if err := worker.srv.sinks.Ready(t.Context()); err == nil {
		t.Error("the worker that cannot read the notices is still ready to deliver when the purge has ended")
	}
	slow.release()
	workerMay(workerPublish)
	front.createUser(t, "ann")
	eventstest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if n := slow.delivered("acme"); n != 1 {
			return fmt.Errorf("%d of acme's events reached the receiver", n)
		}
		st, err := front.srv.sinks.Status(t.Context(), "crm")
		if err != nil || st.Pending != 0 || st.InFlight != 0 {
			return fmt.Errorf("%d events wait in the stream, %d in the worker (%v)", st.Pending, st.InFlight, err)
		}
		return nil
	})
	if n := slow.delivered("globex"); n != 1 {
		t.Fatalf("%d of the purged tenant's events reached the receiver; want the one under way", n)
	}
}

// TestPurgeDuringRedriveLeavesNoDeadLetter redrives sink crm's queue,
// which holds a dead letter of globex, while globex (removed from
// relay.yaml) is purged: the redrive's delivery of globex's event is held
// by the receiver until the purge has ended, then fails again. The purge
// said it deleted globex's dead letters; none of globex's may be left in
// any queue after it.
func TestPurgeDuringRedriveLeavesNoDeadLetter(t *testing.T) {
	rcv := newJobReceiver(t, `"userName":"dee"`, http.StatusGone) // refused again
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir(),
		natsListen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))}
	sinkFile := "sinks:\n" + sinkYAML("crm", rcv.URL)
	f.write(twoTenants + sinkFile)
	p := startReloadable(t, f.path, io.Discard)
	conf := cliConfig(t, p, adminSecret)
	p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"dee"}`).want(t, 201)
	p.awaitDeadLetters(t, "crm", 1)
	f.write("tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n" + sinkFile)
	if code, out, stderr := cli(t, "reload", "--config", conf); code != exitOK {
		t.Fatalf("reload removing globex: %d %s %s", code, out, stderr)
	}
	redrive := rcv.run(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", conf)
	// The purge runs while the redrive's delivery is held. The receiver
	// answers once the purge has ended, or once it waits for the redrive
	// (as it should) to read the queues.
	purge := &cliRun{done: make(chan cliResult, 1)}
	go func() {
		code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--json", "--config", conf)
		purge.done <- cliResult{code, stdout, stderr}
	}()
	var purged *cliResult
	eventstest.CheckFor(t, 60*time.Second, 5*time.Millisecond, func() error {
		select {
		case r := <-purge.done:
			purged = &r
			return nil
		default:
		}
		if eventstest.WaitingForLock("sinks.(*Manager).DeleteTenantDeadLetters(") {
			return nil
		}
		return errors.New("the purge has neither ended nor reached the dead letters")
	})
	rcv.answer()
	if purged == nil {
		r := purge.wait(t)
		purged = &r
	}
	if purged.code != exitOK {
		t.Fatalf("tenant purge globex: %d %s %s", purged.code, purged.stdout, purged.stderr)
	}
	r := redrive.wait(t)
	t.Logf("redrive: exit %d %s %s", r.code, r.stdout, r.stderr)
	page, err := p.srv.sinks.DeadLetters(t.Context(), "crm", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range page.DeadLetters {
		if dl.Tenant == "globex" {
			t.Errorf("after globex's purge (done, exit 0) sink crm's queue holds a dead letter of globex (%s): a redrive under way put it back", dl.ID)
		}
	}
}

// TestPurgeDuringAWorkersJobLeavesNoDeadLetter: as
// TestPurgeDuringRedriveLeavesNoDeadLetter in the deployed shape, where the
// redrive or replay runs through a delivery worker's admin API and the
// purge through the front end's, which does not wait for another
// process's jobs. The job's delivery of globex's event is held until the
// purge has ended, then refused for good: no dead letter of globex may be
// left. Before, the worker's redrive put the new dead letter and failed to
// remove the old one the purge had deleted ("no message found"), leaving
// the new one; its replay dead-lettered the event.
func TestPurgeDuringAWorkersJobLeavesNoDeadLetter(t *testing.T) {
	for _, job := range [][]string{
		{"dlq", "redrive", "--sink", "crm", "--all"},
		{"sinks", "replay", "--sink", "crm", "--since", "1h"},
	} {
		t.Run(job[1], func(t *testing.T) {
			ns := natsWithWorkerUser(t)
			rcv := newJobReceiver(t, `"userName":"dee`, http.StatusGone) // refused again
			front, workers, purge := purgeAcrossRelays(t, ns.ClientURL(), &heldReceiver{Server: rcv.Server}, 1)
			for _, name := range []string{"dee", "dee2"} {
				front.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`).want(t, 201)
			}
			front.awaitDeadLetters(t, "crm", 2)
			run := rcv.run(t, append(job, "--config", cliConfig(t, workers[0], adminSecret))...)
			purge() // through the front end, while the worker's delivery is held
			rcv.answer()
			if r := run.wait(t); r.code != exitOK || !strings.Contains(r.stdout, "meanwhile") {
				t.Errorf("%s through the worker during the purge: exit %d, %s%s; want 0 saying what was deleted or purged meanwhile", job[1], r.code, r.stdout, r.stderr)
			}
			// dee2's event, which the job reached after the purge, was not sent.
			if n := rcv.deliveries(); n != 1 {
				t.Errorf("the worker's %s sent %d events of globex, want dee's alone, under way when the purge began", job[1], n)
			}
			page, err := front.srv.sinks.DeadLetters(t.Context(), "crm", "", 10)
			if err != nil {
				t.Fatal(err)
			}
			for _, dl := range page.DeadLetters {
				if dl.Tenant == "globex" {
					t.Errorf("after globex's purge sink crm's queue holds a dead letter of globex (%s), which the worker's %s under way put there", dl.ID, job[1])
				}
			}
		})
	}
}

// TestPurgeCutShortByAStopIsFinishedAfterTheRestart: a purge under way
// (in its wait for the delivery workers) when the relay stops: the command
// fails, saying what it last read of the job as what the purge deleted at
// least, or that it read nothing (it printed every count 0 as what the
// purge deleted, having deleted the users); the restarted relay warns of it;
// run again, the purge finishes, purging the tenant's events from the
// stream; the name added again is served, its events delivered.
func TestPurgeCutShortByAStopIsFinishedAfterTheRestart(t *testing.T) {
	rcv := newHeldReceiver(t, http.StatusNoContent)
	rcv.release()
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir(),
		natsListen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))}
	sinkFile := "sinks:\n" + sinkYAML("crm", rcv.URL)
	f.write(twoTenants + sinkFile)
	p := startReloadable(t, f.path, io.Discard)
	conf := cliConfig(t, p, adminSecret)
	const users = 5
	p.createDelivered(t, "globex", globexToken, "u", users, rcv)
	f.write("tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n" + sinkFile)
	if code, out, stderr := cli(t, "reload", "--config", conf); code != exitOK {
		t.Fatalf("reload: %d %s %s", code, out, stderr)
	}
	purge := &cliRun{done: make(chan cliResult, 1)}
	go func() {
		code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--json", "--config", conf)
		purge.done <- cliResult{code, stdout, stderr}
	}()
	// In the wait for the workers: the notice is in the workers' stream.
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := p.srv.js.Stream(t.Context(), "SCIMRELAY_WORKERS")
		if err != nil {
			return err
		}
		info, err := st.Info(t.Context(), jetstream.WithSubjectFilter("scimrelay-workers._purged.>"))
		if err != nil || len(info.State.Subjects) == 0 {
			return fmt.Errorf("no notice yet (%v)", err)
		}
		return nil
	})
	p.stop()
	r := purge.wait(t)
	t.Logf("purge cut short: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	if r.code != exitError {
		t.Errorf("the purge cut short: exit %d %s", r.code, r.stdout)
	}
	// It had deleted globex's users (the purge run again finds none left):
	// the object says its counts are what the purge had deleted at least
	// (it said nothing of it: every count 0, as a purge done would), as
	// the text does (TestWritePurgedSaysHowFarItKnows).
	var cut struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &cut); err != nil || cut.State != "lost" {
		t.Errorf("the purge cut short prints (it had deleted %d users; run again, it finds none): %v\n%s", users, err, r.stdout)
	}
	log := &eventstest.Log{}
	p = startReloadable(t, f.path, log)
	conf = cliConfig(t, p, adminSecret)
	if !strings.Contains(log.String(), "did not finish") {
		t.Errorf("the restart does not warn of the purge:\n%s", log.String())
	}
	code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--config", conf)
	t.Logf("purge again: exit %d\n%s\n%s", code, stdout, stderr)
	if code != exitOK || !regexp.MustCompile(fmt.Sprintf(`events in the stream +%d\n`, users)).MatchString(stdout) {
		t.Errorf("purge again: %d %s %s", code, stdout, stderr)
	}
	f.write(twoTenants + sinkFile)
	if code, out, stderr := cli(t, "reload", "--config", conf); code != exitOK {
		t.Fatalf("reload adding globex again: %d %s %s", code, out, stderr)
	}
	p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"new"}`).want(t, 201)
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := rcv.delivered("globex"); n != users+1 {
			return fmt.Errorf("%d of globex's delivered, want the new tenant's too", n)
		}
		return nil
	})
}

// awaitDeadLetters waits until sink's queue holds n dead letters.
func (p *relayProc) awaitDeadLetters(t *testing.T, sink string, n int) {
	t.Helper()
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		page, err := p.srv.sinks.DeadLetters(t.Context(), sink, "", 10)
		if err != nil || len(page.DeadLetters) != n {
			return fmt.Errorf("%d dead letters in sink %s's queue (%v), want %d", len(page.DeadLetters), sink, err, n)
		}
		return nil
	})
}

// createDelivered creates n users of tenant, named prefix0, prefix1, …,
// and waits until rcv has had a delivery of each, of the tenant's first n.
func (p *relayProc) createDelivered(t *testing.T, tenant, token, prefix string, n int, rcv *heldReceiver) {
	t.Helper()
	for i := range n {
		p.scim(tenant, token, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s%d"}`, prefix, i)).want(t, 201)
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := rcv.delivered(tenant); got != n {
			return fmt.Errorf("%d of %s's %d events delivered", got, tenant, n)
		}
		return nil
	})
}

// TestPurgeOnOneFrontEndSparesAnotherFrontEndsTenant: two front ends
// share one stream, each with tenants of its own. Front end A purges
// globex, a tenant it no longer serves; afterwards front end B serves a
// tenant named globex (moved there, or a new customer under the name).
// B's globex events are numbered from 1 by B's own data file, so they fall
// under the purge notice's "up to sequence N", which the running workers
// keep until they stop: B's events must still be delivered.
func TestPurgeOnOneFrontEndSparesAnotherFrontEndsTenant(t *testing.T) {
	ns := natsWithWorkerUser(t)
	recv := newHeldReceiver(t, 204)
	recv.release() // answers at once
	frontA, workers, purge := purgeAcrossRelays(t, ns.ClientURL(), recv, 1)
	const users = 3
	frontA.createDelivered(t, "globex", globexToken, "a", users, recv)
	purge() // on front end A only

	// Front end B, its own data file, serves globex from now on.
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = ns.ClientURL(), "front", "front-secret"
	cfg.Tenants = []config.Tenant{{Name: "globex", Tokens: []string{globexToken}}}
	withSink(cfg, "crm", recv.URL, func(s *config.Sink) { s.Concurrency, s.Timeout = 1, config.Duration(5*time.Minute) })
	frontB := startRelay(t, cfg, roleSCIM)
	frontB.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"b0"}`).want(t, 201)
	frontA.createUser(t, "ann") // acme, on A: shows the worker delivers
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := recv.delivered("acme"); n != 1 {
			return fmt.Errorf("%d of acme's events delivered", n)
		}
		return nil
	})
	eventstest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if n := recv.delivered("globex"); n != users+1 {
			return fmt.Errorf("%d globex events delivered, want %d; the worker counts %v events as purged", n, users+1, metric(t, workers[0], "scimrelay_sink_events_total", "outcome", "purged"))
		}
		return nil
	})
}

// heldPurger is the admin API's purger with purges that run until
// released: a purge long enough to interrupt the command following it.
type heldPurger struct{ release chan struct{} }

func (p *heldPurger) Begin(context.Context, string) error { return nil }

func (p *heldPurger) Purge(ctx context.Context, tenant string, _ func(admin.PurgeResult)) (admin.PurgeResult, error) {
	select {
	case <-p.release:
		return admin.PurgeResult{Tenant: tenant}, nil
	case <-ctx.Done():
		return admin.PurgeResult{Tenant: tenant}, ctx.Err()
	}
}

// TestInterruptedTenantPurgeIsFollowedWhenRunAgain: tenant purge
// interrupted (Ctrl-C) while it follows the purge's job says the purge
// goes on and to run the command again, and run again it follows that
// purge to its end. It said "the purge of tenant  stopped" (no name; the
// purge had not stopped) and "run the command again to finish the
// purge", and the command run again was refused: "a purge of globex is
// already running" (a review of the advice the relay gives).
func TestInterruptedTenantPurgeIsFollowedWhenRunAgain(t *testing.T) {
	purger := &heldPurger{release: make(chan struct{})}
	var once sync.Once
	release := func() { once.Do(func() { close(purger.release) }) }
	t.Cleanup(release)
	runner := jobs.NewRunner(nil)
	t.Cleanup(runner.Close)
	api := admin.NewHandler(admin.Options{Token: adminSecret, Purge: purger, Jobs: runner})
	polled := make(chan struct{}, 64)
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.ServeHTTP(w, r)
		switch {
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/admin/v1/jobs/"):
			polled <- struct{}{}
		case r.Method == http.MethodPost && posts.Add(1) == 2:
			release() // the command run again has asked: the purge ends
		}
	}))
	t.Cleanup(srv.Close)
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	text := fmt.Sprintf("admin_listen: %s\nadmin:\n  token: %q\ntenants:\n  - name: acme\n", strings.TrimPrefix(srv.URL, "http://"), adminSecret)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// Ctrl-C while the command follows the purge's job.
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-polled
		cancel()
	}()
	var out, errOut bytes.Buffer
	code := execute(ctx, []string{"tenant", "purge", "globex", "--yes", "--config", cfg}, &out, &errOut)
	if code == exitOK || !strings.Contains(errOut.String(), "keeps running on the relay") || !strings.Contains(errOut.String(), "run the command again to follow it to its end") || strings.Contains(out.String(), "stopped") {
		t.Fatalf("interrupted purge: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--config", cfg)
	if code != exitOK || !strings.Contains(stdout, "purged tenant globex") {
		t.Errorf("the command run again, as advised: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestWritePurgedSaysHowFarItKnows: the counts of a purge the relay stopped
// answering during are what it had deleted at least, or unknown; a purge
// done or failed says so (TestPurgeCutShortByAStopIsFinishedAfterTheRestart
// runs the command cut short).
func TestWritePurgedSaysHowFarItKnows(t *testing.T) {
	res := admin.PurgeResult{Tenant: "globex", Purged: relay.Purged{Users: 5}}
	for state, want := range map[purgeState]string{
		purgeFinished: "purged tenant globex:\n",
		purgeStopped:  "the purge of tenant globex stopped; it deleted:\n",
		purgeLastSeen: "the relay stopped answering during the purge of tenant globex; it had deleted at least:\n",
		purgeUnknown:  "the relay stopped answering during the purge of tenant globex, before saying what it deleted",
	} {
		var b strings.Builder
		if err := writePurged(&b, res, state); err != nil {
			t.Fatal(err)
		}
		counted := regexp.MustCompile(`(?m)^ +users +5$`).MatchString(b.String())
		if !strings.HasPrefix(b.String(), want) || counted == (state == purgeUnknown) {
			t.Errorf("%s: %q, want it to begin %q, and the counts unless nothing was read", state, b.String(), want)
		}
	}
}

// TestMisspeltTenantAmongMany: a name no configured tenant has, refused
// on a relay hosting many tenants, names the first ten and how many more
// there are, not every one: with 2,000 tenants each such answer (the
// admin API's token list and create, a subscriber's subjects, a purge,
// `log --tenant`) was some 22 KB.
func TestMisspeltTenantAmongMany(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	for i := range 25 {
		cfg.Tenants = append(cfg.Tenants, config.Tenant{Name: fmt.Sprintf("cust%02d", i)})
	}
	p := startRelay(t, cfg, roleAll)
	more := fmt.Sprintf("and %d more; GET /admin/v1/tenants lists them", len(cfg.Tenants)-10)
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/admin/v1/tokens?tenant=nosuch", ""},
		{"POST", "/admin/v1/tokens", `{"tenant":"nosuch","name":"x"}`},
		{"POST", "/admin/v1/subscribers", `{"name":"sub1","public_key":"` + pub + `","subjects":"scimrelay.nosuch.>"}`},
		{"POST", "/admin/v1/tenants/nosuch/purge", ""},
	} {
		r := adminJSON(t, p, c.method, c.path, c.body)
		if r.status/100 != 4 || !strings.Contains(string(r.raw), more) || strings.Contains(string(r.raw), "cust24") {
			t.Errorf("%s %s: %d %s; want a 4xx naming ten tenants and saying %q", c.method, c.path, r.status, r.raw, more)
		}
	}
	code, _, stderr := cli(t, "log", "--tenant", "nosuch", "--config", cliConfig(t, p, adminSecret))
	if code != exitUsage || !strings.Contains(stderr, more) || strings.Contains(stderr, "cust24") {
		t.Errorf("log --tenant nosuch: exit %d: %s", code, stderr)
	}
}
