// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"errors"
	"testing"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// TestCommitFailureStopsWrites: once a commit fails in bbolt itself (its
// flush of the data file failed), the store writes nothing more, even when
// the disk is back, and says so: Failed is closed, Writable and every
// write answer ErrWritesStopped (503 to SCIM). The file, opened again,
// holds what was committed before. A later commit could otherwise build
// on pages that never reached the disk.
func TestCommitFailureStopsWrites(t *testing.T) {
	s, c, path := openStore(t)
	before := create(t, s, "acme", user(t, `"userName":"before"`))
	restore := eventstest.FailWrites(t, path)
	_, err := s.Create(ctx, "acme", user(t, `"userName":"during"`))
	wantErr(t, err, scim.ErrUnavailable, "could not write its data file")
	select {
	case <-s.Failed():
	default:
		t.Fatal("Failed is not closed after a commit failed")
	}
	if s.Failure() == nil {
		t.Fatal("Failure says nothing")
	}
	restore()
	_, err = s.Create(ctx, "acme", user(t, `"userName":"after"`))
	wantErr(t, err, scim.ErrUnavailable, "could not write its data file")
	if err := s.Writable(); !errors.Is(err, ErrWritesStopped) {
		t.Fatalf("Writable after a failed commit: %v", err)
	}
	_ = s.Close()

	s, err = Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get(ctx, "acme", scim.UserResourceType, before.ID()); err != nil {
		t.Fatalf("the user committed before: %v", err)
	}
	list, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	if list.Total != 1 {
		t.Fatalf("%d users in the file opened again, want the one committed before", list.Total)
	}
	// And it writes again.
	create(t, s, "acme", user(t, `"userName":"again"`))
}
