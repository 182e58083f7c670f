// SPDX-License-Identifier: Apache-2.0

package events

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func testPublicKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(pub)
}

// TestRetiredMetadataBounds: a retry of a retirement keeps the bound of
// its first write, even when another front end's stale write took the
// retirement out meanwhile (a later bound would cover what the leaked key
// signed in between: the diff review); a retired key stays listed while
// the stream or the dead-letter queue may hold what it signed, and past
// maxRetiredKeys the oldest goes; a dropped key is never listed again.
func TestRetiredMetadataBounds(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	old, cur := testPublicKey(t), testPublicKey(t)
	have := &jetstream.StreamInfo{
		Config:    jetstream.StreamConfig{Metadata: map[string]string{metaSigningKeys: cur + " " + old}},
		State:     jetstream.StreamState{FirstSeq: 100, LastSeq: 900},
		TimeStamp: now,
	}
	first := retiredKey{name: old, upTo: 500, at: now.Add(-time.Minute)}
	meta, r, _, err := retiredMetadata(have, old, &first, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.upTo != 500 || !strings.HasPrefix(meta[metaRetiredKeys], old+":500:") {
		t.Errorf("a retry after a stale write retired the key at %d (%q), want the first write's 500", r.upTo, meta[metaRetiredKeys])
	}
	if _, r, _, _ := retiredMetadata(have, old, nil, now); r.upTo != 900 {
		t.Errorf("a first write retired the key at %d, want the stream's last sequence 900", r.upTo)
	}

	// Retired keys whose events aged out of the stream (bound below its
	// first sequence): kept while their dead letters may be redriven.
	var entries []string
	recent, aged := testPublicKey(t), testPublicKey(t)
	entries = append(entries, retiredKey{name: recent, upTo: 50, at: now.Add(-30 * 24 * time.Hour)}.String())
	entries = append(entries, retiredKey{name: aged, upTo: 40, at: now.Add(-32 * 24 * time.Hour)}.String())
	have.Config.Metadata[metaRetiredKeys] = strings.Join(entries, " ")
	meta, _, dropped, err := retiredMetadata(have, old, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(meta[metaRetiredKeys], recent) || strings.Contains(meta[metaRetiredKeys], aged) || len(dropped) != 0 {
		t.Errorf("retired keys after aging: %q (dropped %v); want %s kept (its dead letters may be redriven), %s gone", meta[metaRetiredKeys], dropped, recent, aged)
	}
	// Gone from the list, it is remembered as dropped: never named again.
	if meta[metaDroppedKeys] != aged {
		t.Errorf("dropped keys after aging: %q, want %s", meta[metaDroppedKeys], aged)
	}
	have.Config.Metadata[metaRetiredKeys], have.Config.Metadata[metaDroppedKeys] = meta[metaRetiredKeys], meta[metaDroppedKeys]
	if !isRetired(have, aged) || isRetired(have, cur) {
		t.Errorf("isRetired: the dropped key %v, the key in use %v; want true, false", isRetired(have, aged), isRetired(have, cur))
	}
	have.Config.Metadata[metaSigningKeys] = cur + " " + aged
	if named := signingMetadata(have, testPublicKey(t), now)[metaSigningKeys]; strings.Contains(named, aged) || !strings.Contains(named, cur) {
		t.Errorf("a front end naming its key names %q; want %s kept and the dropped %s left out", named, cur, aged)
	}
	// Retired again (a restored data file lists it as retiring), a
	// dropped key stays dropped: listed with a new bound, it would make
	// what a leaked key signed since verify. A retry's bound changes
	// nothing.
	for _, bound := range []*retiredKey{nil, {name: aged}} {
		meta, _, dropped, err := retiredMetadata(have, aged, bound, now)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(meta[metaRetiredKeys], aged) || strings.Contains(meta[metaSigningKeys], aged) || meta[metaDroppedKeys] != aged || len(dropped) != 0 {
			t.Errorf("the dropped key retired again (bound %v): retired %q, named %q, dropped %q; want it dropped only", bound, meta[metaRetiredKeys], meta[metaSigningKeys], meta[metaDroppedKeys])
		}
	}
	have.Config.Metadata[metaSigningKeys] = cur + " " + old

	// Past maxRetiredKeys the oldest goes, and is returned to be said.
	entries = nil
	for i := range maxRetiredKeys {
		entries = append(entries, retiredKey{name: testPublicKey(t), upTo: uint64(800 - i), at: now.Add(-time.Duration(i+1) * time.Hour)}.String())
	}
	have.Config.Metadata[metaRetiredKeys] = strings.Join(entries, " ")
	meta, _, dropped, err = retiredMetadata(have, old, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(meta[metaRetiredKeys])); n != maxRetiredKeys || len(dropped) != 1 || dropped[0].String() != entries[maxRetiredKeys-1] {
		t.Errorf("%d retired keys listed, dropped %v; want %d, the oldest dropped", n, dropped, maxRetiredKeys)
	}
	if want := dropped[0].name + " " + aged; meta[metaDroppedKeys] != want {
		t.Errorf("dropped keys: %q, want the newly dropped first, then the one before: %q", meta[metaDroppedKeys], want)
	}

	// Past maxDroppedKeys the oldest dropped is forgotten.
	var names []string
	for range maxDroppedKeys {
		names = append(names, testPublicKey(t))
	}
	have.Config.Metadata[metaDroppedKeys] = strings.Join(names, " ")
	meta, _, dropped, err = retiredMetadata(have, old, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(meta[metaDroppedKeys])
	if len(got) != maxDroppedKeys || got[0] != dropped[0].name || got[1] != names[0] || slices.Contains(got, names[maxDroppedKeys-1]) {
		t.Errorf("%d dropped keys remembered, first %s, second %s; want %d, the newly dropped then %s, and %s forgotten", len(got), got[0], got[1], maxDroppedKeys, names[0], names[maxDroppedKeys-1])
	}
}

// TestKeyRefreshWaitsForTheReadUnderWay: while one caller reads the
// stream's keys again (held here by taking the trust's lock, as a read
// under way does), another that finds its keys older than KeysReadEvery
// waits for that read and verifies with what it read: never with the old
// keys (a key retired since would verify: CI, 2026-12-03), and without
// reading again itself (the trust has no connection: a read would fail,
// and fresh would return the old keys). A read that failed just now is
// not waited for.
func TestKeyRefreshWaitsForTheReadUnderWay(t *testing.T) {
	tr := &Trust{}
	old := &trustState{read: time.Now().Add(-time.Minute)}
	tr.state.Store(old)
	tr.mu.Lock() // a read under way
	done := make(chan *trustState, 1)
	go func() { done <- tr.fresh(old) }()
	for deadline := time.Now().Add(10 * time.Second); !waitingForLock("(*Trust).fresh"); {
		select {
		case <-done:
			t.Fatal("fresh returned keys read a minute ago while a read was under way; want it to wait for that read")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("fresh neither returned nor waited for the read under way")
		}
		runtime.Gosched()
	}
	read := &trustState{read: time.Now()}
	tr.state.Store(read)
	tr.refreshed = read.read
	tr.mu.Unlock()
	if got := <-done; got != read {
		t.Errorf("fresh returned other keys than the read it waited for read")
	}

	// The read failed a moment ago (refreshed now, the keys still old):
	// verified at once with the keys read last, nothing read again.
	tr.state.Store(old)
	tr.refreshed = time.Now()
	if got := tr.fresh(old); got != old {
		t.Errorf("fresh after a failed read returned other keys than those read last")
	}
}

// waitingForLock reports whether a goroutine in fn waits for a mutex.
func waitingForLock(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) && strings.Contains(g, "sync.(*Mutex).Lock") {
			return true
		}
	}
	return false
}
