// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// subscriberConn connects as a subscriber with the seed file the CLI wrote.
type subscriberConn struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	closed  chan struct{}
	refused chan error
}

func connectSubscriber(t *testing.T, url, name, seedFile string) (*subscriberConn, error) {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &subscriberConn{closed: make(chan struct{}), refused: make(chan error, 16)}
	c.nc, err = nats.Connect(url, opt, nats.CustomInboxPrefix(natsbus.InboxPrefix(name)), nats.MaxReconnects(0),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.refused <- err
			}
		}))
	if err != nil {
		return nil, err
	}
	t.Cleanup(c.nc.Close)
	c.js, err = jetstream.New(c.nc)
	return c, err
}

// bindSubscriber connects as a subscriber and binds to the consumer the
// relay keeps for it.
func bindSubscriber(t *testing.T, url, name, seedFile string) (*subscriberConn, jetstream.Consumer) {
	t.Helper()
	sub, err := connectSubscriber(t, url, name, seedFile)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := sub.js.Consumer(t.Context(), events.StreamName, name)
	if err != nil {
		t.Fatal(err)
	}
	return sub, cons
}

// wantCutOff waits for sub's connection to close, and checks that the
// subscriber name can no longer connect with its seed.
func wantCutOff(t *testing.T, sub *subscriberConn, url, name, seedFile string) {
	t.Helper()
	select {
	case <-sub.closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("subscriber %s is still connected", name)
	}
	if _, err := connectSubscriber(t, url, name, seedFile); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("subscriber %s connecting: %v, want it refused", name, err)
	}
}

// next reads the consumer's next event and acknowledges it; "" when none comes within a second.
func next(t *testing.T, cons jetstream.Consumer) string {
	t.Helper()
	m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
	if errors.Is(err, nats.ErrTimeout) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(t.Context()); err != nil {
		t.Fatal(err)
	}
	e, err := events.FromMsg(m.Subject(), m.Headers(), m.Data())
	if err != nil {
		t.Fatal(err)
	}
	d, err := events.DataOf(e)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		UserName string `json:"userName"`
	}
	_ = json.Unmarshal(d.Resource, &r)
	stored, err := events.ParseStoredSubject(m.Subject())
	if err != nil {
		t.Fatal(err)
	}
	return "scimrelay." + stored.Tenant + "." + string(stored.Action) + " " + r.UserName // without id and partition
}

// TestSubscriberCLI: a subscriber the CLI creates reads its tenant's
// events with a durable consumer that resumes after a restart of the relay;
// it cannot forge an event (the webhook receives only what the relay
// wrote); removing it cuts it off at once.
func TestSubscriberCLI(t *testing.T) {
	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.Listen = fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	cliCfg := cliConfig(t, p, adminSecret)
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "billing.nk")

	code, out, stderr := cli(t, "subscriber", "add", "billing", "--subjects", "scimrelay.acme.user.>", "--out", seedFile, "--config", cliCfg)
	if code != exitOK {
		t.Fatalf("subscriber add: %d %s %s", code, out, stderr)
	}
	url := "nats://" + cfg.NATS.Listen
	for _, want := range []string{url, "nats.NkeyOptionFromSeed(\"" + seedFile + "\")", "--nkey " + seedFile, "_INBOX_billing", `"billing"`} {
		if !strings.Contains(out, want) {
			t.Errorf("subscriber add does not say %q:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(seedFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v %v", fi, err)
	}
	seed, _ := os.ReadFile(seedFile)
	if strings.Contains(out+stderr, strings.TrimSpace(string(seed))) {
		t.Fatal("the seed was printed besides being written")
	}
	// --stdout prints the seed alone.
	code, out, stderr = cli(t, "subscriber", "add", "audit", "--stdout", "--config", cliCfg)
	if code != exitOK || !strings.HasPrefix(out, "SU") || strings.Count(out, "\n") != 1 || !strings.Contains(stderr, "audit") {
		t.Fatalf("subscriber add --stdout: %d %q %q", code, out, stderr)
	}
	// Mistakes are refused and leave no seed file behind.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"subscriber", "add", "billing", "--from", "new", "--out", filepath.Join(dir, "again.nk")}, exitError},         // its consumer started from all
		{[]string{"subscriber", "add", "late", "--from", "tomorrow", "--out", filepath.Join(dir, "late.nk")}, exitUsage},        // all or new
		{[]string{"subscriber", "add", "Bad Name", "--out", filepath.Join(dir, "bad.nk")}, exitUsage},                           // syntax
		{[]string{"subscriber", "add", "scimrelay-sink-crm", "--out", filepath.Join(dir, "sink.nk")}, exitUsage},                // the relay's own
		{[]string{"subscriber", "add", "wide", "--subjects", "scimrelay.*", "--out", filepath.Join(dir, "wide.nk")}, exitUsage}, // matches nothing
		{[]string{"subscriber", "add", "ho", "--subjects", "scimrelay.ho.>", "--out", filepath.Join(dir, "ho.nk")}, exitUsage},  // no such tenant
	} {
		args := c.args
		code, _, stderr := cli(t, append(args, "--config", cliCfg)...)
		if code != c.code || stderr == "" {
			t.Fatalf("%v: code %d, want %d: %s", args, code, c.code, stderr)
		}
		if _, err := os.Stat(args[len(args)-1]); !os.IsNotExist(err) {
			t.Fatalf("%v left its seed file", args)
		}
	}
	code, out, _ = cli(t, "subscriber", "list", "--json", "--config", cliCfg)
	var list []admin.SubscriberInfo
	if code != exitOK || !oneObjectPerLine(out) || jsonLines(out, &list) != nil || len(list) != 2 || list[1].Name != "billing" || list[1].Subjects != "scimrelay.acme.user.>" || list[1].From != "all" {
		t.Fatalf("subscriber list: %d %s", code, out)
	}
	code, out, _ = cli(t, "subscriber", "list", "--config", cliCfg)
	if code != exitOK || !strings.Contains(out, "scimrelay.acme.user.>") || !strings.Contains(out, list[1].PublicKey) {
		t.Fatalf("subscriber list: %d %s", code, out)
	}

	// It reads acme's user events, nothing else, with the durable
	// consumer the relay made.
	sub, cons := bindSubscriber(t, url, "billing", seedFile)
	newUser := func(p *relayProc, tenant, token, name string) {
		p.scim(tenant, token, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`).want(t, 201)
	}
	newUser(p, "globex", globexToken, "gina")
	newUser(p, "acme", acmeToken, "ann")
	if got := next(t, cons); got != "scimrelay.acme.user.created ann" {
		t.Fatalf("read %q", got)
	}
	if got := next(t, cons); got != "" {
		t.Fatalf("read %q, which is not its tenant's", got)
	}
	// Nobody else gets in at all.
	if nc, err := nats.Connect(url, nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("an unauthenticated client: %v", err)
	}
	// A forged event, and every way to tamper with what the webhook gets,
	// are refused; the webhook gets only the two events the relay wrote.
	for _, subject := range []string{
		"scimrelay.acme.user.deleted",                            // a forged event
		"$JS.API.STREAM.PURGE.SCIMRELAY",                         // purge the events
		"$JS.API.STREAM.DELETE.SCIMRELAY",                        // delete them
		"$JS.API.STREAM.DELETE.KV_scimrelay-sink-crm",            // the sink's bucket
		"$KV.scimrelay-sink-crm.cursor",                          // write into it
		"$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY.scimrelay-sink-crm", // take the sink's deliveries
	} {
		if err := sub.nc.Publish(subject, []byte(`{"forged":true}`)); err != nil {
			t.Fatal(err)
		}
		_ = sub.nc.Flush()
		select {
		case err := <-sub.refused:
			if !strings.Contains(err.Error(), subject) {
				t.Fatalf("%s: refused %v", subject, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not refused", subject)
		}
	}
	waitDelivered(t, h, 2)
	readStream(t, p.srv.js, 2) // exactly the relay's two events: nothing forged got in
	if got := h.received(); len(got) != 2 || strings.Contains(strings.Join(got, ","), "deleted") {
		t.Fatalf("the webhook received %v", got)
	}

	// After a restart of the relay it reconnects and resumes where it was.
	sub.nc.Close()
	p.stop()
	p = startRelay(t, cfg, roleAll)
	cliCfg = cliConfig(t, p, adminSecret) // the admin listener has a new port
	newUser(p, "acme", acmeToken, "bob")
	sub, cons = bindSubscriber(t, url, "billing", seedFile)
	if got := next(t, cons); got != "scimrelay.acme.user.created bob" {
		t.Fatalf("after the restart read %q, want the event after the last acknowledged one", got)
	}

	// Removing it closes its connection at once and deletes its consumer.
	code, out, _ = cli(t, "subscriber", "remove", "billing", "--config", cliCfg)
	if code != exitOK || !strings.Contains(out, "removed subscriber billing") {
		t.Fatalf("subscriber remove: %d %s", code, out)
	}
	wantCutOff(t, sub, url, "billing", seedFile)
	if _, err := p.srv.js.Consumer(t.Context(), events.StreamName, "billing"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("its consumer is still there: %v", err)
	}
	if code, _, stderr := cli(t, "subscriber", "remove", "billing", "--config", cliCfg); code != exitError || !strings.Contains(stderr, "no such subscriber") {
		t.Fatalf("removing it twice: %d %s", code, stderr)
	}
}

// TestSubscriberFromAndAddAgain: `subscriber add --from new` is kept with
// the subscriber and shown by list, and its consumer does not deliver an
// event stored before the add. Adding it again with other --subjects gives
// it the new key, keeps where its consumer started, and updates the
// consumer's filter in place: what it acknowledged is not delivered again.
// A --from other than all or new is a usage error.
// startSubscriberRelay starts a relay on dataDir whose embedded NATS
// listens for subscribers, and returns its configuration and the
// relay.yaml its CLI reads.
func startSubscriberRelay(t *testing.T, dataDir string) (*config.Config, *relayProc, string) {
	t.Helper()
	cfg := testConfig(t, dataDir)
	cfg.NATS.Listen = fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	p := startRelay(t, cfg, roleAll)
	return cfg, p, cliConfig(t, p, adminSecret)
}

func TestSubscriberFromAndAddAgain(t *testing.T) {
	cfg, p, cliCfg := startSubscriberRelay(t, t.TempDir())
	dir := t.TempDir()
	url := "nats://" + cfg.NATS.Listen
	newUser := func(name string) {
		p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`).want(t, 201)
	}
	newUser("ann")
	readStream(t, p.srv.js, 1)

	bad := filepath.Join(dir, "bad.nk")
	if code, _, stderr := cli(t, "subscriber", "add", "late", "--from", "yesterday", "--out", bad, "--config", cliCfg); code != exitUsage || !strings.Contains(stderr, "--from") {
		t.Fatalf("subscriber add --from yesterday: %d %s", code, stderr)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatal("a refused add left its seed file")
	}
	first := filepath.Join(dir, "late.nk")
	if code, out, stderr := cli(t, "subscriber", "add", "late", "--subjects", "scimrelay.acme.>", "--from", "new", "--out", first, "--config", cliCfg); code != exitOK || !strings.Contains(out, "from new") {
		t.Fatalf("subscriber add --from new: %d %s %s", code, out, stderr)
	}
	list := func() admin.SubscriberInfo {
		t.Helper()
		code, out, _ := cli(t, "subscriber", "list", "--json", "--config", cliCfg)
		var list []admin.SubscriberInfo
		if code != exitOK || jsonLines(out, &list) != nil || len(list) != 1 {
			t.Fatalf("subscriber list: %d %s", code, out)
		}
		if code, out, _ := cli(t, "subscriber", "list", "--config", cliCfg); code != exitOK || !strings.Contains(out, "FROM") || !strings.Contains(out, " new ") {
			t.Fatalf("subscriber list does not show where the consumer started: %s", out)
		}
		return list[0]
	}
	if got := list(); got.From != "new" || got.Subjects != "scimrelay.acme.>" {
		t.Fatalf("subscriber list: %+v", got)
	}
	sub, cons := bindSubscriber(t, url, "late", first)
	if got := next(t, cons); got != "" {
		t.Fatalf("--from new read %q, stored before the add", got)
	}
	newUser("bob")
	if got := next(t, cons); got != "scimrelay.acme.user.created bob" {
		t.Fatalf("read %q", got)
	}

	// Added again without --replace: refused, and the running key stays
	// (a script adding it twice must not cut its service off).
	refused := filepath.Join(dir, "late-refused.nk")
	if code, _, stderr := cli(t, "subscriber", "add", "late", "--out", refused, "--config", cliCfg); code != exitError || !strings.Contains(stderr, "add it again with --replace") {
		t.Fatalf("subscriber add of a name there, without --replace: %d %s", code, stderr)
	}
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Fatal("a refused add left its seed file")
	}
	select {
	case <-sub.closed:
		t.Fatal("a refused add cut the subscriber's key off")
	default:
	}

	// Added again with --replace, limited to users: the old key is cut
	// off, the consumer keeps its position with the new filter.
	second := filepath.Join(dir, "late-2.nk")
	code, out, stderr := cli(t, "subscriber", "add", "late", "--replace", "--subjects", "scimrelay.acme.user.>", "--out", second, "--config", cliCfg)
	if code != exitOK || !strings.Contains(out, "keeps its position") {
		t.Fatalf("subscriber add again: %d %s %s", code, out, stderr)
	}
	if got := list(); got.From != "new" || got.Subjects != "scimrelay.acme.user.>" {
		t.Fatalf("subscriber list after adding again: %+v", got)
	}
	select {
	case <-sub.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the old key is still connected")
	}
	if _, err := p.srv.js.Consumer(t.Context(), events.StreamName, "late"); err != nil {
		t.Fatal(err)
	}
	p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"ops"}`).want(t, 201)
	newUser("carl")
	_, cons = bindSubscriber(t, url, "late", second)
	if f := cons.CachedInfo().Config.FilterSubject; f != "scimrelay.acme.user.>" {
		t.Fatalf("the consumer's filter is %q", f)
	}
	if got := next(t, cons); got != "scimrelay.acme.user.created carl" {
		t.Fatalf("after adding again read %q, want the next user event only", got)
	}

	// A new key alone (no --subjects) keeps the subjects: rotating a
	// limited subscriber's key must not widen what it reads. --subjects ''
	// widens it, said outright.
	third := filepath.Join(dir, "late-3.nk")
	if code, out, stderr := cli(t, "subscriber", "add", "late", "--replace", "--out", third, "--config", cliCfg); code != exitOK {
		t.Fatalf("subscriber add again without --subjects: %d %s %s", code, out, stderr)
	}
	if got := list(); got.Subjects != "scimrelay.acme.user.>" {
		t.Fatalf("a new key without --subjects changed the subjects to %q", got.Subjects)
	}
	fourth := filepath.Join(dir, "late-4.nk")
	if code, out, stderr := cli(t, "subscriber", "add", "late", "--replace", "--subjects", "", "--out", fourth, "--config", cliCfg); code != exitOK {
		t.Fatalf("subscriber add again with --subjects '': %d %s %s", code, out, stderr)
	}
	if got := list(); got.Subjects != "" {
		t.Fatalf("--subjects '' left the subjects %q", got.Subjects)
	}
}

// TestSubscriberExternalNATS: with an external NATS the relay manages no
// subscribers, and says so.
func TestSubscriberExternalNATS(t *testing.T) {
	ns := eventstest.RunServer(t)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = ns.ClientURL()
	p := startRelay(t, cfg, roleAll)
	cliCfg := cliConfig(t, p, adminSecret)
	seed := filepath.Join(t.TempDir(), "x.nk")
	code, _, stderr := cli(t, "subscriber", "add", "billing", "--out", seed, "--config", cliCfg)
	if code != exitError || !strings.Contains(stderr, "external NATS") {
		t.Fatalf("subscriber add: %d %s", code, stderr)
	}
	if _, err := os.Stat(seed); !os.IsNotExist(err) {
		t.Fatal("a refused add left its seed file")
	}
	if code, _, stderr := cli(t, "subscriber", "list", "--config", cliCfg); code != exitError || !strings.Contains(stderr, "external NATS") {
		t.Fatalf("subscriber list: %d %s", code, stderr)
	}
}

// TestFailingSubscriberDoesNotHoldUpTheOthers: a subscriber whose consumer
// JetStream cannot write (a storage fault of that one consumer) is
// refused alone: adding and removing other subscribers works, and the
// relay starts again with it refused (it used to fail every change of
// subscribers and stop the relay from starting).
func TestFailingSubscriberDoesNotHoldUpTheOthers(t *testing.T) {
	dir := t.TempDir()
	cfg, p, cliCfg := startSubscriberRelay(t, dir)
	seeds := t.TempDir()
	add := func(args ...string) (int, string) {
		t.Helper()
		code, _, stderr := cli(t, append(append([]string{"subscriber", "add"}, args...), "--out", filepath.Join(seeds, fmt.Sprint(time.Now().UnixNano(), ".nk")), "--config", cliCfg)...)
		return code, stderr
	}
	for _, name := range []string{"good", "bad"} {
		if code, stderr := add(name); code != exitOK {
			t.Fatalf("subscriber add %s: %d %s", name, code, stderr)
		}
	}
	metas, err := filepath.Glob(filepath.Join(cfg.NATSDir(), "jetstream", "*", "streams", events.StreamName, "obs", "bad", "meta.inf"))
	if err != nil || len(metas) != 1 {
		t.Fatalf("bad's meta.inf: %v %v", metas, err)
	}
	if err := os.Rename(metas[0], metas[0]+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(metas[0], "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if code, stderr := add("bad", "--replace", "--subjects", "scimrelay.acme.>"); code == exitOK {
		t.Fatalf("replacing bad, whose consumer cannot be written, succeeded: %s", stderr)
	}
	if code, stderr := add("other"); code != exitOK {
		t.Fatalf("adding another subscriber while bad is refused: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "subscriber", "remove", "good", "--config", cliCfg); code != exitOK {
		t.Fatalf("removing another subscriber while bad is refused: %d %s", code, stderr)
	}
	if _, err := p.srv.js.Consumer(t.Context(), events.StreamName, "good"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("good removed, its consumer: %v", err)
	}
	p.stop()
	p = startRelay(t, testConfig(t, dir), roleAll)
	if _, err := p.srv.js.Consumer(t.Context(), events.StreamName, "other"); err != nil {
		t.Fatalf("after a start with bad refused, other's consumer: %v", err)
	}
}

// TestAddOverALeftoverConsumer: a consumer of the name already on the
// stream (a removal that could not delete it) is not deleted by an add
// that fails, keeping its position; and an add with --from new, which it
// could not honour over it, is refused saying how to start afresh.
func TestAddOverALeftoverConsumer(t *testing.T) {
	_, p, cliCfg := startSubscriberRelay(t, t.TempDir())
	ctx := t.Context()
	if _, err := p.srv.js.CreateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "left", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	seeds := t.TempDir()
	add := func(args ...string) (int, string) {
		t.Helper()
		code, _, stderr := cli(t, append(append([]string{"subscriber", "add", "left"}, args...), "--out", filepath.Join(seeds, fmt.Sprint(time.Now().UnixNano(), ".nk")), "--config", cliCfg)...)
		return code, stderr
	}
	// The relay's account allowing fewer unacknowledged messages than the
	// relay's consumers keep: the update of the leftover fails.
	account := p.srv.natsServer.Server().GlobalAccount()
	if err := account.UpdateJetStreamLimits(map[string]natsserver.JetStreamAccountLimits{
		"": {MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: -1, MaxAckPending: 100},
	}); err != nil {
		t.Fatal(err)
	}
	if code, stderr := add(); code == exitOK {
		t.Fatalf("an add whose consumer update JetStream refused succeeded: %s", stderr)
	}
	if _, err := p.srv.js.Consumer(ctx, events.StreamName, "left"); err != nil {
		t.Fatalf("the failed add took the leftover consumer with it: %v", err)
	}
	if err := account.UpdateJetStreamLimits(nil); err != nil {
		t.Fatal(err)
	}
	if code, stderr := add("--from", "new"); code != exitError || !strings.Contains(stderr, "then add it with --from new") {
		t.Fatalf("subscriber add --from new over a leftover consumer: %d %s", code, stderr)
	}
	if code, stderr := add(); code != exitOK {
		t.Fatalf("subscriber add over a leftover consumer, adopting it: %d %s", code, stderr)
	}
}
