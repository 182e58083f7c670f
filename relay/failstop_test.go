// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

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

// TestFileReplacedStopsWrites: a backup copied over the data file while
// the store has it open (cp writes the file in place; bbolt's lock does
// not stop it) is found at the next write, or at the next Ping (the
// readiness check) when nothing is written: the write is refused, nothing
// is written over the copy, and writes stop as after a failed commit.
// Before, the next commit freed pages the copy used and bbolt panicked.
func TestFileReplacedStopsWrites(t *testing.T) {
	for _, found := range []string{"write", "ping"} {
		t.Run(found, func(t *testing.T) {
			s, _, path := openStore(t)
			create(t, s, "acme", user(t, `"userName":"ann"`))
			backup, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"bob", "cy", "dee"} {
				create(t, s, "acme", user(t, `"userName":"`+name+`"`))
			}
			eventstest.WriteInPlace(t, path, backup)
			if found == "ping" {
				if err := s.Ping(); !errors.Is(err, ErrWritesStopped) || !strings.Contains(err.Error(), "written by something else") {
					t.Fatalf("Ping after the file was replaced: %v", err)
				}
			}
			_, err = s.Create(ctx, "acme", user(t, `"userName":"eve"`))
			wantErr(t, err, scim.ErrUnavailable, "could not write its data file")
			if f := s.Failure(); !errors.Is(f, ErrWritesStopped) || !strings.Contains(f.Error(), "written by something else") {
				t.Fatalf("Failure: %v", f)
			}
			_ = s.Close()
			// The copy is as it was put there: ann alone.
			s2, err := Open(path, testOptions(&clock{t: time.Now()}))
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			page, err := s2.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1, Count: 10})
			if err != nil || page.Total != 1 {
				t.Fatalf("the copy, opened again: %d users (%v), want ann alone", page.Total, err)
			}
		})
	}
}
