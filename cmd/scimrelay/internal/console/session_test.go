// SPDX-License-Identifier: Apache-2.0

package console

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestSessionTable: the table holds at most maxSessions, dropping the
// least recently used; a session ends at its idle timeout and its maximum
// age; ending one closes its streams' channel.
func TestSessionTable(t *testing.T) {
	now := time.Now()
	ss := newSessions(30*time.Minute, 12*time.Hour, func() time.Time { return now })
	first, s1 := ss.create("tok")
	for range maxSessions - 1 {
		now = now.Add(time.Millisecond)
		ss.create("tok")
	}
	if _, ok := ss.get(first, true); !ok { // used: now the most recent
		t.Fatal("the first session is gone before the table is full")
	}
	now = now.Add(time.Millisecond)
	ss.create("tok")
	if len(ss.m) != maxSessions {
		t.Fatalf("%d sessions, want at most %d", len(ss.m), maxSessions)
	}
	if _, ok := ss.get(first, true); !ok {
		t.Fatal("the most recently used session was dropped, not the least")
	}
	now = now.Add(29 * time.Minute)
	if _, ok := ss.get(first, true); !ok {
		t.Fatal("ended before its idle timeout")
	}
	now = now.Add(30 * time.Minute)
	if _, ok := ss.get(first, true); ok || ss.alive(s1) {
		t.Fatal("alive after its idle timeout")
	}
	id, s2 := ss.create("tok")
	ss.end(s2)
	select {
	case <-s2.ended():
	default:
		t.Fatal("ending a session does not end its streams")
	}
	if _, ok := ss.get(id, true); ok {
		t.Fatal("an ended session is found")
	}
}

// TestIssuedShownOnce: a kept secret is given once, and not at all after
// secretKeepFor.
func TestIssuedShownOnce(t *testing.T) {
	now := time.Now()
	s := &session{issued: map[string]issued{}}
	id := s.keepIssued(issued{tenant: "acme", res: admin.TokenResponse{Secret: "s1"}, at: now})
	if it, ok := s.takeIssued(id, now); !ok || it.res.Secret != "s1" {
		t.Fatalf("first display: %+v %v", it, ok)
	}
	if _, ok := s.takeIssued(id, now); ok {
		t.Fatal("shown twice")
	}
	id = s.keepIssued(issued{tenant: "acme", res: admin.TokenResponse{Secret: "s2"}, at: now})
	if _, ok := s.takeIssued(id, now.Add(secretKeepFor+time.Second)); ok {
		t.Fatal("shown after it should have been dropped")
	}
	// A secret never displayed does not stay in memory past its window:
	// the next display, of any other, forgets it.
	s.keepIssued(issued{tenant: "acme", res: admin.TokenResponse{Secret: "s3"}, at: now})
	later := now.Add(secretKeepFor + time.Second)
	id = s.keepIssued(issued{tenant: "acme", res: admin.TokenResponse{Secret: "s4"}, at: now})
	s.takeIssued(id, later)
	if len(s.issued) != 0 {
		t.Errorf("%d secrets kept past their display window", len(s.issued))
	}
}

// TestRunSweeps: without anyone signing in or displaying another secret,
// Run forgets the secrets kept past their display window and the sessions
// no longer live (ending their streams), and stops when its context ends.
func TestRunSweeps(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	move := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c, err := New(Options{Admin: http.NotFoundHandler(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	c.sweepEvery = 5 * time.Millisecond
	_, s := c.sessions.create("tok")
	s.keepIssued(issued{tenant: "acme", res: admin.TokenResponse{Secret: "never-displayed"}, at: clock()})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { c.Run(ctx); close(stopped) }()
	defer func() {
		cancel()
		<-stopped
	}()

	move(secretKeepFor + time.Second)
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.issued) != 0 {
			return fmt.Errorf("%d secrets kept past their display window", len(s.issued))
		}
		return nil
	})
	if !c.sessions.alive(s) {
		t.Fatal("the sweep ended a live session")
	}
	move(DefaultIdleTimeout)
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		c.sessions.mu.Lock()
		defer c.sessions.mu.Unlock()
		if len(c.sessions.m) != 0 {
			return fmt.Errorf("%d sessions kept past their idle timeout", len(c.sessions.m))
		}
		return nil
	})
	select {
	case <-s.ended():
	default:
		t.Fatal("a swept session's streams were not ended")
	}
}
