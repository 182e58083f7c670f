// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestPurgeSubject: the messages whose subjects match the filter go, the
// others stay, and the count is JetStream's; a stream that does not
// exist holds none; a purge JetStream refuses is its error.
func TestPurgeSubject(t *testing.T) {
	ctx := context.Background()
	ns := eventstest.RunServer(t)
	nc, js := eventstest.Connect(t, eventstest.URL(ns))
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"t.acme.1", "t.globex.1", "t.acme.2", "t.globex.2", "t.globex.3"} {
		if _, err := js.Publish(ctx, subject, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := natsbus.PurgeSubject(ctx, nc, "T", "t.globex.>"); err != nil || n != 3 {
		t.Fatalf("purging t.globex.>: %d, %v; want 3", n, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 || info.State.Subjects["t.acme.1"] != 1 || info.State.Subjects["t.acme.2"] != 1 {
		t.Errorf("after the purge the stream holds %d messages, %v; want acme's two", info.State.Msgs, info.State.Subjects)
	}
	if n, err := natsbus.PurgeSubject(ctx, nc, "NONE", "t.>"); err != nil || n != 0 {
		t.Errorf("purging a stream that does not exist: %d, %v", n, err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEPT", Subjects: []string{"k.>"}, DenyPurge: true}); err != nil {
		t.Fatal(err)
	}
	var refused *jetstream.APIError
	if _, err := natsbus.PurgeSubject(ctx, nc, "KEPT", "k.>"); !errors.As(err, &refused) {
		t.Errorf("purging a stream that denies purges: %v, want JetStream's refusal", err)
	}
}
