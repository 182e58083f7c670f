// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// held is what the data file holds under a tenant's name, read from the
// file itself, bucket by bucket.
type held struct {
	Buckets     map[string]int // the tenant's buckets and their keys; nil: no tenant bucket
	Outbox      int
	Quarantined int
	Log         int
	Credentials int // stored tokens and clients, whatever their state
	Subscribers []string
}

func (h held) empty() bool {
	return h.Buckets == nil && h.Outbox == 0 && h.Quarantined == 0 && h.Log == 0 && h.Credentials == 0 && len(h.Subscribers) == 0
}

func holding(t testing.TB, s *Store, name string) held {
	t.Helper()
	var h held
	err := s.db.View(func(tx *bolt.Tx) error {
		if tb := tx.Bucket(bucketTenants).Bucket([]byte(name)); tb != nil {
			h.Buckets = map[string]int{}
			if err := tb.ForEachBucket(func(k []byte) error {
				h.Buckets[string(k)] = tb.Bucket(k).Stats().KeyN
				return nil
			}); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketOutbox).ForEach(func(_, v []byte) error {
			if rowTenant(v) == name {
				h.Outbox++
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketQuarant).ForEach(func(_, v []byte) error {
			var q Quarantined
			if err := json.Unmarshal(v, &q); err != nil {
				return err
			}
			if rowTenant([]byte(q.Row)) == name {
				h.Quarantined++
			}
			return nil
		}); err != nil {
			return err
		}
		if b := tx.Bucket(bucketProvLog); b != nil {
			if err := b.ForEach(func(_, v []byte) error {
				if gjson.GetBytes(v, "tenant").String() == name {
					h.Log++
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
			if gjson.GetBytes(v, "tenant").String() == name {
				h.Credentials++
			}
			return nil
		}); err != nil {
			return err
		}
		var err error
		h.Subscribers, err = subscribersOf(tx, name)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// tenantData is what populate gave a tenant.
type tenantData struct {
	users  []string // ids
	group  string
	secret string // a live stored token's
	// accessToken is one the OAuth client was issued.
	accessToken string
}

// populate gives a tenant n users, a group of them all, a live and a
// revoked token, an OAuth client and a subscriber scoped to it; their
// events wait in the outbox.
func populate(t testing.TB, s *Store, tenant string, n int) tenantData {
	t.Helper()
	var d tenantData
	var members []string
	for i := range n {
		u := create(t, s, tenant, user(t, fmt.Sprintf(`"userName":"%s-user%d","emails":[{"value":"u%d@%s.example","type":"work"}]`, tenant, i, i, tenant)))
		d.users = append(d.users, u.ID())
		members = append(members, fmt.Sprintf(`{"value":%q}`, u.ID()))
	}
	d.group = create(t, s, tenant, group(t, `"displayName":"staff","externalId":"g-1","members":[`+strings.Join(members, ",")+`]`)).ID()
	var err error
	if d.secret, _, err = s.Tokens().Create(ctx, tenant, "entra", time.Time{}); err != nil {
		t.Fatal(err)
	}
	_, old, err := s.Tokens().Create(ctx, tenant, "old", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Tokens().Revoke(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	clientSecret, client, err := s.Clients().Create(ctx, tenant, "okta", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	at, err := s.IssueAccessToken(ctx, tenant, client.ID, clientSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d.accessToken = at.Token
	if _, err := s.AddSubscriber(ctx, Subscriber{Name: tenant + "sub", PublicKey: "U" + strings.ToUpper(tenant), Subjects: "scimrelay." + tenant + ".>"}); err != nil {
		t.Fatal(err)
	}
	return d
}

// quarantineOne moves one of the tenant's outbox rows to the quarantine.
func quarantineOne(t testing.TB, s *Store, tenant string) {
	t.Helper()
	rows, err := s.ReadOutbox(0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Msg != nil && rowTenant(mustRow(t, s, r.Key)) == tenant {
			if err := s.QuarantineOutbox(r.Key, "a test"); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no outbox row of %s", tenant)
}

func mustRow(t testing.TB, s *Store, key uint64) []byte {
	t.Helper()
	var v []byte
	if err := s.db.View(func(tx *bolt.Tx) error {
		v = slices.Clone(tx.Bucket(bucketOutbox).Get(u64(key)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// runningLog runs a provisioning log over s until the test ends, or until
// the stop it returns is called (which writes what was recorded).
func runningLog(t *testing.T, s *Store) (*RequestLog, func()) {
	t.Helper()
	l := NewRequestLog(s, LogOptions{}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	return l, stop
}

// recordAndWait records entries and waits until the log has filed a last
// one of acme's, recorded after them: the entries before it have been
// dealt with.
func recordAndWait(t *testing.T, l *RequestLog, now time.Time, entries ...LogEntry) {
	t.Helper()
	for _, e := range entries {
		l.Record(e)
	}
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	l.Record(LogEntry{Time: now, RequestID: marker, Tenant: "acme", Operation: "create", Status: 201})
	eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		list, err := l.Query(ctx, LogQuery{Tenant: "acme", Limit: 100_000})
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(list, func(e LogEntry) bool { return e.RequestID == marker }) {
			return errors.New("the marker entry is not filed yet")
		}
		return nil
	})
}

func logEntries(tenant string, now time.Time, n int) []LogEntry {
	var out []LogEntry
	for i := range n {
		out = append(out, LogEntry{Time: now.Add(time.Duration(i) * time.Microsecond), RequestID: fmt.Sprint(tenant, i), Tenant: tenant,
			Operation: "create", Status: 201, Name: fmt.Sprintf("%s-user%d", tenant, i)})
	}
	return out
}

// purgeAll begins, runs and ends the purge of name.
func purgeAll(t testing.TB, s *Store, name string, l *RequestLog) Purged {
	t.Helper()
	if err := s.BeginPurge(ctx, name); err != nil {
		t.Fatal(err)
	}
	p, err := s.Purge(ctx, name, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EndPurge(ctx, name); err != nil {
		t.Fatal(err)
	}
	return p
}

// without returns the test's options without the tenant name.
func withoutTenant(c *clock, name string) []TenantOptions {
	return slices.DeleteFunc(testOptions(c).Tenants, func(o TenantOptions) bool { return o.Name == name })
}

// TestPurgeLeavesNothingOfTheTenant: a purge of a removed tenant deletes
// everything the data file holds under its name (its buckets, credentials
// of every state, subscribers, outbox and quarantine rows, log entries),
// counts each kind, leaves Leftovers empty and the name free: added again,
// it has no users or groups and its old token is refused. Another tenant's
// data is untouched, key for key.
func TestPurgeLeavesNothingOfTheTenant(t *testing.T) {
	s, c, _ := openStore(t)
	l, stopLog := runningLog(t, s)
	globex := populate(t, s, "globex", 3)
	acme := populate(t, s, "acme", 2)
	quarantineOne(t, s, "globex")
	quarantineOne(t, s, "acme")
	if _, err := s.AddSubscriber(ctx, Subscriber{Name: "allusers", PublicKey: "UALL", Subjects: "scimrelay.*.user.>"}); err != nil {
		t.Fatal(err)
	}
	recordAndWait(t, l, c.now(), append(logEntries("globex", c.now(), 5), logEntries("acme", c.now(), 4)...)...)
	acmeBefore := holding(t, s, "acme")
	globexBefore := holding(t, s, "globex")
	if globexBefore.Outbox == 0 || globexBefore.Log != 5 || globexBefore.Credentials != 3 || globexBefore.Quarantined != 1 {
		t.Fatalf("globex holds %+v before its purge", globexBefore)
	}

	if err := s.SetTenants(withoutTenant(c, "globex")); err != nil {
		t.Fatal(err)
	}
	var reported []Purged
	if err := s.BeginPurge(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	if names, err := s.Purging(); err != nil || !slices.Equal(names, []string{"globex"}) {
		t.Fatalf("being purged: %v, %v", names, err)
	}
	got, err := s.Purge(ctx, "globex", l, func(p Purged) { reported = append(reported, p) })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EndPurge(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	want := Purged{Users: 3, Groups: 1, Memberships: 3, Keys: globexBefore.keys(), Tokens: 2, Clients: 1, Subscribers: []string{"globexsub"},
		LogEntries: 5, Outbox: globexBefore.Outbox, Quarantined: 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("purged %+v, want %+v", got, want)
	}
	if len(reported) == 0 || !reflect.DeepEqual(reported[len(reported)-1], want) {
		t.Errorf("the last progress reported %+v, want %+v", reported, want)
	}
	if h := holding(t, s, "globex"); !h.empty() {
		t.Errorf("after its purge globex holds %+v", h)
	}
	if lo, err := s.Leftovers(ctx, "globex"); err != nil || !lo.Empty() {
		t.Errorf("after its purge globex's leftovers are %+v, %v", lo, err)
	}
	if names, err := s.Purging(); err != nil || len(names) != 0 {
		t.Errorf("being purged after the purge ended: %v, %v", names, err)
	}
	if list, _ := s.Tokens().List(ctx, "globex"); len(list) != 0 {
		t.Errorf("globex's tokens after its purge: %+v", list)
	}
	if d, err := s.OutboxDepth(); err != nil || d != acmeBefore.Outbox {
		t.Errorf("outbox depth %d (%v) after the purge; acme has %d rows there", d, err, acmeBefore.Outbox)
	}
	if after := holding(t, s, "acme"); !reflect.DeepEqual(after, acmeBefore) {
		t.Errorf("acme held %+v before globex's purge and %+v after", acmeBefore, after)
	}
	for what, secret := range map[string]string{"token": acme.secret, "access token": acme.accessToken} {
		if err := s.Authenticate(ctx, "acme", secret); err != nil {
			t.Errorf("acme's %s after globex's purge: %v", what, err)
		}
	}
	if subs, _ := s.Subscribers(ctx); len(subs) != 2 {
		t.Errorf("subscribers after globex's purge: %+v; want acmesub and allusers", subs)
	}

	// The log's figures lose what the purge deleted (Run keeps them).
	stopLog()
	measured := NewRequestLog(s, LogOptions{}, slog.New(slog.DiscardHandler))
	if err := measured.measure(); err != nil {
		t.Fatal(err)
	}
	if l.size != measured.size || !maps.Equal(l.shares, measured.shares) {
		t.Errorf("after the purge the log counts %d bytes, shares %v; its entries take %d, %v", l.size, l.shares, measured.size, measured.shares)
	}

	// The name is free: a tenant added under it starts afresh.
	if err := s.SetTenants(testOptions(c).Tenants); err != nil {
		t.Fatal(err)
	}
	for _, rt := range []*scim.ResourceType{scim.UserResourceType, scim.GroupResourceType} {
		if page, err := s.List(ctx, "globex", rt, scim.Query{Count: 10}); err != nil || page.Total != 0 {
			t.Errorf("%s of globex added again: %d, %v", rt.Name, page.Total, err)
		}
	}
	if _, err := s.Get(ctx, "globex", scim.UserResourceType, globex.users[0]); !errors.Is(err, scim.ErrNotFound) {
		t.Errorf("a purged user of globex added again: %v", err)
	}
	for what, secret := range map[string]string{"token": globex.secret, "access token": globex.accessToken} {
		if err := s.Authenticate(ctx, "globex", secret); !errors.Is(err, scim.ErrUnauthorized) {
			t.Errorf("globex's old %s once globex is added again: %v", what, err)
		}
	}
}

// keys counts the keys of every bucket of the tenant.
func (h held) keys() int {
	n := 0
	for _, k := range h.Buckets {
		n += k
	}
	return n
}

// TestPurgeRefusals: a configured tenant is refused and nothing is
// deleted, as is a name that holds nothing; a purge not begun deletes
// nothing; a tenant being purged cannot be configured, at a reload or at
// a start.
func TestPurgeRefusals(t *testing.T) {
	s, c, path := openStore(t)
	populate(t, s, "globex", 2)
	populate(t, s, "acme", 1)
	before := map[string]held{"acme": holding(t, s, "acme"), "globex": holding(t, s, "globex")}
	unchanged := func(when string) {
		t.Helper()
		for name, h := range before {
			if now := holding(t, s, name); !reflect.DeepEqual(now, h) {
				t.Errorf("%s: %s held %+v, now %+v", when, name, h, now)
			}
		}
	}
	if err := s.BeginPurge(ctx, "globex"); !errors.Is(err, ErrTenantConfigured) {
		t.Errorf("purging configured globex: %v", err)
	}
	if _, err := s.Purge(ctx, "globex", nil, nil); err == nil || !strings.Contains(err.Error(), "not begun") {
		t.Errorf("a purge of globex not begun: %v", err)
	}
	if err := s.BeginPurge(ctx, "initech"); !errors.Is(err, ErrNothingToPurge) {
		t.Errorf("purging a name that holds nothing: %v", err)
	}
	unchanged("after the refusals")
	if names, _ := s.Purging(); len(names) != 0 {
		t.Errorf("being purged after refusals: %v", names)
	}

	// Removed and being purged, globex cannot be configured again until
	// its purge is done: not by a reload, not by a start.
	if err := s.SetTenants(withoutTenant(c, "globex")); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginPurge(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTenants(testOptions(c).Tenants); !errors.Is(err, ErrBeingPurged) || !s.HasTenant("acme") || s.HasTenant("globex") {
		t.Errorf("a reload adding globex while it is purged: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(path, testOptions(c)); !errors.Is(err, ErrBeingPurged) {
		if err == nil {
			_ = s2.Close()
		}
		t.Fatalf("a start with globex configured while it is purged: %v", err)
	}
	o := testOptions(c)
	o.Tenants = withoutTenant(c, "globex")
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	unchanged("after the refused configurations")
	purgeAll(t, s, "globex", nil)
	if err := s.SetTenants(testOptions(c).Tenants); err != nil {
		t.Errorf("adding globex once its purge is done: %v", err)
	}
}

// TestPurgeInChunks: a large tenant is deleted over many transactions of
// at most purgeChunk keys, between which other tenants' writes commit; a
// purge stopped half-way (its context ended, as at a shutdown, or a
// crash between two transactions) leaves the name marked, so that it
// cannot be configured, at a reload or after a restart, and run again
// after the restart it finishes: the counts of the two runs add up to
// everything.
func TestPurgeInChunks(t *testing.T) {
	defer func(n int) { purgeChunk = n }(purgeChunk)
	purgeChunk = 7
	s, c, path := openStore(t)
	l, stopLog := runningLog(t, s)
	populate(t, s, "globex", 60)
	recordAndWait(t, l, c.now(), logEntries("globex", c.now(), 30)...)
	before := holding(t, s, "globex")
	if err := s.SetTenants(withoutTenant(c, "globex")); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginPurge(ctx, "globex"); err != nil {
		t.Fatal(err)
	}

	// Stopped after five chunks; another tenant writes between chunks.
	stopped, stop := context.WithCancel(ctx)
	chunks := 0
	first, err := s.Purge(stopped, "globex", l, func(Purged) {
		if chunks++; chunks == 5 {
			stop()
		}
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"written-between-chunks-%d"`, chunks)))
	})
	if !errors.Is(err, context.Canceled) || chunks != 5 {
		t.Fatalf("a purge stopped after 5 chunks: %d chunks, %v", chunks, err)
	}
	if page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{}); err != nil || page.Total != 5 {
		t.Errorf("acme has %d users (%v); 5 were written between the chunks", page.Total, err)
	}
	if h := holding(t, s, "globex"); h.empty() {
		t.Fatalf("a purge stopped after 5 chunks of %d left nothing", purgeChunk)
	}
	if err := s.SetTenants(testOptions(c).Tenants); !errors.Is(err, ErrBeingPurged) {
		t.Errorf("a reload adding globex back while its purge is half done: %v", err)
	}

	// The relay restarts (as after a crash between two transactions):
	// not with globex configured; without it, the purge begins again.
	stopLog()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(path, testOptions(c)); !errors.Is(err, ErrBeingPurged) {
		if err == nil {
			_ = s2.Close()
		}
		t.Fatalf("a restart with globex configured while its purge is half done: %v", err)
	}
	o := testOptions(c)
	o.Tenants = withoutTenant(c, "globex")
	s, err = Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	l, _ = runningLog(t, s)
	if names, err := s.Purging(); err != nil || !slices.Equal(names, []string{"globex"}) {
		t.Errorf("being purged after the restart: %v, %v", names, err)
	}
	if err := s.BeginPurge(ctx, "globex"); err != nil {
		t.Fatalf("beginning the purge again: %v", err)
	}

	// Run again, it finishes; each transaction deleted at most a chunk.
	txBefore := s.commits.last.Load()
	deleted := 0
	rest, err := s.Purge(ctx, "globex", l, func(p Purged) {
		if n := p.Keys - deleted; n > purgeChunk {
			t.Errorf("one transaction deleted %d keys of globex's buckets, more than a chunk (%d)", n, purgeChunk)
		}
		deleted = p.Keys
	})
	if err != nil {
		t.Fatal(err)
	}
	txs := s.commits.last.Load() - txBefore
	if err := s.EndPurge(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	if h := holding(t, s, "globex"); !h.empty() {
		t.Errorf("after the purge ran again globex holds %+v", h)
	}
	total := Purged{Users: first.Users + rest.Users, Groups: first.Groups + rest.Groups, Memberships: first.Memberships + rest.Memberships,
		Keys: first.Keys + rest.Keys, LogEntries: first.LogEntries + rest.LogEntries, Outbox: first.Outbox + rest.Outbox}
	want := Purged{Users: 60, Groups: 1, Memberships: 60, Keys: before.keys(), LogEntries: 30, Outbox: before.Outbox}
	if !reflect.DeepEqual(total, want) {
		t.Errorf("the two runs purged %+v in all, want %+v", total, want)
	}
	if minimum := uint64(rest.Keys / purgeChunk); txs < minimum {
		t.Errorf("the second run deleted %d keys in %d transactions: more than %d keys in one", rest.Keys, txs, purgeChunk)
	}
}

// lastSequenceOf returns the highest sequence of the tenant's events in
// the outbox, 0 when none is there.
func lastSequenceOf(t testing.TB, s *Store, tenant string) uint64 {
	t.Helper()
	var last uint64
	for _, e := range outbox(t, s) {
		if e.data.Tenant == tenant {
			last = max(last, e.seq)
		}
	}
	return last
}

// TestPurgedNameContinuesItsSequence: a purge keeps one thing of the
// tenant, the last sequence its events reached, and a tenant configured
// again under the name continues after it: at a start after a restart
// and at a reload, after a purge cut short (once the tenant's counter was
// deleted) and run again after a restart. The name still holds nothing to
// purge, and the other tenants' sequences are their own.
func TestPurgedNameContinuesItsSequence(t *testing.T) {
	defer func(n int) { purgeChunk = n }(purgeChunk)
	purgeChunk = 3
	s, c, path := openStore(t)
	populate(t, s, "globex", 4)
	create(t, s, "acme", user(t, `"userName":"carl"`))
	reached := lastSequenceOf(t, s, "globex")
	if reached < 5 {
		t.Fatalf("globex's events reached sequence %d; populate makes at least 5", reached)
	}
	o := testOptions(c)
	o.Tenants = withoutTenant(c, "globex")
	if err := s.SetTenants(o.Tenants); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginPurge(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	// Cut short once a chunk of its buckets, the counter's, is deleted.
	stopped, stop := context.WithCancel(ctx)
	if _, err := s.Purge(stopped, "globex", nil, func(p Purged) {
		if p.Keys > 0 {
			stop()
		}
	}); !errors.Is(err, context.Canceled) {
		t.Fatalf("a purge stopped after its first chunk of globex's buckets: %v", err)
	}
	if h := holding(t, s, "globex"); h.Buckets == nil || h.Buckets[string(bucketCounters)] != 0 {
		t.Fatalf("the purge was not cut short between its counter and its end: globex holds %+v", h)
	}

	// Restarted without globex, the purge finishes.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	purgeAll(t, s, "globex", nil)
	if err := s.BeginPurge(ctx, "globex"); !errors.Is(err, ErrNothingToPurge) {
		t.Errorf("purging globex once its purge is done: %v; its last sequence is nothing to purge", err)
	}

	// Restarted with globex configured again, it continues.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, testOptions(c)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	create(t, s, "globex", user(t, `"userName":"erin"`))
	if got := lastSequenceOf(t, s, "globex"); got != reached+1 {
		t.Errorf("globex configured again at a start: its first event has sequence %d, want %d", got, reached+1)
	}
	create(t, s, "acme", user(t, `"userName":"dave"`))
	if got := lastSequenceOf(t, s, "acme"); got != 2 {
		t.Errorf("acme's second event has sequence %d", got)
	}

	// Purged again, and added again at a reload, it continues again.
	if err := s.SetTenants(o.Tenants); err != nil {
		t.Fatal(err)
	}
	purgeAll(t, s, "globex", nil)
	if err := s.SetTenants(testOptions(c).Tenants); err != nil {
		t.Fatal(err)
	}
	create(t, s, "globex", user(t, `"userName":"finn"`))
	if got := lastSequenceOf(t, s, "globex"); got != reached+2 {
		t.Errorf("globex configured again at a reload: its first event has sequence %d, want %d", got, reached+2)
	}
}

// TestLogFilesNothingOfATenantBeingPurged: an entry of a tenant being
// purged that reaches the log after the purge began (a request answered
// before its removal, a minute's summary of reads) is not filed, where
// the purge would not find it; other tenants' are.
func TestLogFilesNothingOfATenantBeingPurged(t *testing.T) {
	s, c, _ := openStore(t)
	l, _ := runningLog(t, s)
	populate(t, s, "globex", 1)
	if err := s.SetTenants(withoutTenant(c, "globex")); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginPurge(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	recordAndWait(t, l, c.now(), logEntries("globex", c.now(), 3)...)
	if h := holding(t, s, "globex"); h.Log != 0 {
		t.Errorf("the log filed %d entries of globex after its purge began", h.Log)
	}
	if h := holding(t, s, "acme"); h.Log != 1 {
		t.Errorf("the log filed %d entries of acme, want its marker", h.Log)
	}
}

// TestLogFilesNoLateSummaryOfAPurgedTenant: a minute's summary of a
// tenant's reads, recorded before its purge and written once its minute
// is over, after the purge ended, is not filed: the log holds no entry of
// the purged tenant, while acme's summary of the same minute is filed.
// Configured again, the name has its entries filed.
func TestLogFilesNoLateSummaryOfAPurgedTenant(t *testing.T) {
	s, c, _ := openStore(t)
	l, _ := runningLog(t, s)
	populate(t, s, "globex", 1)
	read := func(tenant string) LogEntry {
		return LogEntry{Time: c.now(), RequestID: "read-" + tenant, Tenant: tenant, Method: "GET", Path: "/scim/v2/" + tenant + "/Users",
			Operation: "list", Resource: "User", Status: 200}
	}
	// Filed after them, acme's marker says the reads are summed up.
	recordAndWait(t, l, c.now(), read("globex"), read("acme"))
	if err := s.SetTenants(withoutTenant(c, "globex")); err != nil {
		t.Fatal(err)
	}
	purgeAll(t, s, "globex", l)
	if h := holding(t, s, "globex"); h.Log != 0 {
		t.Fatalf("the purge left %d log entries of globex", h.Log)
	}

	c.add(2 * time.Minute) // the minute of the reads is over: their summaries are written
	awaitSummary(t, l, "acme", "read-acme")
	if h := holding(t, s, "globex"); h.Log != 0 {
		t.Errorf("after globex's purge the log filed %d entries of it: its summary of reads, written late", h.Log)
	}

	if err := s.SetTenants(testOptions(c).Tenants); err != nil {
		t.Fatal(err)
	}
	recordAndWait(t, l, c.now(), logEntries("globex", c.now(), 1)...)
	if h := holding(t, s, "globex"); h.Log != 1 {
		t.Errorf("globex configured again: the log filed %d of its entries, want 1", h.Log)
	}
}

// awaitSummary waits until the log has filed the summary of one read of
// tenant's whose request id was id: the summaries of its minute are
// written then.
func awaitSummary(t *testing.T, l *RequestLog, tenant, id string) {
	t.Helper()
	eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		list, err := l.Query(ctx, LogQuery{Tenant: tenant, Limit: 100})
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(list, func(e LogEntry) bool { return e.Count == 1 && e.RequestID == id }) {
			return fmt.Errorf("%s's summary of reads is not filed yet", tenant)
		}
		return nil
	})
}

// TestPurgeForgetsTheTenantsPendingSummaries: a purge makes the log forget
// the summaries of the tenant's reads whose minute is not over. A name
// added again before that minute ends would otherwise have the old
// tenant's reads (their request ids and paths) filed in its log, and
// counted with its own reads of the minute (a review reproduced it).
func TestPurgeForgetsTheTenantsPendingSummaries(t *testing.T) {
	s, c, _ := openStore(t)
	l, _ := runningLog(t, s)
	populate(t, s, "globex", 1)
	old := LogEntry{Time: c.now(), RequestID: "old-globex-read", Tenant: "globex", Method: "GET",
		Path: `/scim/v2/globex/Users?filter=userName eq "ann@old.example"`, Operation: "list", Resource: "User", Status: 200}
	acme := LogEntry{Time: c.now(), RequestID: "read-acme", Tenant: "acme", Method: "GET", Path: "/scim/v2/acme/Users",
		Operation: "list", Resource: "User", Status: 200}
	recordAndWait(t, l, c.now(), old, acme)
	if err := s.SetTenants(withoutTenant(c, "globex")); err != nil {
		t.Fatal(err)
	}
	purgeAll(t, s, "globex", l)
	// Added again within the minute of the old reads.
	if err := s.SetTenants(testOptions(c).Tenants); err != nil {
		t.Fatal(err)
	}
	c.add(2 * time.Minute) // the minute is over: its summaries are written
	awaitSummary(t, l, "acme", "read-acme")
	list, err := l.Query(ctx, LogQuery{Tenant: "globex", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		t.Errorf("the purged tenant's read is filed under the globex added again: %+v", e)
	}
}

// heldReads is the store's outbox whose first read of rows waits, having
// read them, until released.
type heldReads struct {
	*Store
	entered chan struct{} // a read holds rows
	release chan struct{} // closed: the read returns them
}

func (h *heldReads) ReadOutbox(after uint64, limit int) ([]OutboxRow, error) {
	rows, err := h.Store.ReadOutbox(after, limit)
	if len(rows) > 0 {
		select {
		case h.entered <- struct{}{}:
		default:
		}
		<-h.release
	}
	return rows, err
}

// TestAwaitWindowWaitsForTheWindowUnderWay: a purge deletes the tenant's
// outbox rows, then waits for the publisher before it purges the stream.
// AwaitWindow returns only once the window the publisher read (before the
// rows were deleted) has been published: what it held is in the stream
// then, where the purge finds it.
func TestAwaitWindowWaitsForTheWindowUnderWay(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	for i := range 3 {
		create(t, s, "globex", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	h := &heldReads{Store: s, entered: make(chan struct{}, 1), release: make(chan struct{})}
	var once sync.Once
	release := func() { once.Do(func() { close(h.release) }) }
	ensureStream(t, js)
	p := runPublisher(t, h, js, slog.New(slog.DiscardHandler), PublisherOptions{AckTimeout: 2 * time.Second})
	t.Cleanup(release) // before the publisher's stop, which waits for the read
	select {
	case <-h.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher read nothing")
	}
	inStream := func() uint64 {
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return 0
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	awaited := make(chan uint64, 1)
	go func() {
		p.AwaitWindow()
		awaited <- inStream()
	}()
	select {
	case n := <-awaited:
		t.Fatalf("AwaitWindow returned while the publisher held a window it had read, not yet published (%d events in the stream)", n)
	case <-time.After(200 * time.Millisecond): // it waits, as it should
	}
	release()
	if n := <-awaited; n != 3 {
		t.Errorf("once AwaitWindow returned the stream held %d events; the window held 3", n)
	}
}
