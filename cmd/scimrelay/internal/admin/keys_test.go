// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestEventKeyRotationIsAuditedWhenItFails: a rotation is audited with its
// outcome. One that fails once the data file holds the new key (NATS
// away, so the stream cannot name it) changed what a restart signs with,
// and is audited as failed, with the new key and whether the front end
// signs with it; one that fails before changing anything is not an action.
func TestEventKeyRotationIsAuditedWhenItFails(t *testing.T) {
	f := newFixture(t)
	var done KeyRotation
	f.request("POST", "/admin/v1/keys/events/rotate", "").want(t, http.StatusOK, &done)
	if done.Key == "" || f.signer.PublicKey() != done.Key {
		t.Fatalf("the rotation answered %+v; the front end signs with %s", done, f.signer.PublicKey())
	}

	f.nats.Shutdown()
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if f.js.Conn().IsConnected() {
			return errors.New("the relay's connection has not seen NATS go")
		}
		return nil
	})
	f.request("POST", "/admin/v1/keys/events/rotate", "").wantError(t, http.StatusServiceUnavailable, "NATS is away")
	stored, err := events.NewSigner(f.store.EventSigningSeed())
	if err != nil {
		t.Fatal(err)
	}
	if stored.PublicKey() == done.Key {
		t.Fatal("the failed rotation stored no new key; the test needs one that did")
	}
	wantAuditLines(t, f.log.String(),
		`action=key.rotate kind=events outcome=rotated key=`+done.Key+` signing=true`,
		`action=key.rotate kind=events outcome=failed key=`+stored.PublicKey()+` signing=false err="naming the new event-signing key`)
}
