// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/relay/natsbus/natsbustest"
)

// pausingJS holds the registry's first consumer look-up until released:
// the moment between AddSubscriber's check of the tenant and its write.
type pausingJS struct {
	jetstream.JetStream
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func (p *pausingJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	p.once.Do(func() {
		close(p.reached)
		<-p.release
	})
	return p.JetStream.Consumer(ctx, stream, name)
}

// TestNoSubscriberForATenantRemovedAndPurgedMeanwhile: a subscriber add
// for a tenant that is removed from relay.yaml and purged while the add is
// under way must leave nothing behind (README, purge: "Operations running
// meanwhile leave nothing behind"; the NATS subscribers scoped to it are
// removed): otherwise the subscriber comes back, with a consumer, for
// whichever tenant is given the name next.
func TestNoSubscriberForATenantRemovedAndPurgedMeanwhile(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&eventstest.Log{}, nil))
	store, err := relay.Open(filepath.Join(t.TempDir(), "scimrelay.db"), relay.Options{Tenants: []relay.TenantOptions{{Name: "acme"}, {Name: "globex"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	e, js := natsbustest.Start(t, natsbus.Options{Listen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t)), StoreDir: t.TempDir()}, log)
	pjs := &pausingJS{JetStream: js, reached: make(chan struct{}), release: make(chan struct{})}
	reg := NewSubscriberRegistry(store, e, pjs)
	reqLog := relay.NewRequestLog(store, relay.LogOptions{Retention: time.Hour}, log)
	logCtx, stopLog := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = reqLog.Run(logCtx) })
	t.Cleanup(func() { stopLog(); wg.Wait() })
	purger := NewTenantPurger(store, reqLog, nil, reg, js.Conn(), nil)

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	done := make(chan error, 1)
	go func() {
		_, err := reg.AddSubscriber(t.Context(), relay.Subscriber{Name: "globex-audit", PublicKey: pub, Subjects: "scimrelay.globex.>"}, AddHow{})
		done <- err
	}()
	select {
	case <-pjs.reached:
	case <-time.After(30 * time.Second): // a deadline
		t.Fatal("the add did not reach its consumer look-up")
	}
	// Meanwhile the operator removes globex from relay.yaml (a reload) and purges it.
	if err := store.SetTenants([]relay.TenantOptions{{Name: "acme"}}); err != nil {
		t.Fatal(err)
	}
	// (The reload's TenantsChanged waits for the add's lock: it comes after.)
	if err := purger.Begin(t.Context(), "globex"); err != nil {
		t.Fatal(err)
	}
	if _, err := purger.Purge(t.Context(), "globex", nil); err != nil {
		t.Fatal(err)
	}
	close(pjs.release)
	addErr := <-done
	if status, _ := statusOf(addErr); status != http.StatusBadRequest || !errors.Is(addErr, relay.ErrSubscriberTenantGone) {
		t.Errorf("the add that found globex configured before it was removed and purged: %v (%d), want it refused 400: its tenant is gone", addErr, status)
	}
	left, err := store.SubscribersOf(t.Context(), "globex")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("after globex was removed and purged, subscriber %v of globex is stored (add returned %v): it is let in for the next tenant named globex", left, addErr)
	}
	// The next customer given the name.
	if err := store.SetTenants([]relay.TenantOptions{{Name: "acme"}, {Name: "globex"}}); err != nil {
		t.Fatal(err)
	}
	if err := reg.TenantsChanged(t.Context()); err != nil {
		t.Fatal(err)
	}
	list, err := reg.ListSubscribers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Name == "globex-audit" && !s.CutOff {
			t.Errorf("subscriber globex-audit, added for the purged globex, is admitted for the new tenant globex: %+v", s.Subscriber)
		}
	}
}

// TestSubscriberNATSRefusesIsAnsweredWithItsCause: a subscriber whose
// consumer NATS refuses (here the stream's bound on consumers, reached)
// is answered 409 with JetStream's words, not a bare 500 whose cause only
// the log had, and is not kept.
func TestSubscriberNATSRefusesIsAnsweredWithItsCause(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&eventstest.Log{}, nil))
	store, err := relay.Open(filepath.Join(t.TempDir(), "scimrelay.db"), relay.Options{Tenants: []relay.TenantOptions{{Name: "acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	e, js := natsbustest.Start(t, natsbus.Options{Listen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t)), StoreDir: t.TempDir()}, log)
	reg := NewSubscriberRegistry(store, e, js)
	stream, err := js.Stream(t.Context(), "SCIMRELAY")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxConsumers = max(info.State.Consumers, 1)
	if info.State.Consumers == 0 {
		if _, err := js.CreateConsumer(t.Context(), "SCIMRELAY", jetstream.ConsumerConfig{Durable: "taken", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	_, addErr := reg.AddSubscriber(t.Context(), relay.Subscriber{Name: "acme-audit", PublicKey: pub, Subjects: "scimrelay.acme.>"}, AddHow{})
	status, public := statusOf(addErr)
	if status != http.StatusConflict || !public || !strings.Contains(addErr.Error(), "maximum consumers limit reached") {
		t.Errorf("a subscriber whose consumer NATS refuses: %v (%d, its text public: %v), want 409 naming JetStream's refusal", addErr, status, public)
	}
	list, err := store.Subscribers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("the refused subscriber is stored: %+v", list)
	}
}

// TestSubscriberRefusedForAnothersCauseIsNotAnswered409: a change of
// subscribers that fails for this one (NATS not answering) while another,
// cut off meanwhile, was refused by JetStream for a limit: the answer is
// not the other's refusal, as this one's, 409; and this one's own
// refusal beside another's failure is. As the handlers pass the error
// (fromNATS wraps a join holding a deadline as "%w (%w)"), in either
// order (SetSubscribers joins in no set order).
func TestSubscriberRefusedForAnothersCauseIsNotAnswered409(t *testing.T) {
	ctx := context.Background()
	limit := &jetstream.APIError{Code: http.StatusBadRequest, ErrorCode: 10026, Description: "maximum consumers limit reached"}
	other := &natsbus.NotAdmitted{Name: "other", Err: limit}
	mineSlow := &natsbus.NotAdmitted{Name: "mine", Err: context.DeadlineExceeded}
	for _, err := range []error{errors.Join(other, mineSlow), errors.Join(mineSlow, other)} {
		got := refusedByNATS("mine", fromNATS(ctx, err))
		if status, _ := statusOf(got); status == http.StatusConflict {
			t.Errorf("answered 409 with another subscriber's refusal: %v", got)
		}
	}
	otherSlow := &natsbus.NotAdmitted{Name: "other", Err: context.DeadlineExceeded}
	mine := &natsbus.NotAdmitted{Name: "mine", Err: limit}
	for _, err := range []error{errors.Join(otherSlow, mine), errors.Join(mine, otherSlow)} {
		got := refusedByNATS("mine", fromNATS(ctx, err))
		if status, _ := statusOf(got); status != http.StatusConflict || !strings.Contains(got.Error(), "maximum consumers limit reached") {
			t.Errorf("its own refusal beside another's failure: %v (%d), want 409", got, status)
		}
	}
}
