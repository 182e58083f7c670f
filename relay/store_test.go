// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

var ctx = context.Background()

// clock is a settable time source for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testOptions(c *clock) Options {
	return Options{
		Tenants: []TenantOptions{
			{Name: "acme", StaticTokens: []string{"acme-static-token-0123456789"}},
			{Name: "safe", Unique: "email", Required: []string{"emails"}},
			{Name: "globex"},
		},
		Now: c.now,
	}
}

func openStore(t testing.TB) (*Store, *clock, string) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "scimrelay.db")
	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, c, path
}

func user(t testing.TB, body string) *scim.Resource {
	t.Helper()
	r, err := scim.ParseResource(scim.UserResourceType, []byte(`{"schemas":["`+scim.UserSchema+`"],`+body+`}`))
	if err != nil {
		t.Fatalf("user %s: %v", body, err)
	}
	return r
}

func group(t testing.TB, body string) *scim.Resource {
	t.Helper()
	r, err := scim.ParseResource(scim.GroupResourceType, []byte(`{"schemas":["`+scim.GroupSchema+`"],`+body+`}`))
	if err != nil {
		t.Fatalf("group %s: %v", body, err)
	}
	return r
}

func create(t testing.TB, s *Store, tenant string, r *scim.Resource) *scim.Resource {
	t.Helper()
	out, err := s.Create(ctx, tenant, r)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return out.Resource
}

// recordCharges records what s charges each tenant's rate limit (ChargeTo);
// take returns what was charged since the last take.
func recordCharges(s *Store) (take func() map[string]int) {
	var mu sync.Mutex
	charged := map[string]int{}
	s.ChargeTo(func(tenant string, n int) { mu.Lock(); charged[tenant] += n; mu.Unlock() })
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		got := charged
		charged = map[string]int{}
		return got
	}
}

func patch(t testing.TB, s *Store, tenant string, rt *scim.ResourceType, id, ops string) (*scim.Resource, error) {
	t.Helper()
	p, err := scim.ParsePatch(rt, []byte(`{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[`+ops+`]}`))
	if err != nil {
		t.Fatalf("ParsePatch: %v", err)
	}
	res, err := s.Update(ctx, tenant, rt, id, func(cur *scim.Resource) (*scim.Update, error) { return p.Apply(cur) })
	return res.Resource, err
}

func mustPatch(t testing.TB, s *Store, tenant string, rt *scim.ResourceType, id, ops string) *scim.Resource {
	t.Helper()
	r, err := patch(t, s, tenant, rt, id, ops)
	if err != nil {
		t.Fatalf("patch %s: %v", ops, err)
	}
	return r
}

// del deletes a resource, for tests that care only whether it worked.
// A non-empty ifMatch is the version it requires.
func del(s *Store, tenant string, rt *scim.ResourceType, id, ifMatch string) error {
	var p scim.Precondition
	if ifMatch != "" {
		p = scim.RequireVersion(ifMatch)
	}
	_, err := s.Delete(ctx, tenant, rt, id, p)
	return err
}

func wantErr(t testing.TB, err error, kind *scim.Error, detail string) {
	t.Helper()
	if err == nil || !errors.Is(err, kind) || !strings.Contains(err.Error(), detail) {
		t.Fatalf("got %v, want %d %s containing %q", err, kind.Status, kind.Type, detail)
	}
}

// drain reads every outbox row and decodes the events, oldest first.
type seen struct {
	action     events.Action
	subject    string
	seq        uint64
	subjectSeq uint64
	data       events.Data
	source     string
}

func outbox(t testing.TB, s *Store) []seen {
	t.Helper()
	return eventsAfter(t, s, 0)
}

func actionsOf(list []seen) string {
	var b []string
	for _, e := range list {
		b = append(b, string(e.action))
	}
	return strings.Join(b, " ")
}

func TestUserLifecycle(t *testing.T) {
	s, c, _ := openStore(t)
	u := create(t, s, "acme", user(t, `"userName":"Ann@X.com","externalId":"e1","active":true,"emails":[{"value":"ann@x.com","type":"work"}],"name":{"givenName":"Ann"}`))
	id := u.ID()
	if len(id) != 36 || u.Meta().Version != `W/"1"` || u.Meta().Created.IsZero() {
		t.Fatalf("created: %s", u.AppendJSON(nil))
	}
	got, err := s.Get(ctx, "acme", scim.UserResourceType, id)
	if err != nil || got.String("userName") != "Ann@X.com" {
		t.Fatalf("Get: %v %v", got, err)
	}
	c.add(time.Minute)
	p := mustPatch(t, s, "acme", scim.UserResourceType, id, `{"op":"replace","path":"name.givenName","value":"Anna"}`)
	if p.Meta().Version != `W/"2"` || !p.Meta().LastModified.After(p.Meta().Created) {
		t.Fatalf("after patch: %v", p.Meta())
	}
	// A no-op patch changes nothing: same version, no event.
	before := len(outbox(t, s))
	if p := mustPatch(t, s, "acme", scim.UserResourceType, id, `{"op":"replace","path":"name.givenName","value":"Anna"}`); p.Meta().Version != `W/"2"` {
		t.Fatalf("no-op patch bumped the version to %s", p.Meta().Version)
	}
	if len(outbox(t, s)) != before {
		t.Fatal("no-op patch emitted an event")
	}
	mustPatch(t, s, "acme", scim.UserResourceType, id, `{"op":"replace","path":"active","value":"False"},{"op":"replace","path":"title","value":"Guide"}`)
	mustPatch(t, s, "acme", scim.UserResourceType, id, `{"op":"replace","path":"active","value":true}`)
	if err := del(s, "acme", scim.UserResourceType, id, `W/"1"`); !errors.Is(err, scim.ErrPreconditionFailed) {
		t.Fatalf("Delete with a stale If-Match: %v", err)
	}
	if err := del(s, "acme", scim.UserResourceType, id, `W/"4"`); err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, "acme", scim.UserResourceType, id)
	wantErr(t, err, scim.ErrNotFound, "not found")
	wantErr(t, del(s, "acme", scim.UserResourceType, id, ""), scim.ErrNotFound, "not found")
	// The userName is free again.
	create(t, s, "acme", user(t, `"userName":"ann@x.com"`))

	evs := outbox(t, s)
	if got := actionsOf(evs); got != "user.created user.updated user.deactivated user.reactivated user.deleted user.created" {
		t.Fatalf("events: %s", got)
	}
	for i, e := range evs[:5] {
		if e.subject != "Users/"+id || e.subjectSeq != uint64(i+1) || e.seq != uint64(i+1) || e.data.Tenant != "acme" {
			t.Errorf("event %d: subject %s subjectseq %d seq %d", i, e.subject, e.subjectSeq, e.seq)
		}
	}
	deact := evs[2].data
	if len(deact.Changes) != 2 || deact.Changes[0].Path != "title" || deact.Changes[1].Path != "active" || string(deact.Changes[1].Old) != "true" || string(deact.Changes[1].New) != "false" {
		t.Errorf("deactivation changes: %+v", deact.Changes)
	}
	if upd := evs[1].data; len(upd.Changes) != 1 || string(upd.Changes[0].Old) != `"Ann"` || string(upd.Changes[0].New) != `"Anna"` || upd.ExternalID != "e1" {
		t.Errorf("update data: %+v", upd)
	}
	if !strings.Contains(string(evs[4].data.Resource), `"userName":"Ann@X.com"`) {
		t.Errorf("user.deleted carries the resource before the delete: %s", evs[4].data.Resource)
	}
}

// TestStoredPatchesKeepWhatTheyDoNotName: through the store, as the relay
// serves it (a fuzz review): clearing a user's givenName by a replace of
// name keeps her familyName (the whole name was deleted), and a retried
// replace of emails[value eq "old"].value is 400 noTarget, the user
// unchanged (it stored the new address twice, version 3).
func TestStoredPatchesKeepWhatTheyDoNotName(t *testing.T) {
	s, _, _ := openStore(t)
	u := create(t, s, "acme", user(t, `"userName":"ann@x.com","name":{"givenName":"Ann","familyName":"Lee"},"emails":[{"value":"ann@x.com","type":"work","primary":true}]`))
	mustPatch(t, s, "acme", scim.UserResourceType, u.ID(), `{"op":"replace","path":"name","value":{"givenName":null}}`)
	got, err := s.Get(ctx, "acme", scim.UserResourceType, u.ID())
	if err != nil {
		t.Fatal(err)
	}
	if name, _ := got.Attrs["name"].(map[string]any); len(name) != 1 || name["familyName"] != "Lee" {
		t.Errorf("after clearing givenName the stored user is %s, want name {familyName: Lee}", got.AppendJSON(nil))
	}
	const op = `{"op":"replace","path":"emails[value eq \"ann@x.com\"].value","value":"ann.lee@x.com"}`
	first := mustPatch(t, s, "acme", scim.UserResourceType, u.ID(), op)
	if _, err := patch(t, s, "acme", scim.UserResourceType, u.ID(), op); !errors.Is(err, scim.ErrNoTarget) {
		t.Errorf("the retried PATCH: %v, want 400 noTarget", err)
	}
	after, err := s.Get(ctx, "acme", scim.UserResourceType, u.ID())
	if err != nil {
		t.Fatal(err)
	}
	if a, b := string(after.AppendJSON(nil)), string(first.AppendJSON(nil)); a != b {
		t.Errorf("the retry changed the user:\n%s\nwant\n%s", a, b)
	}
}

// TestPatchAddSecondWorkAddressKeepsBoth: docs/decisions.md says
// "Addresses, which have no value, merge only exact repeats: two work
// addresses are two addresses", and RFC 7644 §3.5.2.1 says an add to a
// multi-valued attribute adds a new value. A PATCH add of a second, different
// work address must keep the first, as a POST or PUT of both does; it was
// merged into the first, which was lost (a fuzz review of PATCH).
func TestPatchAddSecondWorkAddressKeepsBoth(t *testing.T) {
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"ann","addresses":[{"type":"work","locality":"Paris","country":"FR"}]}`, http.StatusCreated)
	id := u["id"].(string)
	got := do("PATCH", "/Users/"+id, `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[{"op":"add","path":"addresses","value":[{"type":"work","locality":"Berlin","country":"DE"}]}]}`, http.StatusOK)
	// The same two addresses through a PUT, for comparison.
	v := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"bob"}`, http.StatusCreated)
	put := do("PUT", "/Users/"+v["id"].(string), `{"schemas":["`+scim.UserSchema+`"],"userName":"bob","addresses":[{"type":"work","locality":"Paris","country":"FR"},{"type":"work","locality":"Berlin","country":"DE"}]}`, http.StatusOK)
	a, _ := json.Marshal(got["addresses"])
	b, _ := json.Marshal(put["addresses"])
	if string(a) != string(b) {
		t.Fatalf("PATCH add of a second work address gives %s; a PUT of both gives %s", a, b)
	}
}

// TestPatchRemoveOneWorkAddressByValueKeepsTheOther: removing one of two
// work addresses by value (Entra's remove dialect, a value array) removes
// that one only; it removed both (a fuzz review of PATCH).
func TestPatchRemoveOneWorkAddressByValueKeepsTheOther(t *testing.T) {
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"ann","addresses":[{"type":"work","locality":"Paris"},{"type":"work","locality":"Berlin"}]}`, http.StatusCreated)
	if n := len(u["addresses"].([]any)); n != 2 {
		t.Fatalf("POST kept %d addresses", n)
	}
	got := do("PATCH", "/Users/"+u["id"].(string), `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[{"op":"remove","path":"addresses","value":[{"type":"work","locality":"Berlin"}]}]}`, http.StatusOK)
	a, _ := json.Marshal(got["addresses"])
	if string(a) != `[{"locality":"Paris","type":"work"}]` {
		t.Fatalf("removing the Berlin work address leaves %s, want the Paris one", a)
	}
}

func TestUniqueness(t *testing.T) {
	s, _, _ := openStore(t)
	create(t, s, "acme", user(t, `"userName":"ann@x.com","externalId":"shared"`))
	_, err := s.Create(ctx, "acme", user(t, `"userName":"ANN@X.COM"`))
	wantErr(t, err, scim.ErrUniqueness, `userName "ANN@X.COM" is already taken`)
	// externalId is not unique: clients reuse it.
	b := create(t, s, "acme", user(t, `"userName":"bob","externalId":"shared"`))
	// Renaming into a taken userName is refused and changes nothing.
	_, err = patch(t, s, "acme", scim.UserResourceType, b.ID(), `{"op":"replace","path":"userName","value":"Ann@x.com"}`)
	wantErr(t, err, scim.ErrUniqueness, "already taken")
	if got, _ := s.Get(ctx, "acme", scim.UserResourceType, b.ID()); got.String("userName") != "bob" || got.Meta().Version != `W/"1"` {
		t.Fatal("a refused rename changed the user")
	}
	// Tenants are separate namespaces.
	create(t, s, "globex", user(t, `"userName":"ann@x.com"`))
	// Groups: displayName is unique per tenant, case-insensitively.
	create(t, s, "acme", group(t, `"displayName":"Sales"`))
	_, err = s.Create(ctx, "acme", group(t, `"displayName":"sales"`))
	wantErr(t, err, scim.ErrUniqueness, "displayName")
	// Unknown tenant.
	_, err = s.Create(ctx, "initech", user(t, `"userName":"x"`))
	wantErr(t, err, scim.ErrNotFound, "no tenant")
}

// TestEmailTenant follows the SAFE guide: users match on email, and a user
// without one is refused.
func TestEmailTenant(t *testing.T) {
	s, _, _ := openStore(t)
	_, err := s.Create(ctx, "safe", user(t, `"userName":"ann"`))
	wantErr(t, err, scim.ErrInvalidValue, "attribute emails is required in tenant safe")
	create(t, s, "safe", user(t, `"userName":"ann","emails":[{"value":"Ann@X.com","type":"work"}]`))
	// Same userName is fine here; same work email is not.
	create(t, s, "safe", user(t, `"userName":"ann","emails":[{"value":"other@x.com","type":"work"}]`))
	_, err = s.Create(ctx, "safe", user(t, `"userName":"zed","emails":[{"value":"ann@x.com","type":"work"}]`))
	wantErr(t, err, scim.ErrUniqueness, `email "ann@x.com"`)
}

// TestFilterIndexMatchesScan checks that every filter gives the same answer
// whether an index answers it or a scan does, and, when the query lets
// the store answer with stored resources, whether it does or not: it does
// for a user's userName or externalId equality alone, which its index
// answers exactly.
func TestFilterIndexMatchesScan(t *testing.T) {
	s, _, _ := openStore(t)
	var ids []string
	for i := 0; i < 30; i++ {
		r := create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"user%02d@x.com","externalId":"ext%d","title":"t%d","active":%v,
			"emails":[{"value":"User%02d@X.com","type":"work"},{"value":"home%d@y.com","type":"home"}]`, i, i%5, i%3, i%2 == 0, i, i)))
		ids = append(ids, r.ID())
	}
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"Sales","externalId":"g1","members":[{"value":%q},{"value":%q}]`, ids[3], ids[4])))
	create(t, s, "acme", group(t, `"displayName":"Ops"`))
	// Values outside ASCII, whose case folding the index keys and the
	// filter must agree on: final sigma, the long s, the Kelvin sign,
	// sharp s, dotted capital I.
	for _, u := range []string{
		`"userName":"ΟΔΥΣΣΕΥΣ","emails":[{"value":"ΟΔΥΣΣΕΥΣ@Ιθάκη.gr","type":"work"}]`,
		`"userName":"ſam","externalId":"ſ1","emails":[{"value":"ſam@x.com"}]`,
		`"userName":"\u212Aelvin","emails":[{"value":"\u212A@x.com","type":"work"}]`,
		`"userName":"straße","externalId":"Straße"`,
		`"userName":"İstanbul"`,
	} {
		create(t, s, "acme", user(t, u))
	}
	create(t, s, "acme", group(t, `"displayName":"Ωmega","externalId":"ω"`))
	create(t, s, "acme", group(t, `"displayName":"ωMEGA2"`))
	tests := []struct {
		rt     *scim.ResourceType
		filter string
		want   int
	}{
		{scim.UserResourceType, `userName eq "USER07@x.com"`, 1},
		{scim.UserResourceType, `userName eq "user07@x.co"`, 0},
		{scim.UserResourceType, `externalId eq "ext2"`, 6},
		{scim.UserResourceType, `externalId eq "EXT2"`, 0},
		{scim.UserResourceType, `emails[type eq "work"].value eq "user09@x.COM"`, 1},
		{scim.UserResourceType, `emails[type eq "work"].value eq "home9@y.com"`, 0},
		{scim.UserResourceType, `emails.value eq "home9@y.com"`, 1},
		{scim.UserResourceType, `externalId eq "ext1" and active eq true`, 3},
		{scim.UserResourceType, `userName eq "user01@x.com" or userName eq "user02@x.com"`, 2},
		{scim.UserResourceType, `title co "1"`, 10},
		{scim.UserResourceType, `not (active eq true)`, 20}, // 15, and the 5 users below without active
		{scim.UserResourceType, fmt.Sprintf(`id eq %q`, ids[5]), 1},
		{scim.UserResourceType, `id eq "nope"`, 0},
		{scim.GroupResourceType, `displayName eq "sales"`, 1},
		{scim.GroupResourceType, `externalId eq "g1"`, 1},
		{scim.GroupResourceType, fmt.Sprintf(`members.value eq %q`, ids[3]), 1},
		{scim.GroupResourceType, fmt.Sprintf(`members[value eq %q]`, ids[9]), 0},
		{scim.GroupResourceType, `displayName sw "O"`, 1},
		{scim.UserResourceType, `userName eq "οδυσσευς"`, 1},
		{scim.UserResourceType, `userName eq "οδυσσευσ"`, 1},
		{scim.UserResourceType, `userName sw "οδυσσευς"`, 1},
		{scim.UserResourceType, `userName eq "SAM"`, 1},
		{scim.UserResourceType, `userName sw "S" and userName ew "m"`, 1},
		{scim.UserResourceType, `userName eq "kelvin"`, 1},
		{scim.UserResourceType, `userName eq "KELVIN" or userName eq "sam"`, 2},
		{scim.UserResourceType, `userName eq "STRASSE"`, 0}, // simple folding: ß is not ss
		{scim.UserResourceType, `userName eq "STRAẞE"`, 1},
		{scim.UserResourceType, `userName eq "istanbul"`, 0},
		{scim.UserResourceType, `userName eq "İSTANBUL"`, 1},
		{scim.UserResourceType, `userName gt "s" and userName lt "t"`, 2},
		{scim.UserResourceType, `externalId eq "ſ1"`, 1},
		{scim.UserResourceType, `externalId eq "s1"`, 0}, // caseExact
		{scim.UserResourceType, `externalId eq "straße"`, 0},
		{scim.UserResourceType, `emails.value eq "οδυσσευς@ιθάκη.GR"`, 1},
		{scim.UserResourceType, `emails.value eq "SAM@X.COM"`, 1},
		{scim.UserResourceType, `emails[type eq "work"].value eq "k@x.com"`, 1},
		{scim.UserResourceType, `emails.value eq "k@x.com" and userName sw "k"`, 1},
		{scim.GroupResourceType, `displayName eq "ωmega"`, 1},
		{scim.GroupResourceType, `displayName eq "Ωmega2"`, 1},
		{scim.GroupResourceType, `displayName sw "ω"`, 2},
		{scim.GroupResourceType, `externalId eq "Ω"`, 0},
		{scim.GroupResourceType, `externalId eq "ω"`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := scim.ParseFilter(tt.rt, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			page, err := s.List(ctx, "acme", tt.rt, scim.Query{Filter: f, StartIndex: 1, Count: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Stored) > 0 {
				t.Fatal("stored resources, unasked")
			}
			stored, err := s.List(ctx, "acme", tt.rt, scim.Query{Filter: f, StartIndex: 1, Count: 100, Stored: true})
			if err != nil {
				t.Fatal(err)
			}
			exact := tt.rt == scim.UserResourceType && (strings.HasPrefix(tt.filter, "userName eq") || strings.HasPrefix(tt.filter, "externalId eq")) && !strings.Contains(tt.filter, " and ") && !strings.Contains(tt.filter, " or ")
			if (stored.Stored != nil) != exact || len(stored.Stored) > 0 && len(stored.Resources) > 0 {
				t.Errorf("%d stored and %d decoded resources; stored expected: %v", len(stored.Stored), len(stored.Resources), exact)
			}
			var storedIDs []string
			for _, r := range stored.Resources {
				storedIDs = append(storedIDs, r.ID())
			}
			for _, r := range stored.Stored {
				storedIDs = append(storedIDs, r.ID)
			}
			// The reference answer: every resource, filtered one by one.
			all, err := s.List(ctx, "acme", tt.rt, scim.Query{StartIndex: 1, Count: 1000})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, r := range all.Resources {
				if tt.rt == scim.GroupResourceType && f.References("members") {
					members, _ := s.Members(ctx, "acme", r.ID(), "", "", 0)
					var list []any
					for _, m := range members {
						list = append(list, map[string]any{"value": m.Value})
					}
					if list != nil {
						r.Attrs["members"] = list
					}
				}
				if f.Match(r) {
					want = append(want, r.ID())
				}
			}
			var got []string
			for _, r := range page.Resources {
				got = append(got, r.ID())
			}
			if page.Total != tt.want || len(want) != tt.want || strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("total %d, got %v; scan gives %v; want %d", page.Total, got, want, tt.want)
			}
			if stored.Total != tt.want || strings.Join(storedIDs, ",") != strings.Join(want, ",") {
				t.Errorf("stored: total %d, got %v; scan gives %v", stored.Total, storedIDs, want)
			}
		})
	}
	_ = g
}

// TestStoredUsersAreInAppendJSONsForm: the users a list hands over as
// stored are in the form scim's copy takes (appendJSON's own), whatever
// wrote them: a create with both extensions, Entra's PATCHes, a
// membership; so the copy, not the decoding it falls back to, answers
// them. And a page of stored users is the page of decoded ones, at every
// start and count.
func TestStoredUsersAreInAppendJSONsForm(t *testing.T) {
	s, _, _ := openStore(t)
	var ids []string
	for i := range 4 {
		ids = append(ids, create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d@x.com","externalId":"shared","active":true,"name":{"givenName":"U","familyName":"%d"},
			"emails":[{"value":"u%d@x.com","type":"work","primary":true}],
			"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"R&D","manager":{"value":"m"}},
			"urn:example:custom:2.0:User":{"z":[1,{"b":true,"a":null}],"a":"x"}`, i, i, i))).ID())
	}
	mustPatch(t, s, "acme", scim.UserResourceType, ids[1], `{"op":"replace","value":{"active":false,"displayName":"Ü \u2028 \"q\""}},
		{"op":"add","path":"phoneNumbers[type eq \"work\"].value","value":"+1 555"},
		{"op":"replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"Sales"}`)
	g := create(t, s, "acme", group(t, `"displayName":"G"`))
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), fmt.Sprintf(`{"op":"add","path":"members","value":[{"value":%q},{"value":%q}]}`, ids[1], ids[2]))
	f, err := scim.ParseFilter(scim.UserResourceType, `externalId eq "shared"`)
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []int{0, 1, 2, 4, 5} {
		for _, count := range []int{0, 1, 3, 100} {
			q := scim.Query{Filter: f, StartIndex: start, Count: count}
			plain, err := s.List(ctx, "acme", scim.UserResourceType, q)
			if err != nil {
				t.Fatal(err)
			}
			q.Stored = true
			stored, err := s.List(ctx, "acme", scim.UserResourceType, q)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Total != 4 || plain.Total != 4 || len(stored.Stored) != len(plain.Resources) || stored.Resources != nil {
				t.Fatalf("start %d count %d: total %d, %d stored, %d decoded; want total 4 and %d stored", start, count, stored.Total, len(stored.Stored), len(stored.Resources), len(plain.Resources))
			}
			for i, sr := range stored.Stored {
				res, err := sr.Resource()
				if err != nil {
					t.Fatal(err)
				}
				if got, want := string(res.AppendJSON(nil)), string(plain.Resources[i].AppendJSON(nil)); got != want {
					t.Errorf("start %d count %d: stored\n%s\ndecoded\n%s", start, count, got, want)
				}
				delete(res.Attrs, "groups")
				if again := res.AppendJSON(nil); string(again) != string(sr.JSON) {
					t.Errorf("%s is stored as\n%s\nnot as appendJSON writes it\n%s", sr.ID, sr.JSON, again)
				}
			}
		}
	}
	// Sorted, even with count 0, it is the decoded path and its limit.
	_, err = s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, SortBy: &scim.AttrPath{Name: "userName"}, SortLimit: 3, Stored: true})
	wantErr(t, err, scim.ErrTooMany, "more than 3")
}

func TestPagingAndSorting(t *testing.T) {
	s, _, _ := openStore(t)
	var ids []string
	for i := 0; i < 25; i++ {
		ids = append(ids, create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%02d","title":"%c"`, i, 'z'-i%26))).ID())
	}
	create(t, s, "acme", user(t, `"userName":"untitled"`))
	for start := 1; start <= 27; start += 10 {
		page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: start, Count: 10})
		if err != nil {
			t.Fatal(err)
		}
		if page.Total != 26 {
			t.Fatalf("total %d", page.Total)
		}
		for i, r := range page.Resources {
			if want := start - 1 + i; want < 25 && r.ID() != ids[want] {
				t.Fatalf("page at %d item %d is %s, want %s (creation order)", start, i, r.ID(), ids[want])
			}
		}
	}
	if page, _ := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1, Count: 0}); page.Total != 26 || len(page.Resources) != 0 {
		t.Fatalf("count 0: %d %d", page.Total, len(page.Resources))
	}
	title, _ := scim.UserResourceType.ParsePath("title")
	f, _ := scim.ParseFilter(scim.UserResourceType, `userName sw "u"`)
	page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 30, SortBy: &title})
	if err != nil {
		t.Fatal(err)
	}
	if first, last := page.Resources[0].String("title"), page.Resources[len(page.Resources)-1]; first != "b" || last.String("userName") != "untitled" {
		t.Fatalf("sorted by title: first %q, last %q (no title sorts last)", first, last.String("userName"))
	}
	page, _ = s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 2, SortBy: &title, Descending: true})
	if first, second := page.Resources[0], page.Resources[1].String("title"); first.String("userName") != "untitled" || second != "z" {
		t.Fatalf("descending: first %q, then title %q (no title sorts first, RFC 7644 §3.4.2.3)", first.String("userName"), second)
	}
}

func TestMemberships(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann","displayName":"Ann Lee"`))
	bob := create(t, s, "acme", user(t, `"userName":"bob"`))
	other := create(t, s, "globex", user(t, `"userName":"carl"`))
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"Sales","members":[{"value":%q}]`, ann.ID())))
	gid := g.ID()
	add := func(id string) string { return fmt.Sprintf(`{"op":"add","path":"members","value":[{"value":%q}]}`, id) }
	mustPatch(t, s, "acme", scim.GroupResourceType, gid, add(bob.ID())+","+add(ann.ID())) // ann already in: no change
	_, err := patch(t, s, "acme", scim.GroupResourceType, gid, add(other.ID()))
	wantErr(t, err, scim.ErrInvalidValue, "not the id of a User or Group in this tenant")
	_, err = patch(t, s, "acme", scim.GroupResourceType, gid, add(gid))
	wantErr(t, err, scim.ErrInvalidValue, "member of itself")
	members, err := s.Members(ctx, "acme", gid, "", "", 10)
	if err != nil || len(members) != 2 || members[0].Value != ann.ID() || members[0].Display != "Ann Lee" || members[0].Type != "User" || members[1].Display != "bob" {
		t.Fatalf("members %+v %v", members, err)
	}
	if page, _ := s.Members(ctx, "acme", gid, "", ann.ID(), 10); len(page) != 1 || page[0].Value != bob.ID() {
		t.Fatalf("members after ann: %+v", page)
	}
	u, _ := s.Get(ctx, "acme", scim.UserResourceType, ann.ID())
	if groups, _ := u.Attrs["groups"].([]any); len(groups) != 1 || groups[0].(map[string]any)["value"] != gid || groups[0].(map[string]any)["display"] != "Sales" {
		t.Fatalf("ann's groups: %v", u.Attrs["groups"])
	}
	// Deleting a user removes its memberships, each with an event.
	if err := del(s, "acme", scim.UserResourceType, ann.ID(), ""); err != nil {
		t.Fatal(err)
	}
	if members, _ := s.Members(ctx, "acme", gid, "", "", 10); len(members) != 1 || members[0].Value != bob.ID() {
		t.Fatalf("members after deleting ann: %+v", members)
	}
	gr, _ := s.Get(ctx, "acme", scim.GroupResourceType, gid)
	if gr.Meta().Version != `W/"3"` {
		t.Errorf("group version %s after an add and a removal, want W/\"3\"", gr.Meta().Version)
	}
	mustPatch(t, s, "acme", scim.GroupResourceType, gid, `{"op":"remove","path":"members"}`)
	if err := del(s, "acme", scim.GroupResourceType, gid, ""); err != nil {
		t.Fatal(err)
	}
	evs := outbox(t, s)
	var groupEvents []seen
	for _, e := range evs {
		if e.subject == "Groups/"+gid {
			groupEvents = append(groupEvents, e)
		}
	}
	if got := actionsOf(groupEvents); got != "group.created group.member_added group.member_added group.member_removed group.member_removed group.deleted" {
		t.Fatalf("group events: %s", got)
	}
	for i, e := range groupEvents {
		if e.subjectSeq != uint64(i+1) {
			t.Errorf("group event %d has subjectseq %d; want gapless", i, e.subjectSeq)
		}
	}
	if m := groupEvents[1].data.Member; m == nil || m.Value != ann.ID() || m.Display != "Ann Lee" || m.Type != "User" {
		t.Errorf("member_added payload: %+v", m)
	}
	if strings.Contains(string(groupEvents[0].data.Resource), "members") {
		t.Errorf("group events must not carry members: %s", groupEvents[0].data.Resource)
	}
	// user.deleted comes after the member_removed it caused.
	var order []string
	for _, e := range evs {
		if e.subject == "Users/"+ann.ID() || (e.action == events.GroupMemberRemoved && e.data.Member.Value == ann.ID()) {
			order = append(order, string(e.action))
		}
	}
	if strings.Join(order, " ") != "user.created group.member_removed user.deleted" {
		t.Errorf("deleting a user: %v", order)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].data.Tenant == "acme" && evs[i-1].data.Tenant == "acme" && evs[i].seq <= evs[i-1].seq {
			t.Fatalf("sequence not increasing: %d after %d", evs[i].seq, evs[i-1].seq)
		}
	}
}

// TestRenamedMemberKeepsNoOldName checks that a group shows its members by
// their current names: renaming a user or a nested group updates its entry
// in every group it is in, and leaves the groups' versions and events alone.
func TestRenamedMemberKeepsNoOldName(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann","displayName":"Ann Lee"`))
	bob := create(t, s, "acme", user(t, `"userName":"bob"`))
	inner := create(t, s, "acme", group(t, `"displayName":"Inner"`))
	var gids []string
	for _, name := range []string{"Sales", "Leads"} {
		g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":%q,"members":[{"value":%q},{"value":%q},{"value":%q}]`, name, ann.ID(), bob.ID(), inner.ID())))
		gids = append(gids, g.ID())
	}
	before := len(outbox(t, s))
	mustPatch(t, s, "acme", scim.UserResourceType, ann.ID(), `{"op":"replace","path":"displayName","value":"Ann Smith"}`)
	mustPatch(t, s, "acme", scim.UserResourceType, bob.ID(), `{"op":"replace","path":"userName","value":"robert"}`)
	mustPatch(t, s, "acme", scim.GroupResourceType, inner.ID(), `{"op":"replace","path":"displayName","value":"Core"}`)
	want := map[string]string{ann.ID(): "Ann Smith", bob.ID(): "robert", inner.ID(): "Core"}
	for _, gid := range gids {
		members, err := s.Members(ctx, "acme", gid, "", "", 10)
		if err != nil || len(members) != 3 {
			t.Fatalf("members of %s: %+v %v", gid, members, err)
		}
		for _, m := range members {
			if m.Display != want[m.Value] {
				t.Errorf("group %s shows member %s as %q, want %q", gid, m.Value, m.Display, want[m.Value])
			}
		}
		if g, _ := s.Get(ctx, "acme", scim.GroupResourceType, gid); g.Meta().Version != `W/"1"` {
			t.Errorf("group %s has version %s after its members were renamed, want W/\"1\"", gid, g.Meta().Version)
		}
	}
	if got := actionsOf(outbox(t, s)[before:]); got != "user.updated user.updated group.updated" {
		t.Errorf("renames emitted %s, want one update each", got)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "scimrelay.db")
	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	u := create(t, s, "acme", user(t, `"userName":"ann"`))
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, u.ID())))
	secret, _, err := s.Tokens().Create(ctx, "acme", "ci", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// A second process on the same file fails fast with a clear error.
	start := time.Now()
	if _, err := Open(path, testOptions(c)); !errors.Is(err, ErrInUse) || time.Since(start) > 5*time.Second {
		t.Fatalf("second Open: %v after %s", err, time.Since(start))
	}
	before := outbox(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Get(ctx, "acme", scim.UserResourceType, u.ID()); err != nil || got.Attrs["groups"] == nil {
		t.Fatalf("user after restart: %v %v", got, err)
	}
	if m, _ := s.Members(ctx, "acme", g.ID(), "", "", 10); len(m) != 1 {
		t.Fatalf("members after restart: %v", m)
	}
	if err := s.Authenticate(ctx, "acme", secret); err != nil {
		t.Fatalf("token after restart: %v", err)
	}
	after := outbox(t, s)
	if len(after) != len(before) || len(after) != 3 {
		t.Fatalf("outbox had %d rows, has %d after restart", len(before), len(after))
	}
	// Counters continue where they were.
	mustPatch(t, s, "acme", scim.UserResourceType, u.ID(), `{"op":"add","path":"title","value":"x"}`)
	last := outbox(t, s)[3]
	if last.seq != 4 || last.subjectSeq != 2 {
		t.Fatalf("after restart: seq %d subjectseq %d, want 4 and 2", last.seq, last.subjectSeq)
	}
	if _, err := s.Create(ctx, "acme", user(t, `"userName":"ANN"`)); !errors.Is(err, scim.ErrUniqueness) {
		t.Fatalf("index lost in restart: %v", err)
	}
}

func TestOutboxDelete(t *testing.T) {
	s, _, _ := openStore(t)
	for i := 0; i < 5; i++ {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	select {
	case <-s.OutboxReady():
	default:
		t.Fatal("OutboxReady not signalled after commits")
	}
	rows, _ := s.ReadOutbox(0, 3)
	if len(rows) != 3 || rows[0].Key != 1 || rows[2].Key != 3 {
		t.Fatalf("ReadOutbox(0, 3): %d rows", len(rows))
	}
	if err := s.DeleteOutbox([]uint64{rows[0].Key, rows[1].Key}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OutboxDepth(); n != 3 {
		t.Fatalf("depth %d, want 3", n)
	}
	if rows, _ := s.ReadOutbox(0, 10); rows[0].Key != 3 {
		t.Fatalf("first remaining row %d", rows[0].Key)
	}
}

// TestWriteResultEventIDs: every write reports the ids of the events it
// committed, in commit order, and a write that changes nothing reports none.
func TestWriteResultEventIDs(t *testing.T) {
	s, _, _ := openStore(t)
	var reported []string
	u, err := s.Create(ctx, "acme", user(t, `"userName":"ann"`))
	if err != nil {
		t.Fatal(err)
	}
	reported = append(reported, u.EventIDs...)
	g, err := s.Create(ctx, "acme", group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, u.Resource.ID())))
	if err != nil {
		t.Fatal(err)
	}
	reported = append(reported, g.EventIDs...)
	noop, err := s.Update(ctx, "acme", scim.UserResourceType, u.Resource.ID(), func(cur *scim.Resource) (*scim.Update, error) {
		return &scim.Update{Resource: cur}, nil
	})
	if err != nil || len(noop.EventIDs) != 0 {
		t.Fatalf("no-op update reported %v (%v)", noop.EventIDs, err)
	}
	d, err := s.Delete(ctx, "acme", scim.UserResourceType, u.Resource.ID(), scim.Precondition{})
	if err != nil || d.Resource != nil {
		t.Fatalf("delete: %+v %v", d, err)
	}
	reported = append(reported, d.EventIDs...)
	rows, _ := s.ReadOutbox(0, 10)
	var want []string
	for _, r := range rows {
		want = append(want, rowEvent(t, r).ID())
	}
	// user.created; group.created, member_added; member_removed, user.deleted
	if strings.Join(reported, ",") != strings.Join(want, ",") || len(reported) != 5 {
		t.Fatalf("reported %v, outbox %v", reported, want)
	}
}

// TestConcurrentCreatesOfOneUserName: Entra sends requests in parallel;
// exactly one of twenty creates of one userName wins.
func TestConcurrentCreatesOfOneUserName(t *testing.T) {
	s, _, _ := openStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		r := user(t, `"userName":"same@x.com"`) // on the test goroutine: user may call t.Fatal
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Create(ctx, "acme", r)
		}()
	}
	wg.Wait()
	ok, conflicts := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, scim.ErrUniqueness):
			conflicts++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 || conflicts != 19 {
		t.Fatalf("%d created, %d conflicts; want 1 and 19", ok, conflicts)
	}
	if n := len(outbox(t, s)); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

func TestConcurrentMemberAdditions(t *testing.T) {
	s, _, _ := openStore(t)
	g := create(t, s, "acme", group(t, `"displayName":"g"`))
	var ids []string
	for i := 0; i < 200; i++ {
		ids = append(ids, create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i))).ID())
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Not patch, which calls t.Fatal: this is not the test's goroutine.
			p, err := scim.ParsePatch(scim.GroupResourceType, []byte(`{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[`+fmt.Sprintf(`{"op":"Add","path":"members","value":[{"value":%q}]}`, id)+`]}`))
			if err != nil {
				t.Errorf("ParsePatch: %v", err)
				return
			}
			if _, err := s.Update(ctx, "acme", scim.GroupResourceType, g.ID(), func(cur *scim.Resource) (*scim.Update, error) { return p.Apply(cur) }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	members, err := s.Members(ctx, "acme", g.ID(), "", "", 0)
	if err != nil || len(members) != 200 {
		t.Fatalf("%d members (%v), want 200", len(members), err)
	}
	got, _ := s.Get(ctx, "acme", scim.GroupResourceType, g.ID())
	if got.Meta().Version != `W/"201"` {
		t.Fatalf("version %s, want W/\"201\"", got.Meta().Version)
	}
}

// TestLargeGroup builds a 100,000-member group and changes one member: the
// change costs what it costs on a 10-member group, and touches nothing else.
func TestLargeGroup(t *testing.T) {
	s := openFastStore(t)
	g, ids := buildGroup(t, s, 100_000)
	small, _ := buildGroup(t, s, 10)
	m := mark(t, s)
	addRemove := func(gid string) time.Duration {
		best := time.Hour
		for i := 0; i < 5; i++ {
			u := create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"newcomer-%s-%d"`, gid, i)))
			start := time.Now()
			mustPatch(t, s, "acme", scim.GroupResourceType, gid, fmt.Sprintf(`{"op":"add","path":"members","value":[{"value":%q}]}`, u.ID()))
			mustPatch(t, s, "acme", scim.GroupResourceType, gid, fmt.Sprintf(`{"op":"remove","path":"members[value eq \"%s\"]"}`, u.ID()))
			best = min(best, time.Since(start))
		}
		return best
	}
	small10, large := addRemove(small.ID()), addRemove(g.ID())
	// Reading every member would cost hundreds of times more; 10x leaves
	// room for a noisy machine.
	if large > 10*small10+5*time.Millisecond {
		t.Errorf("one-member add and remove: %s on 100,000 members, %s on 10", large, small10)
	}
	var got []string
	for _, e := range eventsAfter(t, s, m) {
		if e.subject == "Groups/"+g.ID() {
			got = append(got, string(e.action))
			if !strings.HasPrefix(e.data.Member.UserName, "newcomer-") {
				t.Fatalf("a member event on the large group does not say who: %+v", e.data.Member)
			}
		}
	}
	if want := strings.Repeat("group.member_added group.member_removed ", 5); strings.Join(got, " ")+" " != want {
		t.Fatalf("events on the large group: %v", got)
	}
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), fmt.Sprintf(`{"op":"remove","path":"members[value eq \"%s\"]"}`, ids[500]))
	count := 0
	after := ""
	for {
		page, err := s.Members(ctx, "acme", g.ID(), "", after, 10_000)
		if err != nil {
			t.Fatal(err)
		}
		count += len(page)
		if len(page) < 10_000 {
			break
		}
		after = page[len(page)-1].Value
	}
	if count != 100_000-1 {
		t.Fatalf("%d members, want 99,999", count)
	}
	f, _ := scim.ParseFilter(scim.GroupResourceType, fmt.Sprintf(`members.value eq %q`, ids[7]))
	if page, _ := s.List(ctx, "acme", scim.GroupResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 10}); page.Total != 1 || page.Resources[0].ID() != g.ID() {
		t.Fatalf("group by member: %d", page.Total)
	}
	// A filter that names a member reads that membership alone: it
	// allocates what it allocates on a group of 10 (README, Filters).
	smallIDs, _ := s.Members(ctx, "acme", small.ID(), "", "", 1)
	filters := map[string]func(gid, member string) string{
		"id eq G and members eq U": func(gid, member string) string { return fmt.Sprintf(`id eq %q and members eq %q`, gid, member) },
		"members eq U":             func(_, member string) string { return fmt.Sprintf(`members eq %q`, member) },
		"members[value eq U]":      func(_, member string) string { return fmt.Sprintf(`members[value eq %q]`, member) },
	}
	for name, filter := range filters {
		allocs := func(gid, member string) float64 {
			f, err := scim.ParseFilter(scim.GroupResourceType, filter(gid, member))
			if err != nil {
				t.Fatal(err)
			}
			return testing.AllocsPerRun(5, func() {
				if page, err := s.List(ctx, "acme", scim.GroupResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 10}); err != nil || page.Total != 1 || page.Resources[0].ID() != gid {
					t.Fatalf("%s: %d, %v", name, page.Total, err)
				}
			})
		}
		if onLarge, onSmall := allocs(g.ID(), ids[7]), allocs(small.ID(), smallIDs[0].Value); onLarge > 2*onSmall {
			t.Errorf("%s: %.0f allocations on 100,000 members, %.0f on 10", name, onLarge, onSmall)
		}
	}
	// The same from the user's side: a filter on a user's groups that names
	// the group reads that membership alone.
	userAllocs := func(filter string) float64 {
		f, err := scim.ParseFilter(scim.UserResourceType, filter)
		if err != nil {
			t.Fatal(err)
		}
		return testing.AllocsPerRun(5, func() {
			if page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 10}); err != nil || page.Total != 1 {
				t.Fatalf("%s: %d, %v", filter, page.Total, err)
			}
		})
	}
	for _, form := range []string{`id eq %q and groups eq %q`, `id eq %q and groups[value eq %q]`} {
		onLarge := userAllocs(fmt.Sprintf(form, ids[7], g.ID()))
		onSmall := userAllocs(fmt.Sprintf(form, smallIDs[0].Value, small.ID()))
		if onLarge > 2*onSmall {
			t.Errorf("%s: %.0f allocations in a group of 100,000, %.0f in one of 10", form, onLarge, onSmall)
		}
	}
	if u, _ := s.Get(ctx, "acme", scim.UserResourceType, ids[500]); u.Attrs["groups"] != nil {
		t.Fatalf("removed member still lists %v", u.Attrs["groups"])
	}
	// Deleting the group emits group.deleted alone, and frees every key.
	m = mark(t, s)
	if err := del(s, "acme", scim.GroupResourceType, g.ID(), ""); err != nil {
		t.Fatal(err)
	}
	if got := actionsOf(eventsAfter(t, s, m)); got != "group.deleted" {
		t.Fatalf("deleting the large group emitted %s", got)
	}
	if u, _ := s.Get(ctx, "acme", scim.UserResourceType, ids[7]); u.Attrs["groups"] != nil {
		t.Fatalf("member of a deleted group still lists %v", u.Attrs["groups"])
	}
}

// openFastStore opens a store without fsync, for tests that build large
// data sets and are about what the data does, not about durability.
func openFastStore(t testing.TB) *Store {
	t.Helper()
	o := testOptions(&clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)})
	o.NoSync = true
	o.BatchDelay = 5 * time.Millisecond
	s, err := Open(filepath.Join(t.TempDir(), "scimrelay.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// bulkUsers writes n users of tenant acme straight into the file, many to
// a transaction and without their user.created events, and returns their
// ids in creation order: a fast way to a large tenant for the tests and
// benchmarks of what comes after.
func bulkUsers(t testing.TB, s *Store, n int) []string {
	t.Helper()
	prefix := uuid.NewString()[:8]
	return bulkUsersLike(t, s, n, func(i int) *scim.Resource {
		return &scim.Resource{Type: scim.UserResourceType, Attrs: map[string]any{"userName": fmt.Sprintf("bulk-%s-%06d@x.com", prefix, i)}}
	})
}

// bulkUsersLike is bulkUsers of the users made by like(i), given an id.
func bulkUsersLike(t testing.TB, s *Store, n int, like func(i int) *scim.Resource) []string {
	t.Helper()
	ids := make([]string, n)
	now := s.now()
	for start := 0; start < n; start += 20_000 {
		err := s.commits.do(func(tx *bolt.Tx) error {
			tb := tx.Bucket(bucketTenants).Bucket([]byte("acme"))
			for i := start; i < min(start+20_000, n); i++ {
				id := uuid.Must(uuid.NewV7()).String()
				rec := &record{version: 1, res: like(i)}
				rec.res.Attrs["id"] = id
				rec.res.SetMeta(scim.Meta{Created: now, LastModified: now, Version: versionTag(1)})
				entries, err := indexEntries(rec.res)
				if err != nil {
					return err
				}
				if err := reindex(tb, nil, entries); err != nil {
					return err
				}
				if err := putRecord(tb, rec); err != nil {
					return err
				}
				ids[i] = id
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// buildGroup creates n users and a group holding them. The memberships are
// written as keys directly, without the member_added events a real build
// would emit: the tests that use it are about what a large group costs.
func buildGroup(t testing.TB, s *Store, n int) (*scim.Resource, []string) {
	t.Helper()
	ids := bulkUsers(t, s, n)
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"big-%s"`, uuid.NewString())))
	for start := 0; start < n; start += 50_000 {
		err := s.commits.do(func(tx *bolt.Tx) error {
			tb := tx.Bucket(bucketTenants).Bucket([]byte("acme"))
			for _, id := range ids[start:min(start+50_000, n)] {
				if err := putMember(tb, g.ID(), events.Member{Value: id, Type: "User"}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return g, ids
}

func TestTokens(t *testing.T) {
	s, c, _ := openStore(t)
	// Static tokens from relay.yaml.
	if err := s.Authenticate(ctx, "acme", "acme-static-token-0123456789"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Authenticate(ctx, "globex", "acme-static-token-0123456789"), scim.ErrUnauthorized, "invalid bearer token")
	wantErr(t, s.Authenticate(ctx, "initech", "x"), scim.ErrNotFound, "no tenant")
	// Issued tokens.
	secret, tok, err := s.Tokens().Create(ctx, "globex", "entra", c.now().Add(90*24*time.Hour))
	if err != nil || !strings.HasPrefix(secret, TokenPrefix) || len(secret) < 50 || tok.Tenant != "globex" {
		t.Fatalf("CreateToken: %q %+v %v", secret, tok, err)
	}
	if err := s.Authenticate(ctx, "globex", secret); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Authenticate(ctx, "acme", secret), scim.ErrUnauthorized, "invalid bearer token")
	wantErr(t, s.Authenticate(ctx, "globex", secret[:len(secret)-1]+"x"), scim.ErrUnauthorized, "invalid bearer token")
	list, _ := s.Tokens().List(ctx, "globex")
	if len(list) != 1 || list[0].LastUsed.IsZero() {
		t.Fatalf("ListTokens: %+v", list)
	}
	// Expiry.
	c.add(91 * 24 * time.Hour)
	wantErr(t, s.Authenticate(ctx, "globex", secret), scim.ErrUnauthorized, "expired at")
	// Rotation with overlap: the old token keeps working for the overlap.
	old, _, _ := s.Tokens().Create(ctx, "globex", "old", time.Time{})
	fresh, _, rotated, err := s.Tokens().Rotate(ctx, "globex", "new", time.Time{}, 24*time.Hour)
	if err != nil || len(rotated) != 1 {
		t.Fatalf("RotateToken: %v %+v", err, rotated)
	}
	if err := s.Authenticate(ctx, "globex", old); err != nil {
		t.Fatalf("old token inside the overlap: %v", err)
	}
	c.add(25 * time.Hour)
	wantErr(t, s.Authenticate(ctx, "globex", old), scim.ErrUnauthorized, "expired")
	if err := s.Authenticate(ctx, "globex", fresh); err != nil {
		t.Fatal(err)
	}
	// Revocation.
	freshTok := tokenByName(t, s, "new")
	if _, _, err := s.Tokens().Revoke(ctx, freshTok.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Authenticate(ctx, "globex", fresh), scim.ErrUnauthorized, "was revoked")
	if _, _, err := s.Tokens().Revoke(ctx, "tok_nope"); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("revoking an unknown token: %v", err)
	}
	// EnsureToken: only when a tenant has no way in.
	if _, created, _ := s.EnsureToken(ctx, "acme", nil); created {
		t.Fatal("EnsureToken created a token for a tenant with a static one")
	}
	gen, created, err := s.EnsureToken(ctx, "safe", nil)
	if err != nil || !created || s.Authenticate(ctx, "safe", gen) != nil {
		t.Fatalf("EnsureToken for safe: %v %v", created, err)
	}
	if _, created, _ := s.EnsureToken(ctx, "safe", nil); created {
		t.Fatal("EnsureToken created a second token")
	}
	// Last-use times are written on flush and survive.
	if err := s.flushTokenUse(); err != nil {
		t.Fatal(err)
	}
	s.tokens.mu.RLock()
	pending := 0
	for _, u := range s.tokens.used {
		if u.at.Load() != 0 {
			pending++
		}
	}
	stored := s.tokens.byID[tokenByName(t, s, "generated").ID].LastUsed
	s.tokens.mu.RUnlock()
	if pending != 0 || stored.IsZero() {
		t.Fatalf("after flush: %d pending, stored last use %v", pending, stored)
	}
}

func tokenByName(t *testing.T, s *Store, name string) Token {
	t.Helper()
	list, _ := s.Tokens().List(ctx, "")
	for _, tok := range list {
		if tok.Name == name {
			return tok
		}
	}
	t.Fatalf("no token named %s", name)
	return Token{}
}

// TestOutboxOldest: the outbox's oldest row says when it was committed,
// and an empty outbox has none; scimrelay_outbox_oldest_age_seconds is
// its age, 0 when the outbox is empty.
func TestOutboxOldest(t *testing.T) {
	s, c, _ := openStore(t)
	reg := prometheus.NewRegistry()
	NewMetrics(reg, s, nil)
	age := func() float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "scimrelay_outbox_oldest_age_seconds" {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no scimrelay_outbox_oldest_age_seconds")
		return 0
	}
	if at, err := s.OutboxOldest(); err != nil || !at.IsZero() {
		t.Fatalf("empty outbox: %v, %v", at, err)
	}
	if a := age(); a != 0 {
		t.Fatalf("the age of an empty outbox is %v, want 0", a)
	}
	first := c.now()
	if _, err := s.Create(context.Background(), "acme", user(t, `"userName":"ann"`)); err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	if _, err := s.Create(context.Background(), "acme", user(t, `"userName":"bob"`)); err != nil {
		t.Fatal(err)
	}
	if at, err := s.OutboxOldest(); err != nil || !at.Equal(first) {
		t.Fatalf("oldest row committed at %v (%v), want %v", at, err, first)
	}
	if a := age(); a != 60 {
		t.Fatalf("the outbox's age a minute after its oldest row: %v s, want 60", a)
	}
	rows, err := s.ReadOutbox(0, 10)
	if err != nil || len(rows) != 2 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	if err := s.DeleteOutbox([]uint64{rows[0].Key}); err != nil {
		t.Fatal(err)
	}
	if at, err := s.OutboxOldest(); err != nil || !at.Equal(first.Add(time.Minute)) {
		t.Fatalf("after the first was published: %v (%v), want %v", at, err, first.Add(time.Minute))
	}
	if err := s.DeleteOutbox([]uint64{rows[1].Key}); err != nil {
		t.Fatal(err)
	}
	if a := age(); a != 0 {
		t.Fatalf("the age of the outbox emptied: %v, want 0", a)
	}
}

// TestIDsInCommitOrder: a create whose id was drawn before another
// create's, but which commits after it, gets a new id, so that lists in id
// order (no sortBy) only ever grow at their end and a client paging by
// startIndex while users are added misses none. What is made of the id
// (the record, the index entries, the event) is made of the new one.
func TestIDsInCommitOrder(t *testing.T) {
	s, c, _ := openStore(t)
	early := user(t, `"userName":"early","externalId":"e-early"`)
	drawn, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	early.Attrs["id"] = drawn.String()
	p, err := s.prepareCreate(s.tenantMap()["acme"], early, nil, c.now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Another create draws its id later and commits first.
	later := create(t, s, "acme", user(t, `"userName":"later"`))
	res, err := s.write(ctx, "acme", func(tx *bolt.Tx, w *txWrite) error { return w.create(tx, p) })
	if err != nil {
		t.Fatal(err)
	}
	id := res.Resource.ID()
	if id <= later.ID() {
		t.Fatalf("the create committed second has id %s, not after %s", id, later.ID())
	}
	if _, err := s.Get(ctx, "acme", scim.UserResourceType, drawn.String()); !errors.Is(err, scim.ErrNotFound) {
		t.Fatalf("the id drawn first names a user: %v", err)
	}
	if got, err := s.Get(ctx, "acme", scim.UserResourceType, id); err != nil || got.String("userName") != "early" {
		t.Fatalf("Get by the new id: %v, %v", got, err)
	}
	for _, f := range []string{`userName eq "early"`, `externalId eq "e-early"`} {
		q := scim.Query{StartIndex: 1, Count: 10, Filter: mustParseFilter(t, scim.UserResourceType, f)}
		page, err := s.List(ctx, "acme", scim.UserResourceType, q)
		if err != nil || page.Total != 1 || page.Resources[0].ID() != id {
			t.Fatalf("%s: %+v, %v; want the user under its new id", f, page, err)
		}
	}
	page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1, Count: 10})
	if err != nil || page.Total != 2 || page.Resources[0].ID() != later.ID() || page.Resources[1].ID() != id {
		t.Fatalf("the list is not in commit order: %+v, %v", page, err)
	}
	evs := outbox(t, s)
	if last := evs[len(evs)-1]; last.action != events.UserCreated || last.data.ID != id || !strings.HasSuffix(last.subject, id) {
		t.Fatalf("the created event names %s (%s), want %s", last.data.ID, last.subject, id)
	}
}

// TestCreateCheckedAgainstTheTenantAsItIsAtCommit: a create's required
// attributes are checked as it is prepared, before it waits for the
// committer; when the tenant is reloaded meanwhile, they are checked again
// against the tenant as it is at commit, as its uniqueness is, so that no
// user is stored that the tenant now refuses.
func TestCreateCheckedAgainstTheTenantAsItIsAtCommit(t *testing.T) {
	s, c, _ := openStore(t)
	res := user(t, `"userName":"noemail"`)
	res.Attrs["id"] = "u-noemail"
	p, err := s.prepareCreate(s.tenantMap()["acme"], res, nil, c.now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// acme is reloaded to require emails before the create commits.
	opts := testOptions(c).Tenants
	opts[0].Unique, opts[0].Required = "email", []string{"emails"}
	if err := s.SetTenants(opts); err != nil {
		t.Fatal(err)
	}
	_, err = s.write(ctx, "acme", func(tx *bolt.Tx, w *txWrite) error { return w.create(tx, p) })
	if err == nil || !strings.Contains(err.Error(), "emails is required") {
		t.Fatalf("a create prepared before acme required emails, committed after: %v", err)
	}
	if _, err := s.Get(ctx, "acme", scim.UserResourceType, "u-noemail"); err == nil {
		t.Fatal("the user was stored")
	}
}

// TestMemberEventsCarryTheGroupWithoutItsExtensions: a member event names
// its group by its core attributes (id, externalId, displayName, meta),
// not its extensions, which group.created and group.updated carry: one
// event per member, each with a copy of an extension of any size, let a
// PATCH of a few KiB write hundreds of MiB.
func TestMemberEventsCarryTheGroupWithoutItsExtensions(t *testing.T) {
	s, _, _ := openStore(t)
	const ext = "urn:ietf:params:scim:schemas:extension:Custom:2.0:Group"
	ann := create(t, s, "acme", user(t, `"userName":"ann"`))
	bob := create(t, s, "acme", user(t, `"userName":"bob"`))
	g, err := scim.ParseResource(scim.GroupResourceType, []byte(`{"schemas":["`+scim.GroupSchema+`","`+ext+`"],"displayName":"g","externalId":"eg",
		"`+ext+`":{"costCenter":"`+strings.Repeat("c", 1000)+`"},"members":[{"value":"`+ann.ID()+`"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	gid := create(t, s, "acme", g).ID()
	mustPatch(t, s, "acme", scim.GroupResourceType, gid, `{"op":"add","path":"members","value":[{"value":"`+bob.ID()+`"}]}`)
	mustPatch(t, s, "acme", scim.GroupResourceType, gid, `{"op":"replace","path":"displayName","value":"h"}`)
	if err := del(s, "acme", scim.UserResourceType, ann.ID(), ""); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range outbox(t, s) {
		if e.data.ResourceType != "Group" {
			continue
		}
		var res map[string]any
		if err := json.Unmarshal(e.data.Resource, &res); err != nil {
			t.Fatal(err)
		}
		_, extended := res[ext]
		got = append(got, fmt.Sprintf("%s %v %v %v %v", e.action, res["displayName"], res["externalId"], res["id"] == gid, extended))
		if meta, _ := res["meta"].(map[string]any); meta["version"] == nil {
			t.Errorf("%s: the group has no meta.version: %v", e.action, res)
		}
	}
	want := []string{
		"group.created g eg true true",
		"group.member_added g eg true false", // ann, initial
		"group.member_added g eg true false", // bob
		"group.updated h eg true true",
		"group.member_removed h eg true false", // ann deleted
	}
	if !slices.Equal(got, want) {
		t.Fatalf("group events (action, displayName, externalId, id, extension):\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBoundedCollectorAnswersTheLastValues: a scrape of series read from
// the data file does not wait past its bound for a read that does not
// answer (behind a remap that waits for a backup): it answers the values
// read last, starts no second read while the first goes on, and answers
// the new values once the read ends.
func TestBoundedCollectorAnswersTheLastValues(t *testing.T) {
	var mu sync.Mutex
	value, reads := 1.0, 0
	stuck := make(chan struct{})
	close(stuck) // not stuck at first
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scimrelay_test_read"}, func() float64 {
		mu.Lock()
		reads++
		wait := stuck
		mu.Unlock()
		<-wait
		mu.Lock()
		defer mu.Unlock()
		return value
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(newBoundedCollector(collectors{g}, 50*time.Millisecond))
	scrape := func() []float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var vs []float64
		for _, f := range families {
			for _, m := range f.GetMetric() {
				vs = append(vs, m.GetGauge().GetValue())
			}
		}
		return vs
	}
	if got := scrape(); !slices.Equal(got, []float64{1}) {
		t.Fatalf("first scrape: %v, want [1]", got)
	}
	release := make(chan struct{})
	mu.Lock()
	stuck, value = release, 2
	mu.Unlock()
	for range 3 {
		if got := scrape(); !slices.Equal(got, []float64{1}) {
			t.Fatalf("scrape while the read does not answer: %v, want the last value, [1]", got)
		}
	}
	mu.Lock()
	if reads != 2 {
		t.Errorf("%d reads begun for four scrapes, one of them stuck; want 2", reads)
	}
	mu.Unlock()
	close(release)
	eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := scrape(); !slices.Equal(got, []float64{2}) {
			return fmt.Errorf("scrape once the read answered: %v, want [2]", got)
		}
		return nil
	})
}
