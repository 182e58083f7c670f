// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"errors"
	"testing"
)

// TestSubscribersPersist: subscribers are kept in the data file, one per
// name, and survive a reopen.
func TestSubscribersPersist(t *testing.T) {
	s, _, path := openStore(t)
	a := Subscriber{Name: "billing", PublicKey: "UABC", Subjects: "scimrelay.acme.>"}
	if _, err := s.AddSubscriber(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddSubscriber(ctx, Subscriber{Name: "audit", PublicKey: "UDEF"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddSubscriber(ctx, Subscriber{Name: "billing", PublicKey: "UXYZ"}); !errors.Is(err, ErrSubscriberExists) {
		t.Fatalf("a second billing: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, testOptions(&clock{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := s.Subscribers(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "audit" || list[1].PublicKey != "UABC" || list[1].Subjects != a.Subjects || list[1].Created.IsZero() {
		t.Fatalf("after reopening: %+v %v", list, err)
	}
	if got, err := s.RemoveSubscriber(ctx, "billing"); err != nil || got.PublicKey != "UABC" {
		t.Fatalf("remove: %+v %v", got, err)
	}
	if _, err := s.RemoveSubscriber(ctx, "billing"); !errors.Is(err, ErrSubscriberNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if list, _ := s.Subscribers(ctx); len(list) != 1 {
		t.Fatalf("left: %+v", list)
	}
}

// TestSubscriberUpdated: a subscriber is updated in place through a
// closure that sees what is stored, its start (From) included; a record
// written before From was kept reads with none.
func TestSubscriberUpdated(t *testing.T) {
	s, _, _ := openStore(t)
	if _, err := s.AddSubscriber(ctx, Subscriber{Name: "billing", PublicKey: "UABC", From: "new"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.UpdateSubscriber(ctx, "billing", func(old Subscriber) (Subscriber, error) {
		if old.From != "new" || old.PublicKey != "UABC" {
			t.Errorf("the update sees %+v", old)
		}
		old.PublicKey, old.Subjects = "UXYZ", "scimrelay.acme.>"
		return old, nil
	})
	if err != nil || got.PublicKey != "UXYZ" || got.From != "new" {
		t.Fatalf("update: %+v %v", got, err)
	}
	if list, _ := s.Subscribers(ctx); len(list) != 1 || list[0] != got {
		t.Fatalf("stored: %+v, want %+v", list, got)
	}
	if _, err := s.UpdateSubscriber(ctx, "audit", func(old Subscriber) (Subscriber, error) { return old, nil }); !errors.Is(err, ErrSubscriberNotFound) {
		t.Fatalf("updating a subscriber that is not there: %v", err)
	}
	// A subscriber narrowed to a tenant that is not configured (removed,
	// and its purge begun, since its caller looked) is refused in the
	// write, as an add is; the record stays as it was.
	for _, subjects := range []string{"scimrelay.initech.>", "scimrelay.initech.user.>"} {
		if _, err := s.UpdateSubscriber(ctx, "billing", func(old Subscriber) (Subscriber, error) {
			old.Subjects = subjects
			return old, nil
		}); !errors.Is(err, ErrSubscriberTenantGone) {
			t.Fatalf("narrowing billing to %s, a tenant not configured: %v", subjects, err)
		}
	}
	if _, err := s.AddSubscriber(ctx, Subscriber{Name: "audit", PublicKey: "UDEF", Subjects: "scimrelay.initech.>"}); !errors.Is(err, ErrSubscriberTenantGone) {
		t.Fatalf("adding a subscriber of a tenant not configured: %v", err)
	}
	if list, _ := s.Subscribers(ctx); len(list) != 1 || list[0] != got {
		t.Fatalf("after the refused updates: %+v, want %+v", list, got)
	}
	refused := errors.New("no")
	if _, err := s.UpdateSubscriber(ctx, "billing", func(Subscriber) (Subscriber, error) { return Subscriber{}, refused }); !errors.Is(err, refused) {
		t.Fatalf("a refused update: %v", err)
	}
}
