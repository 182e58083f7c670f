// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

func newSigner(t *testing.T) *events.Signer {
	t.Helper()
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	s, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publishEvent publishes a user's event as the relay's publisher does,
// signed by s when s is set, and returns the message as the stream
// stored it.
// runSigningStream runs a NATS server with a user "relay" and users, and
// the event stream on it, made by relay as the front end makes it on an
// external NATS: naming the key of the signer it returns.
func runSigningStream(t *testing.T, users ...*server.User) (*server.Server, jetstream.JetStream, jetstream.Stream, *events.Signer) {
	t.Helper()
	s := eventstest.RunServerWith(t, t.TempDir(), -1, func(o *server.Options) {
		o.Users = append([]*server.User{{Username: "relay", Password: "relay-password"}}, users...)
	})
	relay, err := nats.Connect(s.ClientURL(), nats.UserInfo("relay", "relay-password"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Close)
	js, err := jetstream.New(relay)
	if err != nil {
		t.Fatal(err)
	}
	signer := newSigner(t)
	st, err := events.EnsureStream(context.Background(), js, events.StreamOptions{SigningKey: signer.PublicKey()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s, js, st, signer
}

func publishEvent(t *testing.T, js jetstream.JetStream, st jetstream.Stream, s *events.Signer, id string) *jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	msg, err := events.ToMsg(eventstest.Event(t, "acme", events.UserCreated, id, 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	if s != nil {
		if err := s.Sign(msg); err != nil {
			t.Fatal(err)
		}
	}
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

func copyHeader(h nats.Header) nats.Header {
	c := nats.Header{}
	for k, v := range h {
		c[k] = append([]string(nil), v...)
	}
	return c
}

// TestSignedEvents: on an external NATS the front end signs its events and
// names its key in the event stream's configuration; a reader takes an
// event from where signing began only with a signature of a key the
// stream names over exactly its attributes and data, takes the events
// stored before unsigned, learns a new key of the front end's from the
// stream while it runs, and keeps the old ones for the events they
// signed.
func TestSignedEvents(t *testing.T) {
	ctx := context.Background()
	nc, js := eventstest.Connect(t, eventstest.RunServer(t).ClientURL())
	// A stream an older release made, holding an event it did not sign.
	st, err := events.EnsureStream(ctx, js, events.StreamOptions{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	before := publishEvent(t, js, st, nil, "u0")
	if _, err := events.NewTrust(ctx, nc); !errors.Is(err, events.ErrUnsigned) {
		t.Fatalf("the trust of a stream without keys: %v, want ErrUnsigned", err)
	}
	first := newSigner(t)
	if st, err = events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: first.PublicKey()}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	trust, err := events.NewTrust(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	read := func(m *jetstream.RawStreamMsg) error {
		_, err := trust.Published(m.Sequence, m.Subject, m.Header, m.Data)
		return err
	}
	if err := read(before); err != nil {
		t.Errorf("the event stored before the relay signed: %v", err)
	}
	signed := publishEvent(t, js, st, first, "u1")
	if err := read(signed); err != nil {
		t.Fatalf("a signed event: %v", err)
	}
	if err := read(publishEvent(t, js, st, nil, "u2")); !errors.Is(err, events.ErrNotPublished) {
		t.Errorf("an unsigned event after signing began: %v, want ErrNotPublished", err)
	}
	tampered := map[string]func(h nats.Header, data []byte) (nats.Header, []byte){
		"data changed": func(h nats.Header, data []byte) (nats.Header, []byte) {
			return h, []byte(strings.Replace(string(data), "u1", "u9", 1))
		},
		"type changed": func(h nats.Header, data []byte) (nats.Header, []byte) {
			h.Set("ce-type", "dev.scimrelay.user.deleted")
			return h, data
		},
		"an attribute added": func(h nats.Header, data []byte) (nats.Header, []byte) {
			h.Set("ce-actor", "mallory")
			return h, data
		},
		"an attribute in another case added": func(h nats.Header, data []byte) (nats.Header, []byte) {
			h.Add("CE-TYPE", "dev.scimrelay.user.deleted")
			return h, data
		},
		"an attribute taken out": func(h nats.Header, data []byte) (nats.Header, []byte) {
			h.Del("ce-time")
			return h, data
		},
		"content type changed": func(h nats.Header, data []byte) (nats.Header, []byte) {
			h.Set("content-type", "text/plain")
			return h, data
		},
		"signature twice": func(h nats.Header, data []byte) (nats.Header, []byte) {
			h.Add(events.SignatureHeader, h.Get(events.SignatureHeader))
			return h, data
		},
		"the signature's unused bits changed": func(h nats.Header, data []byte) (nats.Header, []byte) {
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			v := h.Get(events.SignatureHeader)
			last := strings.IndexByte(alphabet, v[len(v)-1])
			h.Set(events.SignatureHeader, v[:len(v)-1]+alphabet[last^1:last^1+1])
			return h, data
		},
		"signature of another key": func(h nats.Header, data []byte) (nats.Header, []byte) {
			msg := &nats.Msg{Header: h, Data: data}
			if err := newSigner(t).Sign(msg); err != nil {
				t.Fatal(err)
			}
			return msg.Header, data
		},
		"a known key, the signature of another": func(h nats.Header, data []byte) (nats.Header, []byte) {
			msg := &nats.Msg{Header: copyHeader(h), Data: data}
			if err := newSigner(t).Sign(msg); err != nil {
				t.Fatal(err)
			}
			forged := strings.Fields(msg.Header.Get(events.SignatureHeader))
			h.Set(events.SignatureHeader, "v1 "+first.PublicKey()+" "+forged[2])
			return h, data
		},
	}
	for name, change := range tampered {
		h, data := change(copyHeader(signed.Header), signed.Data)
		_, err := trust.Published(signed.Sequence, signed.Subject, h, data)
		// A key the stream does not name may be the front end's new one:
		// the event is dead-lettered, not dropped.
		want := events.ErrNotPublished
		if name == "signature of another key" {
			want = events.ErrUnknownKey
		}
		if !errors.Is(err, want) || (want == events.ErrUnknownKey && errors.Is(err, events.ErrNotPublished)) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	// NATS's own headers are not signed: JetStream adds and changes them.
	h := copyHeader(signed.Header)
	h.Set(nats.MsgIdHdr, "another")
	if _, err := trust.Published(signed.Sequence, signed.Subject, h, signed.Data); err != nil {
		t.Errorf("a signed event with another Nats-Msg-Id: %v", err)
	}

	// The front end signs with a new key (its data file was lost): the
	// reader learns it from the stream, and still takes the old key's.
	second := newSigner(t)
	if _, err = events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: second.PublicKey()}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	// The keys are read again at most once a second, and a reader that
	// meets an unknown key within the second of the last read waits for
	// its turn rather than take the front end's new key for a forger's
	// (a message of an unknown key was just met, above).
	if err := read(publishEvent(t, js, st, second, "u3")); err != nil {
		t.Errorf("an event signed by the front end's new key, met within a second of a read of the keys: %v", err)
	}
	if err := read(signed); err != nil {
		t.Errorf("an event signed by the old key after the new one came: %v", err)
	}
	if err := read(before); err != nil {
		t.Errorf("the event stored before the relay signed, once the key changed: %v", err)
	}
}

// TestSignedDeadLetters: a dead letter keeps the event's signature, which
// verifies over the event as the queue encodes it again; one written
// without it, after signing began, is refused, and one the queue stored
// before signing began is taken.
func TestSignedDeadLetters(t *testing.T) {
	ctx := context.Background()
	nc, js := eventstest.Connect(t, eventstest.RunServer(t).ClientURL())
	s := newSigner(t)
	st, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: s.PublicKey()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	trust, err := events.NewTrust(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	stored := publishEvent(t, js, st, s, "u1")
	e, err := trust.Published(stored.Sequence, stored.Subject, stored.Header, stored.Data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := events.ToMsg(e) // as the queue writes it
	if err != nil {
		t.Fatal(err)
	}
	again.Header.Set(events.SignatureHeader, stored.Header.Get(events.SignatureHeader))
	later := began.Add(time.Minute)
	if err := trust.VerifyDeadLetter(later, again.Header, again.Data); err != nil {
		t.Errorf("a dead letter of a signed event: %v", err)
	}
	again.Header.Del(events.SignatureHeader)
	if err := trust.VerifyDeadLetter(later, again.Header, again.Data); !errors.Is(err, events.ErrNotPublished) {
		t.Errorf("a dead letter without the signature: %v, want ErrNotPublished", err)
	}
	if err := trust.VerifyDeadLetter(time.Time{}, again.Header, again.Data); !errors.Is(err, events.ErrNotPublished) {
		t.Errorf("a dead letter without the signature, stored when is not known: %v, want ErrNotPublished", err)
	}
	if err := trust.VerifyDeadLetter(began.Add(-time.Hour), again.Header, again.Data); err != nil {
		t.Errorf("a dead letter stored before signing began: %v", err)
	}
}

// TestStreamKeepsEightSigningKeys: each new key of the front end's goes
// first, and the stream names the eight latest; dropping the oldest is
// said.
func TestStreamKeepsEightSigningKeys(t *testing.T) {
	ctx := context.Background()
	_, js := eventstest.Connect(t, eventstest.RunServer(t).ClientURL())
	var keys []string
	var out eventstest.Log
	for range 10 {
		s := newSigner(t)
		keys = append(keys, s.PublicKey())
		if _, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: s.PublicKey()}, slog.New(slog.NewTextHandler(&out, nil))); err != nil {
			t.Fatal(err)
		}
	}
	for i, key := range keys[:2] {
		if !strings.Contains(out.String(), "dropped="+key) {
			t.Errorf("dropping key %d of the first eight was not said:\n%s", i, out.String())
		}
	}
	if n := strings.Count(out.String(), "dropped="); n != 2 {
		t.Errorf("%d keys said dropped, want 2:\n%s", n, out.String())
	}
	// The same key again changes nothing.
	st, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: keys[9]}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(st.CachedInfo().Config.Metadata["scimrelay_signing_keys"])
	want := []string{keys[9], keys[8], keys[7], keys[6], keys[5], keys[4], keys[3], keys[2]}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the stream names %v, want the eight latest, newest first %v", got, want)
	}
}

// TestFrontEndsStartTogether: front ends sharing the stream that start at
// once, when it is not there yet, all start (one makes it, the others
// update it), and the stream names every one's key at the end: a key
// another's stale write took out was written again.
func TestFrontEndsStartTogether(t *testing.T) {
	ctx := context.Background()
	_, js := eventstest.Connect(t, eventstest.RunServer(t).ClientURL())
	errs := make(chan error, 4)
	var keys []string
	for range cap(errs) {
		key := newSigner(t).PublicKey()
		keys = append(keys, key)
		go func() {
			_, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: key}, slog.New(slog.DiscardHandler))
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatalf("a front end starting with others: %v", err)
		}
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	named := strings.Fields(st.CachedInfo().Config.Metadata["scimrelay_signing_keys"])
	for _, key := range keys {
		if !slices.Contains(named, key) {
			t.Errorf("the stream names %v, without front end key %s", named, key)
		}
	}
}

// TestRunningFrontEndKeepsItsKey: a write of the stream's keys that left a
// running front end's out (one stalled past ensureSigningKey's re-read)
// is undone within the check's interval, keeping the other's key and
// changing nothing else of the stream, and said; a failing check is said
// once, and the check stops with its context.
// keepSigningKey runs KeepSigningKey for key, checking every 20 ms and
// logging to out at Debug, until stop; done closes when it has returned
// (and the test's cleanup stops it and waits).
func keepSigningKey(t *testing.T, js jetstream.JetStream, key string, out *eventstest.Log) (stop context.CancelFunc, done <-chan struct{}) {
	ctx, stop := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		events.KeepSigningKey(ctx, js, func() string { return key }, 20*time.Millisecond, slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}()
	t.Cleanup(func() { stop(); <-ended })
	return stop, ended
}

// TestRunningFrontEndWritesBackWhatAnEarlierReleaseLeftOut: a front end
// of an earlier release writes the stream's configuration as it starts
// without atomic batches (the release before the last) or without the
// bound on consumers (the last; nats-server then holds the stream to
// 1,000); a running front end writes each back at its next check, said
// once at Warn, changing nothing else. Before, its events went one at a
// time, or the stream stayed at 1,000 consumers, until it started again.
func TestRunningFrontEndWritesBackWhatAnEarlierReleaseLeftOut(t *testing.T) {
	for _, c := range []struct {
		name    string
		leave   func(*jetstream.StreamConfig)
		back    func(jetstream.StreamConfig) bool
		warning string
	}{
		{"atomic batches", func(c *jetstream.StreamConfig) { c.AllowAtomicPublish = false },
			func(c jetstream.StreamConfig) bool { return c.AllowAtomicPublish }, "does not take atomic batches"},
		{"consumer bound", func(c *jetstream.StreamConfig) { c.MaxConsumers = 0 },
			func(c jetstream.StreamConfig) bool { return c.MaxConsumers >= 100_000 }, "did not bound its consumers"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			ns := eventstest.RunServer(t)
			_, js := eventstest.Connect(t, ns.ClientURL())
			mine := newSigner(t).PublicKey()
			if _, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: mine}, slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			cfg := streamConfig(t, js)
			if !c.back(cfg) {
				t.Fatalf("the stream a front end made lacks its %s", c.name)
			}
			c.leave(&cfg)
			cfg.MaxAge = 72 * time.Hour // a setting of its own
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			var out eventstest.Log
			stop, done := keepSigningKey(t, js, mine, &out)
			eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				st, err := js.Stream(ctx, events.StreamName)
				if err != nil {
					return err
				}
				if got := st.CachedInfo().Config; !c.back(got) || got.MaxAge != 72*time.Hour || got.Metadata["scimrelay_signing_keys"] != mine {
					return fmt.Errorf("%s back: %v, max age %s, keys %q: want it back and the rest as it was", c.name, c.back(got), got.MaxAge, got.Metadata["scimrelay_signing_keys"])
				}
				if !strings.Contains(out.String(), c.warning) { // said once written (the bound) or as it is written
					return fmt.Errorf("not said yet:\n%s", out.String())
				}
				return nil
			})
			stop()
			<-done
			if n := strings.Count(out.String(), c.warning); n != 1 {
				t.Errorf("said %d times, want once:\n%s", n, out.String())
			}
		})
	}
}

func TestRunningFrontEndKeepsItsKey(t *testing.T) {
	ctx := context.Background()
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, ns.ClientURL())
	mine, other := newSigner(t).PublicKey(), newSigner(t).PublicKey()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: mine}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	var out eventstest.Log
	stop, done := keepSigningKey(t, js, mine, &out)

	// The stale write: the other's key alone, and a setting of its own.
	cfg := streamConfig(t, js)
	cfg.Metadata["scimrelay_signing_keys"] = other
	cfg.MaxAge = 72 * time.Hour
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		if named := strings.Fields(st.CachedInfo().Config.Metadata["scimrelay_signing_keys"]); !slices.Equal(named, []string{mine, other}) {
			return fmt.Errorf("the stream names %v, want the running front end's key back before the other's", named)
		}
		return nil
	})
	if got := streamConfig(t, js); got.MaxAge != 72*time.Hour || got.Metadata["scimrelay_signed_from"] != cfg.Metadata["scimrelay_signed_from"] {
		t.Errorf("writing the key back changed the rest: max age %s, signed from %q; want 72h and %q", got.MaxAge, got.Metadata["scimrelay_signed_from"], cfg.Metadata["scimrelay_signed_from"])
	}
	if n := strings.Count(out.String(), "no longer names this front end's signing key"); n != 1 {
		t.Errorf("writing the key back said %d times, want once:\n%s", n, out.String())
	}

	// NATS gone: said once at Warn, however many checks fail.
	ns.Shutdown()
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := strings.Count(out.String(), "failed again"); n < 2 {
			return fmt.Errorf("%d checks failed again, want 2 at least", n)
		}
		return nil
	})
	if n := strings.Count(out.String(), "level=WARN msg=\"checking that the event stream names"); n != 1 {
		t.Errorf("failing checks said %d times at Warn, want once:\n%s", n, out.String())
	}
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the check did not stop with its context")
	}
}

// TestFrontEndOutwrittenAtStartSaysSo: a front end whose key other
// writes keep leaving out, round after round of its re-read, starts all
// the same (KeepSigningKey writes the key back later) and says so at Warn.
func TestFrontEndOutwrittenAtStartSaysSo(t *testing.T) {
	ctx := context.Background()
	_, js := eventstest.Connect(t, eventstest.RunServer(t).ClientURL())
	other := newSigner(t).PublicKey()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: other}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	stale := streamConfig(t, js)
	writeCtx, stop := context.WithCancel(ctx)
	wrote := make(chan error, 1)
	go func() { // another front end's stale write, again and again
		for writeCtx.Err() == nil {
			if _, err := js.UpdateStream(writeCtx, stale); err != nil && writeCtx.Err() == nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	var out eventstest.Log
	_, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: newSigner(t).PublicKey()}, slog.New(slog.NewTextHandler(&out, nil)))
	stop()
	if err != nil {
		t.Fatalf("a front end whose key others keep writing out did not start: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "level=WARN") || !strings.Contains(out.String(), "keep writing the event stream's signing keys without this one's") {
		t.Errorf("running out of rounds was not said at Warn:\n%s", out.String())
	}
}

// TestSignatureWireFormat: the signature is what README (Events) tells a
// subscriber of its own to check, byte for byte: the header
// "v1 <key> <signature>", both base64url without padding, and an Ed25519
// signature over the line scimrelay-event-signature-v1, a line
// "name: value" for every ce- header and content-type, names in lower
// case, sorted by name, an empty line, then the data; NATS's own headers
// left out. The text is written here by hand, as a subscriber in another
// language would, not with SignedForm.
func TestSignatureWireFormat(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	s, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("scimrelay.acme.user.created.u1.3")
	msg.Header.Set("Ce-Type", "dev.scimrelay.user.created")
	msg.Header.Set("ce-id", "0198f3c2-0000-7000-8000-000000000001")
	msg.Header.Set("Content-Type", "application/json")
	msg.Header.Set("Nats-Msg-Id", "0198f3c2-0000-7000-8000-000000000001")
	msg.Header.Set("ce-specversion", "1.0")
	msg.Data = []byte(`{"userName":"ann"}`)
	if err := s.Sign(msg); err != nil {
		t.Fatal(err)
	}
	want := "scimrelay-event-signature-v1\n" +
		"ce-id: 0198f3c2-0000-7000-8000-000000000001\n" +
		"ce-specversion: 1.0\n" +
		"ce-type: dev.scimrelay.user.created\n" +
		"content-type: application/json\n" +
		"\n" +
		`{"userName":"ann"}`
	parts := strings.Split(msg.Header.Get(events.SignatureHeader), " ")
	if len(parts) != 3 || parts[0] != "v1" {
		t.Fatalf("%s: %q, want v1 <key> <signature>", events.SignatureHeader, msg.Header.Get(events.SignatureHeader))
	}
	key := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	if parts[1] != base64.RawURLEncoding.EncodeToString(key) || parts[1] != s.PublicKey() {
		t.Errorf("the key in the header is %q, want the public key in base64url without padding", parts[1])
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatalf("the signature is not base64url without padding: %v", err)
	}
	if !ed25519.Verify(key, []byte(want), sig) {
		t.Errorf("the signature does not verify over the text README describes:\n%s", want)
	}
	if form, err := events.SignedForm(msg.Header, msg.Data); err != nil || string(form) != want {
		t.Errorf("SignedForm:\n%s\nwant:\n%s (%v)", form, want, err)
	}
}

// TestTrustOnItsOwnInboxPrefix: a reader whose NATS user may subscribe
// only under its own inbox prefix (nats.CustomInboxPrefix) reads the
// stream's keys and messages on a reply subject there; one under _INBOX.
// would be refused, and would push its operator to grant _INBOX.>, which
// shows every delivery to the relay's own workers.
func TestTrustOnItsOwnInboxPrefix(t *testing.T) {
	ctx := context.Background()
	s, js, st, signer := runSigningStream(t, &server.User{Username: "audit", Password: "audit-password", Permissions: &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.STREAM.INFO." + events.StreamName,
			"$JS.API.STREAM.MSG.GET." + events.StreamName,
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_audit.>"}},
	}})
	signed := publishEvent(t, js, st, signer, "u1")

	refused := make(chan error, 1)
	audit, err := nats.Connect(s.ClientURL(), nats.UserInfo("audit", "audit-password"), nats.CustomInboxPrefix("_INBOX_audit"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case refused <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(audit.Close)
	read, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	trust, err := events.NewTrust(read, audit)
	if err != nil {
		t.Fatalf("the trust of a reader on its own inbox prefix: %v", err)
	}
	if _, err := trust.Published(signed.Sequence, signed.Subject, signed.Header, signed.Data); err != nil {
		t.Errorf("a signed event: %v", err)
	}
	m, err := trust.StoredMsg(read, signed.Sequence, "")
	if err != nil || m.Sequence != signed.Sequence {
		t.Errorf("the stored event read on the reader's own inbox prefix: %v, %v", m, err)
	}
	if err := audit.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refused:
		t.Errorf("the reader was refused: %v", err)
	default:
	}
}

// TestRunningFrontEndOnAnAccountWithAConsumerLimitKeepsItsKey: on an
// account that refuses the stream's bound, the running front end still
// writes its signing key back, and stops asking for the bound: its later
// checks write the stream no more (with the refusal not remembered, each
// wrote it twice, once refused, every 5 s, from each front end).
func TestRunningFrontEndOnAnAccountWithAConsumerLimitKeepsItsKey(t *testing.T) {
	ctx := context.Background()
	ns := eventstest.RunServer(t)
	if err := ns.GlobalAccount().UpdateJetStreamLimits(map[string]server.JetStreamAccountLimits{
		"": {MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: 1000},
	}); err != nil {
		t.Fatal(err)
	}
	nc, js := eventstest.Connect(t, ns.ClientURL())
	mine, other := newSigner(t).PublicKey(), newSigner(t).PublicKey()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{SigningKey: mine}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	var checks, writes atomic.Int64
	sub, err := nc.Subscribe("$JS.API.STREAM.>", func(m *nats.Msg) {
		switch {
		case strings.HasPrefix(m.Subject, "$JS.API.STREAM.INFO."):
			checks.Add(1)
		case strings.HasPrefix(m.Subject, "$JS.API.STREAM.UPDATE."), strings.HasPrefix(m.Subject, "$JS.API.STREAM.CREATE."):
			writes.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var out eventstest.Log
	stop, done := keepSigningKey(t, js, mine, &out)
	cfg := streamConfig(t, js)
	cfg.Metadata = map[string]string{"scimrelay_signing_keys": other}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		if keys := st.CachedInfo().Config.Metadata["scimrelay_signing_keys"]; !strings.Contains(keys, mine) {
			return fmt.Errorf("keys %q: want %s written back", keys, mine)
		}
		return nil
	})
	// The bound was refused by now (asked for at the first check, the
	// key's or before it): thirty more checks write nothing.
	from, wrote := checks.Load(), writes.Load()
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := checks.Load() - from; n < 30 {
			return fmt.Errorf("%d checks so far", n)
		}
		return nil
	})
	stop()
	<-done
	if n := writes.Load() - wrote; n > 0 {
		t.Errorf("%d writes of the stream in %d checks after the key was back: want the refused bound not asked for again", n, checks.Load()-from)
	}
	if strings.Contains(out.String(), "checking that the event stream names this front end's signing key failed") {
		t.Errorf("the check failed:\n%s", out.String())
	}
}

// streamConfig reads the event stream's configuration as it is now.
func streamConfig(t *testing.T, js jetstream.JetStream) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config
}
