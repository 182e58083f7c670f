// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestKeepSigningKeyLeavesRetiredKeyOut: once a key is retired, the
// running front end's check writes back its new key, never the retired
// one: not when a stale write (an older release's front end) names the
// retired key again and leaves the new one out, and not for a check that
// still holds the retired key, which says so at Warn each time. A reader
// takes what the retired key signed up to its bound, and refuses as an
// unknown key's what it signed after, even where the stream names it.
func TestKeepSigningKeyLeavesRetiredKeyOut(t *testing.T) {
	ctx := context.Background()
	nc, js := eventstest.Connect(t, eventstest.RunServer(t).ClientURL())
	oldSigner, next := newSigner(t), newSigner(t)
	old := oldSigner.PublicKey()
	st, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: old}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	before := publishEvent(t, js, st, oldSigner, "u1")
	var cur atomic.Pointer[string]
	cur.Store(&old)
	var out eventstest.Log
	log := slog.New(slog.NewTextHandler(&out, nil))
	keepCtx, stop := context.WithCancel(ctx)
	defer stop()
	go events.KeepSigningKey(keepCtx, js, func() string { return *cur.Load() }, 20*time.Millisecond, log)
	go events.KeepSigningKey(keepCtx, js, func() string { return old }, 20*time.Millisecond, log) // one that never switched

	if err := events.NameSigningKey(ctx, js, next.PublicKey(), log); err != nil {
		t.Fatal(err)
	}
	key := next.PublicKey()
	cur.Store(&key)
	r, err := events.RetireSigningKey(ctx, js, old, log)
	if err != nil || r.Key != old || r.UpTo != before.Sequence {
		t.Fatalf("RetireSigningKey: %+v, %v; want %s retired at sequence %d", r, err, old, before.Sequence)
	}
	after := publishEvent(t, js, st, oldSigner, "u2")

	// The stale write: the retired key alone named, the retirement kept.
	cfg := st.CachedInfo().Config
	cfg.Metadata = eventstest.StreamMetadata(t, js)
	cfg.Metadata["scimrelay_signing_keys"] = old
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		named := strings.Fields(eventstest.StreamMetadata(t, js)["scimrelay_signing_keys"])
		if !slices.Contains(named, key) {
			return fmt.Errorf("the stream names %v, want the new key %s written back", named, key)
		}
		if n := strings.Count(out.String(), "lists this front end's signing key as retired"); n < 3 {
			return fmt.Errorf("the check holding the retired key said so %d times, want 3 at least", n)
		}
		return nil
	})
	if named := strings.Fields(eventstest.StreamMetadata(t, js)["scimrelay_signing_keys"]); slices.Contains(named, old) {
		t.Errorf("the stream names %v: the retired key %s was written back", named, old)
	}

	trust, err := events.NewTrust(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Published(before.Sequence, before.Subject, before.Header, before.Data); err != nil {
		t.Errorf("the event the retired key signed before its retirement: %v", err)
	}
	if _, err := trust.Published(after.Sequence, after.Subject, after.Header, after.Data); !errors.Is(err, events.ErrUnknownKey) || !strings.Contains(err.Error(), "retired") {
		t.Errorf("the event the retired key signed after its retirement: %v; want it refused as a retired key's", err)
	}
	if err := trust.VerifyDeadLetter(r.At.Add(-time.Second), before.Header, before.Data); err != nil {
		t.Errorf("a dead letter stored before the retirement: %v", err)
	}
	if err := trust.VerifyDeadLetter(r.At.Add(time.Second), after.Header, after.Data); !errors.Is(err, events.ErrUnknownKey) {
		t.Errorf("a dead letter stored after the retirement: %v; want it refused", err)
	}
	// A front end whose stored key is retired is refused at start.
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: old}, log); !errors.Is(err, events.ErrRetiredKey) {
		t.Errorf("a front end starting with the retired key: %v, want ErrRetiredKey", err)
	}
}

// TestRetiredKeysBounded: retired keys stay listed while the stream or
// the dead-letter queue may hold what they signed: nine rotations within
// the dead-letter queue's keep leave all nine listed, and what the first
// signed before its retirement still verifies (the diff review: with the
// eight kept before, a ninth rotation dropped the first, and its dead
// letters could never be redriven). What bounds the list is
// TestRetiredMetadataBounds's.
func TestRetiredKeysBounded(t *testing.T) {
	ctx := context.Background()
	nc, js := eventstest.Connect(t, eventstest.RunServer(t).ClientURL())
	first := newSigner(t)
	st, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: first.PublicKey()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	signed := publishEvent(t, js, st, first, "u1")
	var out eventstest.Log
	log := slog.New(slog.NewTextHandler(&out, nil))
	key := first.PublicKey()
	for range 9 {
		next := newSigner(t).PublicKey()
		if err := events.NameSigningKey(ctx, js, next, log); err != nil {
			t.Fatal(err)
		}
		if _, err := events.RetireSigningKey(ctx, js, key, log); err != nil {
			t.Fatal(err)
		}
		key = next
	}
	retired := strings.Fields(eventstest.StreamMetadata(t, js)["scimrelay_retired_keys"])
	if len(retired) != 9 || !strings.Contains(strings.Join(retired, " "), first.PublicKey()) {
		t.Errorf("the stream lists %d retired keys (%v); want 9, the first among them", len(retired), retired)
	}
	if strings.Contains(out.String(), "dropped=") {
		t.Errorf("a retired key was dropped:\n%s", out.String())
	}
	trust, err := events.NewTrust(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Published(signed.Sequence, signed.Subject, signed.Header, signed.Data); err != nil {
		t.Errorf("an event the first retired key signed before its retirement: %v", err)
	}
}

// TestOddRetiredKeysLeaveWhereSigningBeganAlone: a front end that starts
// on a stream whose retired keys it cannot read refuses, saying so, as the
// workers do, and writes nothing; and nothing but the stream's own record
// of where signing began moves it (a key in the named ones that is no key
// is left out). Before, either made the start move scimrelay_signed_from
// to the stream's end, and the unsigned messages stored since signing
// began were taken as the relay's.
func TestOddRetiredKeysLeaveWhereSigningBeganAlone(t *testing.T) {
	ctx := context.Background()
	nc, js := eventstest.Connect(t, eventstest.RunServer(t).ClientURL())
	signer := newSigner(t)
	o := events.StreamOptions{SigningKey: signer.PublicKey()}
	st, err := events.EnsureStream(ctx, js, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	was := eventstest.StreamMetadata(t, js)
	forged := publishEvent(t, js, st, nil, "u1") // unsigned, seq 1
	trust, err := events.NewTrust(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Published(forged.Sequence, forged.Subject, forged.Header, forged.Data); err == nil {
		t.Fatal("an unsigned message stored after signing began was taken")
	}
	edit := func(f func(map[string]string)) {
		t.Helper()
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg := info.Config
		meta := map[string]string{}
		for k, v := range cfg.Metadata {
			if !strings.HasPrefix(k, "_nats.") {
				meta[k] = v
			}
		}
		f(meta)
		cfg.Metadata = meta
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	edit(func(m map[string]string) { m["scimrelay_retired_keys"] = "not-a-key" })
	// The front end restarts.
	_, startErr := events.EnsureStream(ctx, js, o, slog.New(slog.DiscardHandler))
	if startErr == nil || !strings.Contains(startErr.Error(), `retired key "not-a-key" is not key:sequence:time`) {
		t.Errorf("a start with unreadable retired keys: %v; want it refused, naming them", startErr)
	}
	now := eventstest.StreamMetadata(t, js)
	if now["scimrelay_signed_from"] != was["scimrelay_signed_from"] || now["scimrelay_signed_since"] != was["scimrelay_signed_since"] {
		t.Errorf("a start (err %v) with unreadable retired keys moved where signing began: signed_from %s -> %s, signed_since %s -> %s",
			startErr, was["scimrelay_signed_from"], now["scimrelay_signed_from"], was["scimrelay_signed_since"], now["scimrelay_signed_since"])
	}
	// A named key that is no key: left out, and nothing else moves.
	edit(func(m map[string]string) {
		delete(m, "scimrelay_retired_keys")
		m["scimrelay_signing_keys"] += " not-a-key"
	})
	if _, err := events.EnsureStream(ctx, js, o, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	now = eventstest.StreamMetadata(t, js)
	if now["scimrelay_signed_from"] != was["scimrelay_signed_from"] || now["scimrelay_signed_since"] != was["scimrelay_signed_since"] || now["scimrelay_signing_keys"] != signer.PublicKey() {
		t.Errorf("a start with a named key that is no key: signed_from %s -> %s, signed_since %s -> %s, keys %q; want where signing began kept and the key alone named",
			was["scimrelay_signed_from"], now["scimrelay_signed_from"], was["scimrelay_signed_since"], now["scimrelay_signed_since"], now["scimrelay_signing_keys"])
	}
	trust, err = events.NewTrust(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Published(forged.Sequence, forged.Subject, forged.Header, forged.Data); err == nil {
		t.Errorf("the unsigned message stored at %d, after signing began, is now taken as the relay's", forged.Sequence)
	}
}
