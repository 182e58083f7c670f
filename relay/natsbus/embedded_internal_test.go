// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestRelayCredentialStaysInProcess: the relay's own nkey, which may do
// anything, works only in-process, and its seed is written nowhere.
func TestRelayCredentialStaysInProcess(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	dir := t.TempDir()
	e, err := StartEmbedded(Options{Listen: addr, StoreDir: dir}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := Connect(Options{}, e, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("in-process: %v", err)
	}
	nc.Close()
	pub, _ := e.relay.PublicKey()
	if nc, err := nats.Connect("nats://"+addr, nats.Nkey(pub, e.relay.Sign), nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("the relay's nkey over TCP: %v, want an authorization violation", err)
	}
	seed, _ := e.relay.Seed()
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, seed) || bytes.Contains(b, []byte(pub)) {
			return fmt.Errorf("%s holds the relay's credential", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPassersKeysStayInProcess: a passer's key, which connects into its
// subscriber's account, is admitted in-process only, and not once its
// passer is gone; and with it a connection may take the subscriber's
// JetStream requests and answer into its inbox, nothing else (neither
// read its inbox nor the events, nor send a request).
func TestPassersKeysStayInProcess(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	billing := Subscriber{Name: "billing", PublicKey: pub, Subjects: "scimrelay.acme.>"}
	e, err := StartEmbedded(Options{Listen: addr, StoreDir: t.TempDir()}, []Subscriber{billing}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	e.mu.Lock()
	key := e.passers["billing"].key
	e.mu.Unlock()
	passerPub, _ := key.PublicKey()
	if nc, err := nats.Connect("nats://"+addr, nats.Nkey(passerPub, key.Sign), nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("a passer's nkey over TCP: %v, want an authorization violation", err)
	}
	refused := make(chan error, 8)
	nc, err := nats.Connect("", nats.InProcessServer(e.srv), nats.Nkey(passerPub, key.Sign),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { refused <- err }))
	if err != nil {
		t.Fatalf("a passer's nkey in-process: %v", err)
	}
	defer nc.Close()
	for _, subject := range []string{"_INBOX_billing.x", "scimrelay.>"} {
		if _, err := nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		select {
		case err := <-refused:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("subscribing to %s: %v, want a permissions violation", subject, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a passer's key subscribed to %s", subject)
		}
	}
	if err := nc.Publish("$JS.API.CONSUMER.INFO.SCIMRELAY.billing", nil); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	select {
	case err := <-refused:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("publishing a request: %v, want a permissions violation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a passer's key published a request")
	}
	if err := e.SetSubscribers(nil); err != nil {
		t.Fatal(err)
	}
	e.auth.mu.Lock()
	defer e.auth.mu.Unlock()
	if u := e.auth.internal[passerPub]; u != nil {
		t.Fatalf("a gone passer's nkey is still admitted, into %s", u.Account.Name)
	}
}

// TestRelayAccountImportsNothingOfSubscribers: the relay's account holds
// no import per subscriber. nats-server matches every subscription in an
// account, JetStream's own for each consumer included, against each of
// the account's stream imports: with seven to eleven a subscriber there,
// adding the 2,001st subscriber took 59 ms and a restart with 2,000 of
// them 33 s (BenchmarkManySubscribers), growing with their square.
func TestRelayAccountImportsNothingOfSubscribers(t *testing.T) {
	e, err := StartEmbedded(Options{StoreDir: t.TempDir()}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	imports := func() int {
		az, err := e.srv.Accountz(&server.AccountzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT})
		if err != nil || az.Account == nil {
			t.Fatalf("the relay's account: %v", err)
		}
		return len(az.Account.Imports)
	}
	before := imports()
	var subs []Subscriber
	for i := range 20 {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		subs = append(subs, Subscriber{Name: fmt.Sprintf("tenant%d", i), PublicKey: pub, Subjects: []string{"", fmt.Sprintf("scimrelay.tenant%d.>", i)}[i%2]})
	}
	if err := e.SetSubscribers(subs); err != nil {
		t.Fatal(err)
	}
	if n := imports() - before; n != 0 {
		t.Fatalf("the relay's account holds %d imports more with %d subscribers, want none", n, len(subs))
	}
}
