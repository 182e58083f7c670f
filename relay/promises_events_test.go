// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// The README's "Events" section, sentence by sentence, where the tests
// elsewhere in this package leave a promise unchecked.

// TestInitialMembersEachGetAnEvent: "a group is created (then one
// member_added per initial member)": each distinct initial member gets one
// member_added, after the group.created and on the group, counting on the
// group's subjectseq; a member listed twice gets one event. A member event
// gives a user's email only when it is primary or work.
func TestInitialMembersEachGetAnEvent(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann","emails":[{"value":"ann@home.example","type":"home"}]`))
	bob := create(t, s, "acme", user(t, `"userName":"bob"`))
	sub := create(t, s, "acme", group(t, `"displayName":"sub"`))
	n := len(outbox(t, s))
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q},{"value":%q},{"value":%q},{"value":%q}]`,
		ann.ID(), bob.ID(), ann.ID(), sub.ID())))
	evs := since(t, s, n)
	if got := actionsOf(evs); got != "group.created group.member_added group.member_added group.member_added" {
		t.Fatalf("creating a group with three members (one listed twice) emitted %s", got)
	}
	var added []string
	for i, e := range evs {
		if e.subject != "Groups/"+g.ID() || e.subjectSeq != uint64(i+1) {
			t.Errorf("event %d (%s) is on %s with subjectseq %d, want Groups/%s and %d", i, e.action, e.subject, e.subjectSeq, g.ID(), i+1)
		}
		if e.data.Member != nil {
			added = append(added, e.data.Member.Value)
			if e.data.Member.Value == ann.ID() && e.data.Member.Email != "" {
				t.Errorf("ann has only a home email, but her member event says email %q", e.data.Member.Email)
			}
		}
	}
	slices.Sort(added)
	want := []string{ann.ID(), bob.ID(), sub.ID()}
	slices.Sort(want)
	if !slices.Equal(added, want) {
		t.Errorf("member_added for %v, want one for each of %v", added, want)
	}
	checkEventOrder(t, outbox(t, s))
}

// TestReactivationCarriesOtherChanges: "active goes false → true (other
// changes of the request ride along in changes)": one event, reactivated,
// whose changes hold every change of the request.
func TestReactivationCarriesOtherChanges(t *testing.T) {
	s, _, _ := openStore(t)
	u := create(t, s, "acme", user(t, `"userName":"ann","active":false`))
	n := len(outbox(t, s))
	mustPatch(t, s, "acme", scim.UserResourceType, u.ID(), `{"op":"replace","path":"active","value":true},{"op":"add","path":"title","value":"Back"}`)
	evs := since(t, s, n)
	if got := actionsOf(evs); got != "user.reactivated" {
		t.Fatalf("reactivating with a title emitted %q, want one user.reactivated", got)
	}
	var paths []string
	for _, c := range evs[0].data.Changes {
		paths = append(paths, c.Path+"="+string(c.New))
	}
	slices.Sort(paths)
	if strings.Join(paths, " ") != "active=true title=\"Back\"" {
		t.Errorf("user.reactivated changes %v, want active and title", paths)
	}
}

// TestGroupDeletedCarriesTheGroupBefore: "resource … before it for
// deletes; groups without members".
func TestGroupDeletedCarriesTheGroupBefore(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann"`))
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"Sales","externalId":"g-ext","members":[{"value":%q}]`, ann.ID())))
	n := len(outbox(t, s))
	if err := del(s, "acme", scim.GroupResourceType, g.ID(), ""); err != nil {
		t.Fatal(err)
	}
	evs := since(t, s, n)
	if got := actionsOf(evs); got != "group.deleted" {
		t.Fatalf("deleting a group emitted %s", got)
	}
	var r map[string]any
	if err := json.Unmarshal(evs[0].data.Resource, &r); err != nil {
		t.Fatal(err)
	}
	if r["displayName"] != "Sales" || r["externalId"] != "g-ext" || r["id"] != g.ID() || r["members"] != nil {
		t.Errorf("group.deleted resource %s, want the group as it was, without members", evs[0].data.Resource)
	}
	if evs[0].data.ExternalID != "g-ext" {
		t.Errorf("group.deleted externalId %q", evs[0].data.ExternalID)
	}
}

// TestSubscribersSelectWithREADMEFilters publishes a provisioning run
// through the outbox and publisher into a real stream, and checks each
// subject filter the README's "Subscribing on NATS" gives against what
// JetStream selects with it; and that each stored message is the published
// subject with the resource's partition appended, in binary mode.
func TestSubscribersSelectWithREADMEFilters(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann"`))
	bob := create(t, s, "acme", user(t, `"userName":"bob"`))
	mustPatch(t, s, "acme", scim.UserResourceType, ann.ID(), `{"op":"replace","path":"active","value":false}`)
	g := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, ann.ID())))
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), fmt.Sprintf(`{"op":"add","path":"members","value":[{"value":%q}]}`, bob.ID()))
	create(t, s, "acme", group(t, `"displayName":"other"`))
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), `{"op":"replace","path":"displayName","value":"g2"}`)
	gina := create(t, s, "globex", user(t, `"userName":"gina"`))
	mustPatch(t, s, "globex", scim.UserResourceType, gina.ID(), `{"op":"replace","path":"active","value":false}`)
	create(t, s, "globex", group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, gina.ID())))
	if err := del(s, "acme", scim.UserResourceType, bob.ID(), ""); err != nil {
		t.Fatal(err)
	}
	total := len(outbox(t, s))
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	startPublisher(t, s, js, slog.New(slog.DiscardHandler))
	streamContents(t, js, total) // every event is in, each once, valid against the contract

	// What each stored message is, read from its headers and data, not its subject.
	type stored struct {
		subject, tenant, kind, action, id string
	}
	ctx := context.Background()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	partitions, err := events.Partitions(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	var all []stored
	partitionOf := map[string]string{}
	for seq := uint64(1); seq <= uint64(total); seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := events.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		// Binary mode: every attribute a ce- header, the data the payload.
		want := map[string]string{
			"ce-specversion": "1.0", "ce-id": e.ID(), "ce-source": e.Source(), "ce-type": e.Type(), "ce-subject": e.Subject(),
			"ce-time": m.Header.Get("ce-time"), "ce-tenant": events.Tenant(e), "content-type": "application/json",
		}
		for k, v := range want {
			if got := m.Header.Get(k); got == "" || got != v {
				t.Fatalf("message %d: header %s = %q, want %q", seq, k, got, v)
			}
		}
		for _, ext := range []string{"sequence", "subjectseq"} {
			if h := m.Header.Get("ce-" + ext); len(h) != 20 || h != e.Extensions()[ext] {
				t.Fatalf("message %d: ce-%s %q, want 20 digits", seq, ext, h)
			}
		}
		var d events.Data
		if err := json.Unmarshal(m.Data, &d); err != nil || d.Tenant != events.Tenant(e) || d.ID == "" {
			t.Fatalf("message %d: data %s is not the payload (%v)", seq, m.Data, err)
		}
		a, _ := events.ActionOf(e)
		kind, action, _ := strings.Cut(string(a), ".")
		id := e.Subject()[strings.IndexByte(e.Subject(), '/')+1:]
		published := "scimrelay." + events.Tenant(e) + "." + kind + "." + action + "." + id
		p, ok := strings.CutPrefix(m.Subject, published+".")
		if !ok || strings.Contains(p, ".") {
			t.Fatalf("message %d is stored on %s, want %s.<partition>", seq, m.Subject, published)
		}
		if n, err := fmt.Sscanf(p, "%d", new(int)); n != 1 || err != nil {
			t.Fatalf("message %d: partition %q is not a number", seq, p)
		}
		if prev, seen := partitionOf[e.Subject()]; seen && prev != p {
			t.Fatalf("%s has events in partitions %s and %s", e.Subject(), prev, p)
		}
		partitionOf[e.Subject()] = p
		all = append(all, stored{m.Subject, events.Tenant(e), kind, action, id})
	}
	if len(partitionOf) < 2 || partitions < 2 {
		t.Fatalf("%d resources over %d partitions: the test shows nothing", len(partitionOf), partitions)
	}

	selected := func(filter string) map[string]uint64 {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects
	}
	expect := func(keep func(stored) bool) map[string]uint64 {
		out := map[string]uint64{}
		for _, m := range all {
			if keep(m) {
				out[m.subject]++
			}
		}
		return out
	}
	for _, tt := range []struct {
		filter string
		keep   func(stored) bool
	}{
		{"scimrelay.acme.>", func(m stored) bool { return m.tenant == "acme" }},
		{"scimrelay.acme.user.>", func(m stored) bool { return m.tenant == "acme" && m.kind == "user" }},
		{"scimrelay.acme.user.deactivated.>", func(m stored) bool { return m.tenant == "acme" && m.kind == "user" && m.action == "deactivated" }},
		{"scimrelay.acme.*.deactivated.>", func(m stored) bool { return m.tenant == "acme" && m.action == "deactivated" }},
		{"scimrelay.acme.group.*." + g.ID() + ".*", func(m stored) bool { return m.tenant == "acme" && m.kind == "group" && m.id == g.ID() }},
		// The four-token filter of releases before partitions selects nothing now.
		{"scimrelay.acme.user.deactivated", func(stored) bool { return false }},
	} {
		want := expect(tt.keep)
		got := selected(tt.filter)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s selects\n%v\nwant\n%v", tt.filter, got, want)
		}
		if tt.filter != "scimrelay.acme.user.deactivated" && len(want) == 0 {
			t.Errorf("%s: the run has no event it should select", tt.filter)
		}
	}
	// The group filter has every event of the group, member events included.
	var groupEvents []string
	for _, m := range all {
		if m.id == g.ID() {
			groupEvents = append(groupEvents, m.action)
		}
	}
	if strings.Join(groupEvents, " ") != "created member_added member_added updated member_removed" {
		t.Errorf("the group's events: %v", groupEvents)
	}
}
