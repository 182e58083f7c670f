// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// checkEventOrder asserts what every outbox must satisfy: each tenant's
// sequence is 1, 2, 3 … in commit order, and each subject's subjectseq is
// 1, 2, 3 … with no gap.
func checkEventOrder(t testing.TB, evs []seen) {
	t.Helper()
	seq := map[string]uint64{}
	sseq := map[string]uint64{}
	for i, e := range evs {
		seq[e.data.Tenant]++
		if e.seq != seq[e.data.Tenant] {
			t.Fatalf("event %d (%s): sequence %d where %d was due in tenant %s", i, e.action, e.seq, seq[e.data.Tenant], e.data.Tenant)
		}
		key := e.data.Tenant + "/" + e.subject
		sseq[key]++
		if e.subjectSeq != sseq[key] {
			t.Fatalf("event %d (%s on %s): subjectseq %d where %d was due", i, e.action, e.subject, e.subjectSeq, sseq[key])
		}
	}
}

// since returns the events after the first n.
func since(t testing.TB, s *Store, n int) []seen {
	t.Helper()
	return outbox(t, s)[n:]
}

// mark returns the outbox key of the last event committed so far.
func mark(t testing.TB, s *Store) uint64 {
	t.Helper()
	var last uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketOutbox).Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return last
}

// eventsAfter returns the events committed after key, without decoding the
// earlier ones.
func eventsAfter(t testing.TB, s *Store, key uint64) []seen {
	t.Helper()
	rows, err := s.ReadOutbox(key, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]seen, len(rows))
	for i, r := range rows {
		e := rowEvent(t, r)
		eventstest.ValidateEvent(t, e) // every event the tests write matches the contract
		a, _ := events.ActionOf(e)
		seq, _ := events.Sequence(e)
		sseq, _ := events.SubjectSeq(e)
		d, err := events.DataOf(e)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = seen{a, e.Subject(), seq, sseq, d, e.Source()}
	}
	return out
}

// rowEvent decodes an outbox row's event as a subscriber would.
func rowEvent(t testing.TB, r OutboxRow) event.Event {
	t.Helper()
	e, err := r.Event()
	if err != nil {
		t.Fatal(err)
	}
	if e.ID() != r.ID {
		t.Fatalf("row %d: event %s, row id %s", r.Key, e.ID(), r.ID)
	}
	return e
}

func mustParseFilter(t testing.TB, rt *scim.ResourceType, f string) *scim.Filter {
	t.Helper()
	p, err := scim.ParseFilter(rt, f)
	if err != nil {
		t.Fatalf("filter %s: %v", f, err)
	}
	return p
}

func ids(list []*scim.Resource) []string {
	out := make([]string, len(list))
	for i, r := range list {
		out[i] = r.ID()
	}
	return out
}

// updateWith runs an Update whose function returns a fixed member operation list.
func updateMembers(t testing.TB, s *Store, tenant, gid string, ops ...scim.MemberOp) (*scim.Resource, error) {
	t.Helper()
	res, err := s.Update(ctx, tenant, scim.GroupResourceType, gid, func(cur *scim.Resource) (*scim.Update, error) {
		return &scim.Update{Resource: cur, Members: ops}, nil
	})
	return res.Resource, err
}

func members(values ...string) []scim.Member {
	out := make([]scim.Member, len(values))
	for i, v := range values {
		out[i] = scim.Member{Value: v}
	}
	return out
}

func TestOpenRefusesBadOptions(t *testing.T) {
	tests := []struct {
		name    string
		tenants []TenantOptions
		want    string
	}{
		{"bad name", []TenantOptions{{Name: "Acme Corp"}}, `tenants[0].name: must match [a-z0-9][a-z0-9_-]* (at most 64 characters), got "Acme Corp"`},
		{"empty name", []TenantOptions{{Name: ""}}, `tenants[0].name: must match`},
		{"twice", []TenantOptions{{Name: "acme"}, {Name: "acme"}}, `tenants[1].name: "acme" is also tenants[0]`},
		{"unique", []TenantOptions{{Name: "acme", Unique: "externalId"}}, `tenants[0].unique: must be userName or email, got "externalId"`},
		{"required unknown", []TenantOptions{{Name: "acme", Required: []string{"shoeSize"}}}, `tenants[0].required[0]: required attribute "shoeSize"`},
		{"required extension", []TenantOptions{{Name: "acme", Required: []string{scim.EnterpriseUserSchema}}}, "names a whole extension"},
		{"required read-only", []TenantOptions{{Name: "acme", Required: []string{"emails", "groups"}}}, `tenants[0].required[1]: required attribute "groups" is not one a client writes`},
		{"required password", []TenantOptions{{Name: "acme", Required: []string{"password"}}}, `"password" is not one a client writes and the relay keeps`},
		{"short token", []TenantOptions{{Name: "acme", StaticTokens: []string{"", "short"}}}, "tenants[0].tokens[1]: is 5 characters; a bearer token needs at least 20"},
		// Characters, not bytes: 11 of two bytes each are 11.
		{"short token of wide characters", []TenantOptions{{Name: "acme", StaticTokens: []string{"ééééééééééé"}}}, "tenants[0].tokens[0]: is 11 characters; a bearer token needs at least 20"},
		{"one token, two tenants", []TenantOptions{{Name: "acme", StaticTokens: []string{"shared-token-0123456789"}}, {Name: "globex", StaticTokens: []string{"globex-token-0123456789", " shared-token-0123456789\n"}}},
			"tenants[1].tokens[1]: is also a token of tenants[0]; each tenant needs tokens of its own"},
		{"every problem", []TenantOptions{{Name: "A"}, {Name: "b", Unique: "x"}}, "tenants[0].name: must match [a-z0-9][a-z0-9_-]* (at most 64 characters), got \"A\"\ntenants[1].unique: must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Tenants: tt.tenants}
			if err := o.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check: got %v, want it to contain %q", err, tt.want)
			}
			path := filepath.Join(t.TempDir(), "x.db")
			s, err := Open(path, o)
			if err == nil {
				s.Close()
				t.Fatal("Open accepted the options")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to contain %q", err, tt.want)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("Open created the file before refusing the options: %v", err)
			}
		})
	}
}

func TestOpenRefusesForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keyLayout, u64(1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "layout version 1; this build reads version 4") {
		t.Fatalf("Open of an old layout: %v", err)
	}
}

// TestSecondOpenFailsFast: a second process on the same file is refused
// within the lock timeout with an error saying why.
func TestSecondOpenFailsFast(t *testing.T) {
	s, c, path := openStore(t)
	_ = s
	start := time.Now()
	_, err := Open(path, testOptions(c))
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("second Open took %s", took)
	}
	if want := "data file " + path + " is in use by another scimrelay process"; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

func TestRequiredAttributes(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	s, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{Now: c.now, Tenants: []TenantOptions{{
		Name:     "strict",
		Required: []string{"emails", "Name.GivenName", scim.EnterpriseUserSchema + ":employeeNumber"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const full = `"userName":"ann","emails":[{"value":"a@x.com"}],"name":{"givenName":"Ann"},"` + scim.EnterpriseUserSchema + `":{"employeeNumber":"7"}`
	tests := []struct {
		name, body, want string
	}{
		{"no emails", `"userName":"ann","name":{"givenName":"Ann"},"` + scim.EnterpriseUserSchema + `":{"employeeNumber":"7"}`, "attribute emails is required in tenant strict"},
		{"no givenName", `"userName":"ann","emails":[{"value":"a@x.com"}],"name":{"familyName":"Lee"},"` + scim.EnterpriseUserSchema + `":{"employeeNumber":"7"}`, "attribute name.givenName is required in tenant strict"},
		{"no employeeNumber", `"userName":"ann","emails":[{"value":"a@x.com"}],"name":{"givenName":"Ann"}`, "attribute " + scim.EnterpriseUserSchema + ":employeeNumber is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Create(ctx, "strict", user(t, tt.body))
			wantErr(t, err, scim.ErrInvalidValue, tt.want)
		})
	}
	u := create(t, s, "strict", user(t, full))
	// A complex attribute without a value sub-attribute can be required:
	// a user with a name is taken, one whose name holds nothing is not.
	named, err := Open(filepath.Join(t.TempDir(), "named.db"), Options{Now: c.now, Tenants: []TenantOptions{{Name: "named", Required: []string{"name", "addresses"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	create(t, named, "named", user(t, `"userName":"bob","name":{"familyName":"Lee"},"addresses":[{"locality":"Oslo"}]`))
	_, err = named.Create(ctx, "named", user(t, `"userName":"cy","name":{"familyName":""},"addresses":[{"locality":"Oslo"}]`))
	wantErr(t, err, scim.ErrInvalidValue, "attribute name is required in tenant named")
	// Removing a required attribute is refused, and changes nothing: by
	// a PATCH with "mutability" (RFC 7644 §3.5.2.2), by a PUT leaving it
	// out with "invalidValue", as a POST.
	_, err = patch(t, s, "strict", scim.UserResourceType, u.ID(), `{"op":"remove","path":"name.givenName"}`)
	wantErr(t, err, scim.ErrMutability, "attribute name.givenName is required in tenant strict: a PATCH may not remove it")
	_, err = s.Update(ctx, "strict", scim.UserResourceType, u.ID(), func(cur *scim.Resource) (*scim.Update, error) {
		next := cur.Clone()
		next.Attrs["name"] = map[string]any{"familyName": "Lee"}
		return &scim.Update{Resource: next, Changes: scim.Diff(cur, next)}, nil
	})
	wantErr(t, err, scim.ErrInvalidValue, "attribute name.givenName is required in tenant strict")
	if got, _ := s.Get(ctx, "strict", scim.UserResourceType, u.ID()); got.Meta().Version != `W/"1"` {
		t.Fatalf("a refused update changed the version to %s", got.Meta().Version)
	}
	if n := len(outbox(t, s)); n != 1 {
		t.Fatalf("%d events, want only user.created", n)
	}
}

// TestEmailMode follows the SAFE guide: a tenant telling users apart by
// their work email.
func TestEmailMode(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{Tenants: []TenantOptions{{Name: "safe", Unique: "email"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Create(ctx, "safe", user(t, `"userName":"ann"`))
	wantErr(t, err, scim.ErrInvalidValue, "a User needs an email in tenant safe")
	// The work email is the one typed work, else the primary, else the first.
	a := create(t, s, "safe", user(t, `"userName":"ann","emails":[{"value":"home@x.com","type":"home"},{"value":"Ann@Work.com","type":"work"}]`))
	_, err = s.Create(ctx, "safe", user(t, `"userName":"other","emails":[{"value":"ANN@work.com","primary":true}]`))
	wantErr(t, err, scim.ErrUniqueness, `email "ANN@work.com" is already taken`)
	// A home email someone else has is no conflict; nor is a shared userName.
	b := create(t, s, "safe", user(t, `"userName":"ann","emails":[{"value":"bob@work.com","type":"work"},{"value":"home@x.com","type":"home"}]`))
	// Changing the work email into a taken one is refused.
	_, err = patch(t, s, "safe", scim.UserResourceType, b.ID(), `{"op":"replace","path":"emails[type eq \"work\"].value","value":"ann@WORK.com"}`)
	wantErr(t, err, scim.ErrUniqueness, "is already taken")
	// After the first user moves away, the email is free.
	mustPatch(t, s, "safe", scim.UserResourceType, a.ID(), `{"op":"replace","path":"emails[type eq \"work\"].value","value":"ann@new.com"}`)
	mustPatch(t, s, "safe", scim.UserResourceType, b.ID(), `{"op":"replace","path":"emails[type eq \"work\"].value","value":"ann@WORK.com"}`)
	page, err := s.List(ctx, "safe", scim.UserResourceType, scim.Query{Filter: mustParseFilter(t, scim.UserResourceType, `emails[type eq "work"].value eq "ann@work.com"`), StartIndex: 1, Count: 10})
	if err != nil || page.Total != 1 || page.Resources[0].ID() != b.ID() {
		t.Fatalf("lookup by work email: %+v %v", page, err)
	}
	_, err = patch(t, s, "safe", scim.UserResourceType, b.ID(), `{"op":"remove","path":"emails"}`)
	wantErr(t, err, scim.ErrMutability, "a User needs an email in tenant safe, which tells users apart by their work email: a PATCH may not remove it")
}

// TestUnicodeCaseFolding: the index and uniqueness agree with the filter's
// case-insensitive equality for letters outside ASCII too.
func TestUnicodeCaseFolding(t *testing.T) {
	s, _, _ := openStore(t)
	// U+212A KELVIN SIGN folds with k; U+017F LONG S with s; Σ, σ and ς are one class.
	create(t, s, "acme", user(t, `"userName":"kelvin@x.com"`))
	_, err := s.Create(ctx, "acme", user(t, "\"userName\":\"\u212Aelvin@x.com\""))
	wantErr(t, err, scim.ErrUniqueness, "is already taken")
	g := create(t, s, "acme", group(t, `"displayName":"ΣΟΦΙΑ"`))
	_, err = s.Create(ctx, "acme", group(t, `"displayName":"σοφια"`))
	wantErr(t, err, scim.ErrUniqueness, "displayName")
	for _, f := range []string{`displayName eq "ςοφια"`, `displayName eq "ΣΟΦΙΑ"`} {
		page, err := s.List(ctx, "acme", scim.GroupResourceType, scim.Query{Filter: mustParseFilter(t, scim.GroupResourceType, f), StartIndex: 1, Count: 10})
		if err != nil || page.Total != 1 || page.Resources[0].ID() != g.ID() {
			t.Fatalf("%s: %+v %v", f, page, err)
		}
	}
	page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: mustParseFilter(t, scim.UserResourceType, "userName eq \"KELVIN@X.COM\""), StartIndex: 1, Count: 10})
	if err != nil || page.Total != 1 {
		t.Fatalf("userName eq KELVIN: %+v %v", page, err)
	}
}

func TestLongValuesAreRefused(t *testing.T) {
	s, _, _ := openStore(t)
	long := strings.Repeat("a", maxIndexedValue+1)
	_, err := s.Create(ctx, "acme", user(t, `"userName":"`+long+`"`))
	wantErr(t, err, scim.ErrInvalidValue, "attribute userName is 2049 bytes long; the limit is 2048")
	_, err = s.Create(ctx, "acme", user(t, `"userName":"ann","externalId":"`+long+`"`))
	wantErr(t, err, scim.ErrInvalidValue, "attribute externalId is")
	// Looking a long value up finds nothing, and says so without an error.
	page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: mustParseFilter(t, scim.UserResourceType, `userName eq "`+strings.Repeat("b", 3000)+`"`), StartIndex: 1, Count: 10})
	if err != nil || page.Total != 0 {
		t.Fatalf("long lookup: %+v %v", page, err)
	}
}

// TestOddIDs: ids from the URL that this store never issued name nothing.
func TestOddIDs(t *testing.T) {
	s, _, _ := openStore(t)
	g := create(t, s, "acme", group(t, `"displayName":"g"`))
	for _, id := range []string{"", "\x00", g.ID() + "\x00", strings.Repeat("x", 40000)} {
		_, err := s.Get(ctx, "acme", scim.UserResourceType, id)
		wantErr(t, err, scim.ErrNotFound, "not found")
		_, err = s.Members(ctx, "acme", id, "", "", 10)
		wantErr(t, err, scim.ErrNotFound, "not found")
		wantErr(t, del(s, "acme", scim.GroupResourceType, id, ""), scim.ErrNotFound, "not found")
		_, err = updateMembers(t, s, "acme", g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: members(id + "x")})
		wantErr(t, err, scim.ErrInvalidValue, "is not the id of a User or Group")
	}
	_, err := s.Get(ctx, "acme", &scim.ResourceType{Name: "Widget"}, "x")
	if err == nil {
		t.Fatal("Get of an unstored resource type succeeded")
	}
}

// TestPublicURL: the public URL gives the resource inside each event a
// meta.location; what the Backend methods return has none (the SCIM
// handler sets it from the URL the client used), and nothing stored has one.
func TestPublicURL(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	o := testOptions(c)
	o.PublicURL = "https://relay.example.com/"
	s, err := Open(filepath.Join(t.TempDir(), "x.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := func(r *scim.Resource) string {
		return "https://relay.example.com/scim/v2/acme" + r.Type.Endpoint + "/" + r.ID()
	}
	u := create(t, s, "acme", user(t, `"userName":"ann"`))
	got, _ := s.Get(ctx, "acme", scim.UserResourceType, u.ID())
	p := mustPatch(t, s, "acme", scim.UserResourceType, u.ID(), `{"op":"add","path":"title","value":"x"}`)
	page, _ := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1, Count: 1})
	for name, r := range map[string]*scim.Resource{"Create": u, "Get": got, "Update": p, "List": page.Resources[0]} {
		if loc := r.Meta().Location; loc != "" {
			t.Errorf("%s returned meta.location %q; the handler sets it", name, loc)
		}
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTenants).Bucket([]byte("acme")).Bucket(bucketUsers).Get([]byte(u.ID()))
		if strings.Contains(string(v), "location") {
			return fmt.Errorf("stored record has a location: %s", v[recordHeader:])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	evs := outbox(t, s)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	for _, e := range evs {
		if e.source != "https://relay.example.com/scim/v2/acme" {
			t.Fatalf("event %s: source %q, want the absolute URI", e.action, e.source)
		}
		var r struct {
			Meta struct{ Location string } `json:"meta"`
		}
		if err := json.Unmarshal(e.data.Resource, &r); err != nil || r.Meta.Location != want(u) {
			t.Fatalf("event %s: location %q (%v)", e.action, r.Meta.Location, err)
		}
	}
}

// TestEventPayloads checks the events of each operation: actions, order,
// counters and payloads.
func TestEventPayloads(t *testing.T) {
	s, c, _ := openStore(t)
	u := create(t, s, "acme", user(t, `"userName":"ann","externalId":"e1","name":{"givenName":"Ann"}`))
	c.add(time.Second)
	mustPatch(t, s, "acme", scim.UserResourceType, u.ID(), `{"op":"add","path":"title","value":"Boss"},{"op":"remove","path":"name.givenName"}`)
	evs := outbox(t, s)
	if got := actionsOf(evs); got != "user.created user.updated" {
		t.Fatalf("events: %s", got)
	}
	created, updated := evs[0], evs[1]
	if created.data.Changes != nil || created.data.Member != nil || created.data.ExternalID != "e1" || created.data.ResourceType != "User" || created.data.ID != u.ID() {
		t.Errorf("user.created data: %+v", created.data)
	}
	ch := updated.data.Changes
	if len(ch) != 2 {
		t.Fatalf("changes %+v", ch)
	}
	for _, c := range ch {
		switch c.Path {
		case "title":
			if c.Old != nil || string(c.New) != `"Boss"` {
				t.Errorf("title change %+v: old must be absent for an unassigned attribute", c)
			}
		case "name.givenName":
			if string(c.Old) != `"Ann"` || c.New != nil {
				t.Errorf("givenName change %+v: new must be absent for a removal", c)
			}
		default:
			t.Errorf("unexpected change %+v", c)
		}
	}
	// The event's resource is the state after the change, with its new version.
	var res map[string]any
	_ = json.Unmarshal(updated.data.Resource, &res)
	if res["title"] != "Boss" || res["meta"].(map[string]any)["version"] != `W/"2"` {
		t.Errorf("user.updated resource: %v", res)
	}
	rows, _ := s.ReadOutbox(0, 10)
	if e := rowEvent(t, rows[1]); !e.Time().Equal(c.now()) || !rows[1].Time.Equal(c.now()) {
		t.Errorf("event time %s (row %s), want the commit time %s", e.Time(), rows[1].Time, c.now())
	}
	if lm := res["meta"].(map[string]any)["lastModified"]; lm != c.now().Format(scim.TimeFormat) {
		t.Errorf("lastModified %v, want the event time", lm)
	}
	checkEventOrder(t, evs)
}

// TestActiveTransitions: absent active counts as true.
func TestActiveTransitions(t *testing.T) {
	s, _, _ := openStore(t)
	u := create(t, s, "acme", user(t, `"userName":"ann"`))
	steps := []struct {
		ops, want string
	}{
		{`{"op":"replace","path":"active","value":true}`, "user.updated"},
		{`{"op":"replace","path":"active","value":false}`, "user.deactivated"},
		{`{"op":"replace","path":"displayName","value":"Ann"}`, "user.updated"},
		{`{"op":"remove","path":"active"}`, "user.reactivated"},
		{`{"op":"replace","path":"active","value":"False"}`, "user.deactivated"},
		{`{"op":"replace","path":"active","value":"True"}`, "user.reactivated"},
	}
	for _, st := range steps {
		n := len(outbox(t, s))
		mustPatch(t, s, "acme", scim.UserResourceType, u.ID(), st.ops)
		if got := actionsOf(since(t, s, n)); got != st.want {
			t.Fatalf("%s: %s, want %s", st.ops, got, st.want)
		}
	}
	checkEventOrder(t, outbox(t, s))
}

// TestNoOpUpdate: a request that changes nothing emits nothing and keeps
// the version, for users and groups, attributes and members.
func TestNoOpUpdate(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann","title":"x"`))
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, ann.ID())))
	n := len(outbox(t, s))
	mustPatch(t, s, "acme", scim.UserResourceType, ann.ID(), `{"op":"replace","path":"title","value":"x"}`)
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), fmt.Sprintf(`{"op":"add","path":"members","value":[{"value":%q}]}`, ann.ID()))
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), `{"op":"remove","path":"members[value eq \"0190f0e0-0000-7000-8000-000000000000\"]"}`)
	// PUT of the same members: remove all, then add them again.
	r, err := updateMembers(t, s, "acme", g.ID(), scim.MemberOp{Kind: scim.RemoveAllMembers}, scim.MemberOp{Kind: scim.AddMembers, Members: members(ann.ID())})
	if err != nil {
		t.Fatal(err)
	}
	if r.Meta().Version != `W/"1"` { // initial members come with the group's first version
		t.Fatalf("group version %s after no-op updates", r.Meta().Version)
	}
	if got := since(t, s, n); len(got) != 0 {
		t.Fatalf("no-op updates emitted %s", actionsOf(got))
	}
	if u, _ := s.Get(ctx, "acme", scim.UserResourceType, ann.ID()); u.Meta().Version != `W/"1"` {
		t.Fatalf("user version %s", u.Meta().Version)
	}
}

// TestMembershipOperations drives the member operations through their net
// effect.
func TestMembershipOperations(t *testing.T) {
	s, _, _ := openStore(t)
	var u []string
	for i := 0; i < 5; i++ {
		u = append(u, create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d","displayName":"User %d"`, i, i))).ID())
	}
	sub := create(t, s, "acme", group(t, `"displayName":"sub"`)).ID()
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q},{"value":%q,"display":"Custom"},{"value":%q}]`, u[0], u[1], u[0]))).ID()
	type step struct {
		name string
		ops  []scim.MemberOp
		want string // events as action:member display
		now  []string
	}
	ev := func(list []seen) string {
		var b []string
		for _, e := range list {
			b = append(b, fmt.Sprintf("%s:%s", strings.TrimPrefix(string(e.action), "group.member_"), e.data.Member.Display))
		}
		return strings.Join(b, " ")
	}
	dv := func(f string) *scim.Filter {
		p, _ := scim.GroupResourceType.ParsePath("members")
		vf, err := scim.ParseValueFilter(scim.GroupResourceType, p, f)
		if err != nil {
			t.Fatal(err)
		}
		return vf
	}
	steps := []step{
		{"add two, one present", []scim.MemberOp{{Kind: scim.AddMembers, Members: members(u[1], u[2], sub)}}, "added:User 2 added:sub", []string{u[0], u[1], u[2], sub}},
		{"remove absent", []scim.MemberOp{{Kind: scim.RemoveMembers, Members: members(u[4])}}, "", []string{u[0], u[1], u[2], sub}},
		{"add then remove", []scim.MemberOp{{Kind: scim.AddMembers, Members: members(u[3])}, {Kind: scim.RemoveMembers, Members: members(u[3])}}, "", []string{u[0], u[1], u[2], sub}},
		{"remove then add back", []scim.MemberOp{{Kind: scim.RemoveMembers, Members: members(u[0])}, {Kind: scim.AddMembers, Members: members(u[0])}}, "", []string{u[0], u[1], u[2], sub}},
		{"remove matching display", []scim.MemberOp{{Kind: scim.RemoveMatchingMembers, Filter: dv(`display eq "custom"`)}}, "removed:Custom", []string{u[0], u[2], sub}},
		{"remove matching type", []scim.MemberOp{{Kind: scim.RemoveMatchingMembers, Filter: dv(`type eq "Group"`)}}, "removed:sub", []string{u[0], u[2]}},
		{"replace", []scim.MemberOp{{Kind: scim.RemoveAllMembers}, {Kind: scim.AddMembers, Members: members(u[4], u[2], u[3])}}, "removed:User 0 added:User 4 added:User 3", []string{u[2], u[3], u[4]}},
		{"remove all", []scim.MemberOp{{Kind: scim.RemoveAllMembers}}, "removed:User 2 removed:User 3 removed:User 4", nil},
	}
	for _, st := range steps {
		n := len(outbox(t, s))
		if _, err := updateMembers(t, s, "acme", g, st.ops...); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := ev(since(t, s, n)); got != st.want {
			t.Fatalf("%s: events %q, want %q", st.name, got, st.want)
		}
		list, _ := s.Members(ctx, "acme", g, "", "", 0)
		var got []string
		for _, m := range list {
			got = append(got, m.Value)
		}
		want := slices.Clone(st.now)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: members %v, want %v", st.name, got, want)
		}
		// The reverse keys agree: every user's groups attribute.
		for _, id := range u {
			r, _ := s.Get(ctx, "acme", scim.UserResourceType, id)
			in := r.Attrs["groups"] != nil
			if in != slices.Contains(want, id) {
				t.Fatalf("%s: user %s has groups %v", st.name, id, r.Attrs["groups"])
			}
		}
	}
	// A failing operation anywhere in the request changes nothing.
	n := len(outbox(t, s))
	_, err := updateMembers(t, s, "acme", g, scim.MemberOp{Kind: scim.AddMembers, Members: members(u[0])}, scim.MemberOp{Kind: scim.AddMembers, Members: members("nope")})
	wantErr(t, err, scim.ErrInvalidValue, `member "nope" is not the id of a User or Group in this tenant`)
	if list, _ := s.Members(ctx, "acme", g, "", "", 0); len(list) != 0 || len(outbox(t, s)) != n {
		t.Fatalf("a refused request left members %v", list)
	}
	checkEventOrder(t, outbox(t, s))
}

// TestMemberEventsDescribeTheMember: member events say who the member is
// in a receiver's own terms (userName, email, externalId of a user;
// displayName and externalId of a group), on every path that emits them.
func TestMemberEventsDescribeTheMember(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann@x.com","externalId":"e-ann","emails":[{"value":"ann@home.com","type":"home"},{"value":"ann@work.com","type":"work"}]`))
	bob := create(t, s, "acme", user(t, `"userName":"bob","displayName":"Bob B","emails":[{"value":"bob@work.com","type":"work"},{"value":"bob@p.com","primary":true}]`))
	cid := create(t, s, "acme", user(t, `"userName":"cid"`))
	child := create(t, s, "acme", group(t, `"displayName":"child","externalId":"e-child"`))
	wantAnn := events.Member{Value: ann.ID(), Display: "ann@x.com", Type: "User", UserName: "ann@x.com", ExternalID: "e-ann", Email: "ann@work.com"}
	wantBob := events.Member{Value: bob.ID(), Display: "Bob B", Type: "User", UserName: "bob", Email: "bob@p.com"}
	wantCid := events.Member{Value: cid.ID(), Display: "cid", Type: "User", UserName: "cid"}
	wantChild := events.Member{Value: child.ID(), Display: "child", Type: "Group", DisplayName: "child", ExternalID: "e-child"}
	check := func(step string, evs []seen, want ...events.Member) {
		t.Helper()
		var got []events.Member
		for _, e := range evs {
			if e.data.Member != nil {
				got = append(got, *e.data.Member)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: members\n%+v\nwant\n%+v", step, got, want)
		}
	}
	n := len(outbox(t, s))
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, ann.ID())))
	check("create with a member", since(t, s, n), wantAnn)
	n = len(outbox(t, s))
	if _, err := updateMembers(t, s, "acme", g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: members(bob.ID(), child.ID(), cid.ID())}); err != nil {
		t.Fatal(err)
	}
	check("add", since(t, s, n), wantBob, wantChild, wantCid)
	n = len(outbox(t, s))
	if _, err := updateMembers(t, s, "acme", g.ID(), scim.MemberOp{Kind: scim.RemoveMembers, Members: members(bob.ID())}); err != nil {
		t.Fatal(err)
	}
	check("remove", since(t, s, n), wantBob)
	n = len(outbox(t, s))
	if err := del(s, "acme", scim.UserResourceType, ann.ID(), ""); err != nil {
		t.Fatal(err)
	}
	check("delete the user", since(t, s, n), wantAnn)
	// Renamed since it joined: the event says who it is now.
	mustPatch(t, s, "acme", scim.UserResourceType, cid.ID(), `{"op":"replace","path":"userName","value":"cid2"}`)
	n = len(outbox(t, s))
	if _, err := updateMembers(t, s, "acme", g.ID(), scim.MemberOp{Kind: scim.RemoveAllMembers}); err != nil {
		t.Fatal(err)
	}
	wantCid.Display, wantCid.UserName = "cid2", "cid2"
	check("remove all", since(t, s, n), wantCid, wantChild) // in id order
}

// TestDeleteGroup: a group's own memberships go without per-member events;
// a nested group leaves its parents with member_removed.
func TestDeleteGroup(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann"`))
	child := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"child","members":[{"value":%q}]`, ann.ID())))
	parent := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"parent","members":[{"value":%q}]`, child.ID())))
	n := len(outbox(t, s))
	if err := del(s, "acme", scim.GroupResourceType, child.ID(), `W/"9"`); !errors.Is(err, scim.ErrPreconditionFailed) {
		t.Fatalf("stale If-Match: %v", err)
	}
	if err := del(s, "acme", scim.GroupResourceType, child.ID(), `W/"1"`); err != nil {
		t.Fatal(err)
	}
	evs := since(t, s, n)
	if got := actionsOf(evs); got != "group.member_removed group.deleted" {
		t.Fatalf("events %s", got)
	}
	if evs[0].subject != "Groups/"+parent.ID() || evs[0].data.Member.Value != child.ID() || evs[0].data.Member.Type != "Group" {
		t.Fatalf("member_removed %+v on %s", evs[0].data.Member, evs[0].subject)
	}
	if r, _ := s.Get(ctx, "acme", scim.UserResourceType, ann.ID()); r.Attrs["groups"] != nil {
		t.Fatalf("ann still in %v", r.Attrs["groups"])
	}
	if list, _ := s.Members(ctx, "acme", parent.ID(), "", "", 0); len(list) != 0 {
		t.Fatalf("parent members %v", list)
	}
	// The displayName is free again, and no index key is left behind.
	create(t, s, "acme", group(t, `"displayName":"CHILD"`))
	checkEventOrder(t, outbox(t, s))
}

// TestDeleteLeavesNoKeys: after deleting everything, every index and
// membership bucket of the tenant is empty.
func TestDeleteLeavesNoKeys(t *testing.T) {
	s, _, _ := openStore(t)
	a := create(t, s, "acme", user(t, `"userName":"ann","externalId":"x","emails":[{"value":"a@x.com","type":"work"},{"value":"b@x.com"}]`))
	b := create(t, s, "acme", user(t, `"userName":"bob","externalId":"x"`))
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"g","externalId":"gx","members":[{"value":%q},{"value":%q}]`, a.ID(), b.ID())))
	mustPatch(t, s, "acme", scim.UserResourceType, a.ID(), `{"op":"replace","path":"userName","value":"ann2"}`)
	if err := del(s, "acme", scim.UserResourceType, a.ID(), ""); err != nil {
		t.Fatal(err)
	}
	if err := del(s, "acme", scim.GroupResourceType, g.ID(), ""); err != nil {
		t.Fatal(err)
	}
	if err := del(s, "acme", scim.UserResourceType, b.ID(), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTenants).Bucket([]byte("acme"))
		for _, name := range tenantBuckets {
			if string(name) == string(bucketCounters) {
				continue
			}
			if k, _ := tb.Bucket(name).Cursor().First(); k != nil {
				return fmt.Errorf("bucket %s still holds %q", name, k)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	checkEventOrder(t, outbox(t, s))
}

// TestListFilters compares every filter's answer with a plain evaluation
// of the filter over every resource, whether an index or a scan answers it.
func TestListFilters(t *testing.T) {
	s, _, _ := openStore(t)
	var uids []string
	for i := 0; i < 24; i++ {
		r := create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"user%02d@x.com","externalId":"ext%d","displayName":"D%d","active":%v,
			"emails":[{"value":"User%02d@X.com","type":"work"},{"value":"home%d@y.com","type":"home"},{"value":"shared@y.com"}]`, i, i%4, i%3, i%2 == 0, i, i)))
		uids = append(uids, r.ID())
	}
	sales := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"Sales","externalId":"g","members":[{"value":%q},{"value":%q}]`, uids[3], uids[4])))
	create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"Ops","externalId":"g","members":[{"value":%q},{"value":%q}]`, uids[4], sales.ID())))
	create(t, s, "acme", group(t, `"displayName":"Empty"`))
	users := []string{
		`userName eq "USER07@x.com"`,
		`userName eq "nobody"`,
		`externalId eq "ext2"`,
		`externalId eq "EXT2"`,
		`emails[type eq "work"].value eq "user09@x.COM"`,
		`emails[type eq "work"].value eq "home9@y.com"`,
		`emails.value eq "shared@Y.com"`,
		`emails.value eq "shared@Y.com" and userName eq "user05@x.com"`,
		`externalId eq "ext1" and active eq true`,
		`externalId eq "ext1" and active eq false`,
		`userName eq "user01@x.com" or userName eq "user02@x.com"`,
		`userName co "1"`,
		`userName sw "USER1"`,
		`not (active eq true)`,
		`not (externalId eq "ext0") and emails.value eq "shared@y.com"`,
		`displayName eq "d1"`,
		fmt.Sprintf(`id eq %q`, uids[5]),
		fmt.Sprintf(`id eq %q and userName eq "user06@x.com"`, uids[5]),
		`id eq "nope"`,
		fmt.Sprintf(`groups.value eq %q`, sales.ID()),
		fmt.Sprintf(`groups eq %q and userName sw "user0"`, sales.ID()),
		fmt.Sprintf(`groups[value eq %q and display eq "sales"]`, sales.ID()),
		fmt.Sprintf(`not (groups.value eq %q)`, sales.ID()),
		`groups.display eq "Ops"`,
		`groups pr`,
		`emails[type eq "home" and value ew "1@y.com"]`,
	}
	groups := []string{
		`displayName eq "sales"`,
		`displayName eq "SALES" and externalId eq "g"`,
		`externalId eq "g"`,
		fmt.Sprintf(`members.value eq %q`, uids[4]),
		fmt.Sprintf(`members[value eq %q]`, uids[9]),
		fmt.Sprintf(`members.value eq %q and displayName eq "ops"`, uids[4]),
		fmt.Sprintf(`members.value eq %q or displayName eq "Empty"`, uids[3]),
		fmt.Sprintf(`members eq %q`, uids[4]),
		fmt.Sprintf(`id eq %q and members eq %q`, sales.ID(), uids[3]),
		fmt.Sprintf(`id eq %q and members eq %q`, sales.ID(), uids[9]),
		fmt.Sprintf(`members.value ne %q`, uids[4]),
		fmt.Sprintf(`not (members eq %q)`, uids[3]),
		fmt.Sprintf(`members[value eq %q and type eq "User"]`, uids[4]),
		fmt.Sprintf(`members[value eq %q and type eq "Group"]`, uids[4]),
		fmt.Sprintf(`members[value eq %q or value eq %q]`, sales.ID(), uids[3]),
		fmt.Sprintf(`members eq %q`, strings.ToUpper(uids[4])),
		`members.display eq "d1"`,
		`members eq null`,
		`members pr`,
		`not (members pr)`,
		`members[type eq "Group"]`,
		`displayName sw "O"`,
		`displayName co "e"`,
	}
	run := func(rt *scim.ResourceType, list []string) {
		for _, fs := range list {
			t.Run(rt.Name+" "+fs, func(t *testing.T) {
				f := mustParseFilter(t, rt, fs)
				got, err := s.List(ctx, "acme", rt, scim.Query{Filter: f, StartIndex: 1, Count: 1000})
				if err != nil {
					t.Fatal(err)
				}
				want := referenceList(t, s, rt, f)
				if got.Total != len(want) || !slices.Equal(ids(got.Resources), want) {
					t.Fatalf("total %d, %v; evaluating the filter on every resource gives %v", got.Total, ids(got.Resources), want)
				}
				if _, indexed := candidates(mustView(t, s), rt, f); indexed != (len(f.Equalities()) > 0 && indexable(rt, f)) {
					t.Fatalf("indexed %v for %s", indexed, fs)
				}
			})
		}
	}
	run(scim.UserResourceType, users)
	run(scim.GroupResourceType, groups)
}

// indexable reports whether some equality of f has an index for rt.
func indexable(rt *scim.ResourceType, f *scim.Filter) bool {
	for _, eq := range f.Equalities() {
		switch {
		case eq.Path == "id" || eq.Path == "externalId":
			return true
		case rt == scim.UserResourceType && (eq.Path == "userName" || eq.Path == "emails.value"):
			return true
		case rt == scim.GroupResourceType && (eq.Path == "displayName" || eq.Path == "members.value"):
			return true
		}
	}
	return false
}

// mustView returns the acme tenant's bucket in a read transaction that
// stays open until the test ends.
func mustView(t testing.TB, s *Store) *bolt.Bucket {
	t.Helper()
	tx, err := s.db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	return tx.Bucket(bucketTenants).Bucket([]byte("acme"))
}

// referenceList evaluates f on every resource of rt, read with Get and
// Members, in id order: the answer List must give, by whatever route.
func referenceList(t testing.TB, s *Store, rt *scim.ResourceType, f *scim.Filter) []string {
	t.Helper()
	all, err := s.List(ctx, "acme", rt, scim.Query{StartIndex: 1, Count: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{}
	for _, r := range all.Resources {
		if rt == scim.GroupResourceType {
			list, _ := s.Members(ctx, "acme", r.ID(), "", "", 0)
			var ms []any
			for _, m := range list {
				ms = append(ms, map[string]any{"value": m.Value, "display": m.Display, "type": m.Type})
			}
			if ms != nil {
				r.Attrs["members"] = ms
			}
		}
		if f.Match(r) {
			want = append(want, r.ID())
		}
	}
	return want
}

// TestMostSelectiveIndex: with two indexed equalities, the smaller index
// answers, whatever order the filter names them in.
func TestMostSelectiveIndex(t *testing.T) {
	s := openFastStore(t)
	for i := 0; i < 50; i++ {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d","externalId":"same","emails":[{"value":"e%d@x.com"}]`, i, i%2)))
	}
	tb := mustView(t, s)
	for _, fs := range []string{
		`externalId eq "same" and emails.value eq "e1@x.com" and userName eq "u7"`,
		`userName eq "u7" and externalId eq "same"`,
		`emails.value eq "e1@x.com" and userName eq "u7"`,
	} {
		got, ok := candidates(tb, scim.UserResourceType, mustParseFilter(t, scim.UserResourceType, fs))
		if !ok || len(got) != 1 {
			t.Errorf("%s: %d candidates", fs, len(got))
		}
	}
	got, _ := candidates(tb, scim.UserResourceType, mustParseFilter(t, scim.UserResourceType, `externalId eq "same" and emails.value eq "e1@x.com"`))
	if len(got) != 25 {
		t.Errorf("externalId and email: %d candidates, want the 25 of the email index", len(got))
	}
}

func TestPagination(t *testing.T) {
	s, _, _ := openStore(t)
	var all []string
	for i := 0; i < 23; i++ {
		all = append(all, create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%02d","externalId":"x%d"`, i, i%2))).ID())
	}
	if !slices.IsSorted(all) {
		t.Fatal("ids are not in creation order")
	}
	odd := func() []string {
		var out []string
		for i, id := range all {
			if i%2 == 1 {
				out = append(out, id)
			}
		}
		return out
	}()
	tests := []struct {
		name   string
		filter string
		want   []string
	}{
		{"all", "", all},
		{"indexed", `externalId eq "x1"`, odd},
		{"scanned", `externalId ew "1"`, odd},
	}
	for _, tt := range tests {
		for _, size := range []int{1, 5, 7, 100} {
			t.Run(fmt.Sprintf("%s by %d", tt.name, size), func(t *testing.T) {
				var q scim.Query
				if tt.filter != "" {
					q.Filter = mustParseFilter(t, scim.UserResourceType, tt.filter)
				}
				var got []string
				for start := 1; start <= len(tt.want)+size; start += size {
					q.StartIndex, q.Count = start, size
					page, err := s.List(ctx, "acme", scim.UserResourceType, q)
					if err != nil {
						t.Fatal(err)
					}
					if page.Total != len(tt.want) {
						t.Fatalf("total %d at %d, want %d", page.Total, start, len(tt.want))
					}
					got = append(got, ids(page.Resources)...)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("paged %v, want %v", got, tt.want)
				}
			})
		}
		t.Run(tt.name+" total only", func(t *testing.T) {
			q := scim.Query{StartIndex: 1, Count: 0}
			if tt.filter != "" {
				q.Filter = mustParseFilter(t, scim.UserResourceType, tt.filter)
			}
			page, err := s.List(ctx, "acme", scim.UserResourceType, q)
			if err != nil || page.Total != len(tt.want) || len(page.Resources) != 0 || page.Resources == nil {
				t.Fatalf("count 0: %+v %v", page, err)
			}
			q.StartIndex, q.Count = 0, -5 // out of range: treated as 1 and 0
			if page, err := s.List(ctx, "acme", scim.UserResourceType, q); err != nil || page.Total != len(tt.want) || len(page.Resources) != 0 {
				t.Fatalf("start 0, count -5: %+v %v", page, err)
			}
		})
	}
	// Pages stay stable while resources are added: new ones come last.
	first, _ := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1, Count: 10})
	create(t, s, "acme", user(t, `"userName":"late"`))
	second, _ := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 11, Count: 100})
	if got := append(ids(first.Resources), ids(second.Resources)...); !slices.Equal(got[:23], all) || len(got) != 24 {
		t.Fatalf("pages while adding: %v", got)
	}
}

func TestSort(t *testing.T) {
	s, _, _ := openStore(t)
	mk := func(body string) string { return create(t, s, "acme", user(t, body)).ID() }
	bob := mk(`"userName":"bob","title":"b","emails":[{"value":"z@x.com"},{"value":"A@x.com","primary":true}]`)
	ann := mk(`"userName":"Ann","title":"B","emails":[{"value":"m@x.com"}]`)
	cid := mk(`"userName":"cid","name":{"familyName":"Zed"}`)
	dee := mk(`"userName":"dee","title":"a","externalId":"B"`)
	eve := mk(`"userName":"Eve","title":"b","externalId":"a"`)
	path := func(p string) *scim.AttrPath {
		ap, err := scim.UserResourceType.ParsePath(p)
		if err != nil {
			t.Fatal(err)
		}
		return &ap
	}
	tests := []struct {
		sortBy string
		desc   bool
		filter string
		want   []string
	}{
		{"userName", false, "", []string{ann, bob, cid, dee, eve}},
		{"userName", true, "", []string{eve, dee, cid, bob, ann}},
		{"title", false, "", []string{dee, bob, ann, eve, cid}},      // case-insensitive, ties by id, missing last
		{"title", true, "", []string{cid, bob, ann, eve, dee}},       // missing first (RFC 7644 §3.4.2.3)
		{"externalId", false, "", []string{dee, eve, bob, ann, cid}}, // case-exact: "B" < "a"
		{"emails", false, "", []string{bob, ann, cid, dee, eve}},     // the primary email
		{"emails.value", true, "", []string{cid, dee, eve, ann, bob}},
		{"name.familyName", false, "", []string{cid, bob, ann, dee, eve}},
		{"title", false, `title pr and userName ne "dee"`, []string{bob, ann, eve}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s desc=%v %s", tt.sortBy, tt.desc, tt.filter), func(t *testing.T) {
			q := scim.Query{StartIndex: 1, Count: 100, SortBy: path(tt.sortBy), Descending: tt.desc}
			if tt.filter != "" {
				q.Filter = mustParseFilter(t, scim.UserResourceType, tt.filter)
			}
			page, err := s.List(ctx, "acme", scim.UserResourceType, q)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(page.Resources); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			// A page of a sorted list is the slice of the whole.
			q.StartIndex, q.Count = 2, 2
			page, _ = s.List(ctx, "acme", scim.UserResourceType, q)
			if got := ids(page.Resources); page.Total != len(tt.want) || !slices.Equal(got, tt.want[1:min(3, len(tt.want))]) {
				t.Fatalf("page 2..3: %v of %d", got, page.Total)
			}
		})
	}
}

// TestPanickingUpdateFunc: bbolt reruns a failed batch function alone,
// outside its own recover; the store turns the panic into an error, and
// the writes sharing its batch commit once, with their events recorded once.
func TestPanickingUpdateFunc(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	o := testOptions(c)
	o.BatchDelay = 20 * time.Millisecond // gather all the writes in one batch
	s, err := Open(filepath.Join(t.TempDir(), "x.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u := create(t, s, "acme", user(t, `"userName":"ann"`))
	var wg sync.WaitGroup
	results := make([]scim.WriteResult, 10)
	errs := make([]error, 10)
	for i := range results {
		r := user(t, fmt.Sprintf(`"userName":"p%d"`, i)) // on the test goroutine: user may call t.Fatal
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 5 {
				results[i], errs[i] = s.Update(ctx, "acme", scim.UserResourceType, u.ID(), func(*scim.Resource) (*scim.Update, error) { panic("boom") })
				return
			}
			results[i], errs[i] = s.Create(ctx, "acme", r)
		}()
	}
	wg.Wait()
	var recorded []string
	for i, err := range errs {
		if i == 5 {
			if err == nil || !strings.Contains(err.Error(), "panic: boom") {
				t.Fatalf("panicking update: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("write %d sharing the batch: %v", i, err)
		}
		if n := len(results[i].EventIDs); n != 1 {
			t.Fatalf("write %d reported %d events", i, n)
		}
		recorded = append(recorded, results[i].EventIDs...)
	}
	rows, _ := s.ReadOutbox(1, 100) // after user ann's
	var inOutbox []string
	for _, r := range rows {
		inOutbox = append(inOutbox, rowEvent(t, r).ID())
	}
	slices.Sort(recorded)
	slices.Sort(inOutbox)
	if !slices.Equal(recorded, inOutbox) {
		t.Fatalf("reported %v, outbox %v", recorded, inOutbox)
	}
	if n, _ := s.OutboxDepth(); n != 10 {
		t.Fatalf("outbox depth %d, want 10", n)
	}
	checkEventOrder(t, outbox(t, s))
}

// TestUpdateFuncErrors: an error from fn is returned as is; a nil update is
// an error, not a panic.
func TestUpdateFuncErrors(t *testing.T) {
	s, _, _ := openStore(t)
	u := create(t, s, "acme", user(t, `"userName":"ann"`))
	mine := errors.New("mine")
	if _, err := s.Update(ctx, "acme", scim.UserResourceType, u.ID(), func(*scim.Resource) (*scim.Update, error) { return nil, mine }); err != mine {
		t.Fatalf("got %v", err)
	}
	if _, err := s.Update(ctx, "acme", scim.UserResourceType, u.ID(), func(*scim.Resource) (*scim.Update, error) { return nil, nil }); err == nil || !strings.Contains(err.Error(), "returned no resource") {
		t.Fatalf("nil update: %v", err)
	}
	_, err := s.Update(ctx, "acme", scim.UserResourceType, uuid.NewString(), func(*scim.Resource) (*scim.Update, error) { return nil, mine })
	wantErr(t, err, scim.ErrNotFound, "User")
	_, err = s.Update(ctx, "nope", scim.UserResourceType, u.ID(), func(*scim.Resource) (*scim.Update, error) { return nil, mine })
	wantErr(t, err, scim.ErrNotFound, `no tenant "nope"`)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Create(cctx, "acme", user(t, `"userName":"bob"`)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled create: %v", err)
	}
}

// TestOutboxAcrossTenants: one commit counter orders every tenant's events,
// so a publisher draining in key order sees each tenant's sequence in order.
func TestOutboxAcrossTenants(t *testing.T) {
	s, _, _ := openStore(t)
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		r := user(t, fmt.Sprintf(`"userName":"u%d"`, i)) // on the test goroutine: user may call t.Fatal
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant := []string{"acme", "globex"}[i%2]
			if _, err := s.Create(ctx, tenant, r); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	rows, _ := s.ReadOutbox(0, 1000)
	for i, r := range rows {
		if r.Key != uint64(i+1) {
			t.Fatalf("row %d has key %d", i, r.Key)
		}
	}
	checkEventOrder(t, outbox(t, s))
	// Deleting keys twice, or keys never written, is harmless.
	if err := s.DeleteOutbox([]uint64{1, 1, 2, 999}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OutboxDepth(); n != 38 {
		t.Fatalf("depth %d, want 38", n)
	}
}

// TestReindexManyEmails changes a user holding more emails than reindex
// scans (entrySet puts them in a set past 16): the index then holds
// exactly the emails the user holds, each once, the kept ones untouched.
func TestReindexManyEmails(t *testing.T) {
	s, _, _ := openStore(t)
	emails := func(from, to int) string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf(`{"value":"u%d@x.com"}`, i))
		}
		return "[" + strings.Join(out, ",") + "]"
	}
	a := create(t, s, "acme", user(t, `"userName":"ann","emails":`+emails(0, 40)))
	mustPatch(t, s, "acme", scim.UserResourceType, a.ID(), `{"op":"replace","path":"emails","value":`+emails(20, 70)+`}`)
	var held []string
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTenants).Bucket([]byte("acme")).Bucket(ixEmail).ForEach(func(k, _ []byte) error {
			held = append(held, string(k))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 20; i < 70; i++ {
		want = append(want, string(append(ixKey(fmt.Sprintf("u%d@x.com", i)), a.ID()...)))
	}
	slices.Sort(want)
	if !slices.Equal(held, want) {
		t.Errorf("ix_email holds %d keys, want the %d of u20..u69:\n%q", len(held), len(want), held)
	}
}
