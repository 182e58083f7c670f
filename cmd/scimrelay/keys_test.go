// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// forgeWith publishes, as the front end's NATS user, an event for user id
// signed with signer, and returns its event id.
func forgeWith(t *testing.T, js jetstream.JetStream, signer *events.Signer, id string) string {
	t.Helper()
	e := eventstest.Event(t, "acme", events.UserCreated, id, 1, 1)
	msg, err := events.ToMsg(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.Sign(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		t.Fatal(err)
	}
	return e.ID()
}

// lastSeq is the event stream's last sequence.
func lastSeq(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}

// awaitDeadLetter waits for sink crm's dead letter of event id and
// returns its error.
func awaitDeadLetter(t *testing.T, p *relayProc, id string) string {
	t.Helper()
	var why string
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		page, err := p.srv.sinks.DeadLetters(context.Background(), "crm", "", 100)
		if err != nil {
			return err
		}
		for _, dl := range page.DeadLetters {
			if dl.ID == id {
				why = dl.Error
				return nil
			}
		}
		return fmt.Errorf("no dead letter of event %s among %d", id, len(page.DeadLetters))
	})
	return why
}

// TestKeysRotateEvents: scimrelay keys rotate events on a running front
// end gives it a new key and retires the old one at the stream's last
// sequence. Every event the front end published, before the rotation and
// after, reaches the webhook in order, the one the old key signed and the
// stream stored before the rotation among them (delivered by a worker
// started after it); an event forged with the old key and published after
// the rotation is dead-lettered as signed by a retired key, never
// delivered: by a worker started after the rotation, and by one that ran
// through a second rotation, whose keys were read before it.
func TestKeysRotateEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM, withKeyCheck(50*time.Millisecond))
	workerCfg := onNATSAs(t, ns, "worker", "worker-secret", h)
	worker := startRelay(t, workerCfg, roleSinks, withKeyWait(200*time.Millisecond))
	cfg := cliConfig(t, front, adminSecret)
	_, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://front:front-secret@", 1))

	front.createUser(t, "ann")
	front.createUser(t, "bob")
	waitDelivered(t, h, 2)
	old := front.srv.signer.PublicKey()
	oldSigner, err := events.NewSigner(front.srv.store.EventSigningSeed())
	if err != nil {
		t.Fatal(err)
	}
	// Stored before the rotation, delivered after it.
	worker.stop()
	front.createUser(t, "carl")
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := lastSeq(t, js); n != 3 {
			return fmt.Errorf("the stream holds %d events, want 3", n)
		}
		return nil
	})

	code, out, stderr := cli(t, "keys", "rotate", "events", "--config", cfg)
	if code != exitOK {
		t.Fatalf("keys rotate events: code %d, %s", code, stderr)
	}
	rotated := front.srv.signer.PublicKey()
	if rotated == old || !strings.Contains(out, "new key "+rotated) || !strings.Contains(out, "retired "+old+": it verifies the events stored up to stream sequence 3 ") {
		t.Fatalf("keys rotate events printed %q; want the new key and %s retired at sequence 3", out, old)
	}
	front.createUser(t, "dave")
	forged := forgeWith(t, js, oldSigner, "eve")
	front.createUser(t, "fay")

	worker = startRelay(t, workerCfg, roleSinks, withKeyWait(200*time.Millisecond))
	waitDelivered(t, h, 5) // ann, bob, carl, dave, fay
	if why := awaitDeadLetter(t, worker, forged); !strings.Contains(why, "retired at stream sequence 3") {
		t.Errorf("the forged event was dead-lettered with %q; want its key named retired", why)
	}

	// A worker running through a rotation: its keys were read before it,
	// and the key retired is the one that signed what it delivered last.
	rotatedSigner, err := events.NewSigner(front.srv.store.EventSigningSeed())
	if err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, "keys", "rotate", "events", "--config", cfg); code != exitOK {
		t.Fatalf("keys rotate events again: code %d, %s", code, stderr)
	}
	forged2 := forgeWith(t, js, rotatedSigner, "gus")
	// Refused before anything signed by the new key has the worker read
	// the keys again for it.
	awaitDeadLetter(t, worker, forged2)
	front.createUser(t, "hal")
	waitDelivered(t, h, 6)
	if v := h.orderViolation(); v != "" {
		t.Fatal(v)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ids[forged] != 0 || h.ids[forged2] != 0 {
		t.Errorf("an event forged with a retired key reached the webhook: %v", h.ids)
	}
}

// TestRestoredDataFileTakesNewKey: a front end started on a data file from
// before keys rotate events (a backup restored) finds its key retired: it
// signs with a new key instead, stored in the data file, says so at Warn,
// and its events are delivered.
func TestRestoredDataFileTakesNewKey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	c := onNATSAs(t, ns, "front", "front-secret", h)
	front := startRelay(t, c, roleSCIM)
	old := front.srv.signer.PublicKey()
	front.stop()
	backup, err := os.ReadFile(c.DBPath())
	if err != nil {
		t.Fatal(err)
	}
	front = startRelay(t, c, roleSCIM)
	if code, _, stderr := cli(t, "keys", "rotate", "events", "--config", cliConfig(t, front, adminSecret)); code != exitOK {
		t.Fatalf("keys rotate events: code %d, %s", code, stderr)
	}
	rotated := front.srv.signer.PublicKey()
	front.stop()
	if err := os.WriteFile(c.DBPath(), backup, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs eventstest.Log
	front = startRelayWith(t, c, roleSCIM, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})), io.Discard)
	key := front.srv.signer.PublicKey()
	if key == old || key == rotated {
		t.Fatalf("the restored front end signs with %s; want a new key, not the retired %s nor %s", key, old, rotated)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "key is retired in the event stream") || !strings.Contains(logs.String(), "retired="+old) {
		t.Errorf("taking a new key was not said at Warn:\n%s", logs.String())
	}
	_, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://front:front-secret@", 1))
	named := strings.Fields(eventstest.StreamMetadata(t, js)["scimrelay_signing_keys"])
	if !slices.Contains(named, key) || slices.Contains(named, old) {
		t.Errorf("the stream names %v; want the new key %s, not the retired %s", named, key, old)
	}
	front.stop()
	front = startRelay(t, c, roleSCIM)
	if again := front.srv.signer.PublicKey(); again != key {
		t.Errorf("restarted, the front end signs with %s; want the key it took, %s, kept in the data file", again, key)
	}
	startRelay(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks)
	front.createUser(t, "ann")
	waitDelivered(t, h, 1)

	// The retirement aged out (nothing the key signed left in the stream
	// nor as a dead letter): the stream no longer lists it with a bound,
	// but among the keys dropped, as a later rotation writes it. The
	// backup restored then still takes a new key.
	front.stop()
	ctx := context.Background()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	retired := strings.Fields(cfg.Metadata["scimrelay_retired_keys"])
	if len(retired) == 0 || !strings.HasPrefix(retired[len(retired)-1], old+":") {
		t.Fatalf("the stream lists %v as retired; want %s, the oldest, among them", retired, old)
	}
	cfg.Metadata["scimrelay_retired_keys"] = strings.Join(retired[:len(retired)-1], " ")
	cfg.Metadata["scimrelay_dropped_keys"] = old
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.DBPath(), backup, 0o600); err != nil {
		t.Fatal(err)
	}
	front = startRelay(t, c, roleSCIM)
	if again := front.srv.signer.PublicKey(); again == old {
		t.Fatalf("restored after its retirement aged out, the front end signs with the dropped key %s again", old)
	}
	if named := strings.Fields(eventstest.StreamMetadata(t, js)["scimrelay_signing_keys"]); slices.Contains(named, old) {
		t.Errorf("the stream names the dropped key %s again: %v", old, named)
	}
	// keys list and the console's Keys page show it among the dropped.
	code, out, stderr := cli(t, "keys", "list", "--config", cliConfig(t, front, adminSecret))
	if code != exitOK || !regexp.MustCompile(`(?m)^dropped +`+old+`: retired and dropped; verifies nothing and is never named again$`).MatchString(out) {
		t.Errorf("keys list: code %d, %s %s; want %s dropped", code, out, stderr, old)
	}
	var listed admin.KeysInfo
	if code, out, _ := cli(t, "keys", "list", "--json", "--config", cliConfig(t, front, adminSecret)); code != exitOK || json.Unmarshal([]byte(out), &listed) != nil ||
		listed.Events.Stream == nil || !slices.Equal(listed.Events.Stream.Dropped, []string{old}) {
		t.Errorf("keys list --json: code %d, %s; want %s dropped", code, out, old)
	}
	b := newBrowser(t, front)
	b.signIn(adminSecret).redirect(t, "/ui/")
	b.get("/ui/keys").want(t, http.StatusOK, "<caption>Keys dropped once nothing they signed was left", "<tr><td><code>"+old+"</code></td></tr>")
}

// TestCLIKeys: keys list and keys rotate oauth on a relay with NATS
// embedded: the list says events are not signed and names the
// access-token key, never a secret; a rotation keeps the old key's access
// tokens working for the overlap (by default the tokens' lifetime) and
// --overlap 0 refuses them at once, while new ones work; each rotation is
// in the audit trail. Mistakes are usage errors, and rotate events says
// there is nothing to rotate.
func TestCLIKeys(t *testing.T) {
	clock := newTestClock()
	var logs eventstest.Log
	p := startRelayWith(t, testConfig(t, t.TempDir()), roleAll, slog.New(slog.NewTextHandler(&logs, nil)), io.Discard, withClock(clock.now))
	cfg := cliConfig(t, p, adminSecret)
	cl := createClient(t, p, "acme")
	first := p.tokenRequest("acme", grant(), cl.id+":"+cl.secret).accessToken(t)
	p.scim("acme", first, "GET", "/Users", "").want(t, 200)

	code, out, stderr := cli(t, "keys", "list", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "none: NATS embedded, events are not signed") || !strings.Contains(out, "access-token key") {
		t.Fatalf("keys list: code %d, %q %s", code, out, stderr)
	}
	code, out, _ = cli(t, "keys", "list", "--json", "--config", cfg)
	var listed struct{ OAuth struct{ ID string } }
	if code != exitOK || jsonLines(out, &[]any{}) != nil || !oneObjectPerLine(out) {
		t.Fatalf("keys list --json: code %d, %q", code, out)
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.OAuth.ID) != 12 {
		t.Fatalf("keys list --json: %q, %v", out, err)
	}

	code, out, stderr = cli(t, "keys", "rotate", "oauth", "--config", cfg)
	until := clock.now().Add(time.Hour).Local().Format(time.RFC3339)
	if code != exitOK || !strings.Contains(out, "access tokens of the old key "+listed.OAuth.ID+" are accepted until "+until) {
		t.Fatalf("keys rotate oauth: code %d, %q %s; want the old key accepted until %s", code, out, stderr, until)
	}
	p.scim("acme", first, "GET", "/Users", "").want(t, 200) // inside the overlap
	second := p.tokenRequest("acme", grant(), cl.id+":"+cl.secret).accessToken(t)
	p.scim("acme", second, "GET", "/Users", "").want(t, 200)

	code, out, stderr = cli(t, "keys", "rotate", "oauth", "--overlap", "0", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "refused from now on") {
		t.Fatalf("keys rotate oauth --overlap 0: code %d, %q %s", code, out, stderr)
	}
	p.scim("acme", second, "GET", "/Users", "").want(t, 401)
	p.scim("acme", first, "GET", "/Users", "").want(t, 401)
	third := p.tokenRequest("acme", grant(), cl.id+":"+cl.secret).accessToken(t)
	p.scim("acme", third, "GET", "/Users", "").want(t, 200)
	if n := strings.Count(logs.String(), "action=key.rotate kind=oauth"); n != 2 {
		t.Errorf("%d key rotations in the audit trail, want 2:\n%s", n, logs.String())
	}

	if code, _, stderr := cli(t, "keys", "rotate", "events", "--config", cfg); code != exitError || !strings.Contains(stderr, "nothing to rotate: NATS is embedded") {
		t.Errorf("keys rotate events with NATS embedded: code %d, %s", code, stderr)
	}
	for _, bad := range [][]string{{"rotate"}, {"rotate", "ssh"}, {"rotate", "events", "--overlap", "1h"}, {"rotate", "oauth", "--overlap", "soon"}, {"rotate", "oauth", "--overlap", "48h"}} {
		code, _, stderr := cli(t, append(append([]string{"keys"}, bad...), "--config", cfg)...)
		if code != exitUsage || (bad[len(bad)-1] == "ssh" && !strings.Contains(stderr, `unknown key "ssh": rotate events or oauth`)) {
			t.Errorf("keys %v: code %d, %s; want a usage error", bad, code, stderr)
		}
	}
}

// TestKeysRotateEventsRedrive: the dead letters of events the old key
// signed and the stream stored before the rotation are redriven after
// it: one its queue stored before the rotation, by when it stored it, and
// one it stored after (the worker met the event after the rotation), by
// the stream's copy at the sequence it came from, within the retired key's
// bound.
func TestKeysRotateEventsRedrive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h, gone := goneHook(t)
	front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM, withKeyCheck(50*time.Millisecond))
	workerCfg := onNATSAs(t, ns, "worker", "worker-secret", h)
	worker := startRelay(t, workerCfg, roleSinks)
	cfg := cliConfig(t, front, adminSecret)
	_, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://front:front-secret@", 1))
	deadLetters := func(n int) {
		t.Helper()
		eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			page, err := front.srv.sinks.DeadLetters(context.Background(), "crm", "", 10)
			if err != nil || len(page.DeadLetters) != n {
				return fmt.Errorf("%d dead letters (%v), want %d", len(page.DeadLetters), err, n)
			}
			return nil
		})
	}
	front.createUser(t, "ann") // refused for good, dead-lettered before the rotation
	deadLetters(1)
	worker.stop()
	front.createUser(t, "bob") // stored before the rotation, dead-lettered after
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := lastSeq(t, js); n != 2 {
			return fmt.Errorf("the stream holds %d events, want 2", n)
		}
		return nil
	})
	if code, _, stderr := cli(t, "keys", "rotate", "events", "--config", cfg); code != exitOK {
		t.Fatalf("keys rotate events: code %d, %s", code, stderr)
	}
	startRelay(t, workerCfg, roleSinks)
	deadLetters(2)
	gone.Store(false)
	if code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", cfg); code != exitOK || !strings.Contains(out, "delivered 2") {
		t.Fatalf("dlq redrive: code %d, %q %s; want both delivered", code, out, stderr)
	}
	waitDelivered(t, h, 2)
}

// TestCutShortRotationFinishedAtStart: a front end that stopped after a
// rotation stored its new key, before it retired the old one (a crash),
// retires the old one when it starts again, before it publishes, and
// signs with the new key.
func TestCutShortRotationFinishedAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	c := onNATSAs(t, ns, "front", "front-secret", newHook(t))
	front := startRelay(t, c, roleSCIM)
	old := front.srv.signer.PublicKey()
	if _, err := front.srv.store.RotateEventSigningSeed(old); err != nil { // the rotation's first step, and no other
		t.Fatal(err)
	}
	front.stop()
	front = startRelay(t, c, roleSCIM)
	_, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://front:front-secret@", 1))
	meta := eventstest.StreamMetadata(t, js)
	key := front.srv.signer.PublicKey()
	if key == old || strings.Fields(meta["scimrelay_signing_keys"])[0] != key || !strings.HasPrefix(meta["scimrelay_retired_keys"], old+":") || slices.Contains(strings.Fields(meta["scimrelay_signing_keys"]), old) {
		t.Fatalf("after the restart the front end signs with %s, and the stream names %q and retired %q; want %s retired and a new key named", key, meta["scimrelay_signing_keys"], meta["scimrelay_retired_keys"], old)
	}
	if left, err := front.srv.store.EventKeysRetiring(); err != nil || len(left) != 0 {
		t.Errorf("keys still to retire: %v, %v; want none", left, err)
	}
}
