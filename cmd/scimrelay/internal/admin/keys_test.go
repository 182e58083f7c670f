// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
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
	// It takes no body: one given is refused and nothing rotated (README,
	// Operating, TestActionsThatTakeNoBodyRefuseOne).
	signing := f.signer.PublicKey()
	f.request("POST", "/admin/v1/keys/events/rotate", `{"dry_run":true}`).wantError(t, http.StatusBadRequest, `unknown field "dry_run"`)
	if f.signer.PublicKey() != signing {
		t.Fatal("a rotation refused for its body rotated the key")
	}
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

// TestRotationRetiringTwoKeysNamesEachOnce: a rotation run again after one
// that failed once the data file held its new key (README, Keys) retires
// two keys; its audit line, in JSON, names each under retired.<n> and
// repeats no key (README, Logs: "A JSON line never repeats a key"). It
// repeated retired, up_to_seq and retired_at, and a parser kept the last.
func TestRotationRetiringTwoKeysNamesEachOnce(t *testing.T) {
	f := newFixture(t)
	out := &eventstest.Log{}
	f.h.log = slog.New(slog.NewJSONHandler(out, nil)) // log.format: json
	// What a rotation that failed leaves: the new key stored, named and
	// signing, the old one still to be retired.
	ctx := t.Context()
	old := f.signer.PublicKey()
	seed, err := f.store.RotateEventSigningSeed(old)
	if err != nil {
		t.Fatal(err)
	}
	next, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.NameSigningKey(ctx, f.js, next.PublicKey(), slog.Default()); err != nil {
		t.Fatal(err)
	}
	if err := f.signer.Switch(seed); err != nil {
		t.Fatal(err)
	}
	var done KeyRotation
	f.request("POST", "/admin/v1/keys/events/rotate", "").want(t, http.StatusOK, &done)
	if len(done.Retired) != 2 {
		t.Fatalf("the rotation retired %d keys, want 2: %+v", len(done.Retired), done.Retired)
	}
	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, `"admin action"`) {
			line = l
		}
	}
	var audit struct {
		Retired map[string]events.RetiredKey `json:"retired"`
	}
	if err := json.Unmarshal([]byte(line), &audit); err != nil {
		t.Fatalf("the audit line: %v\n%s", err, line)
	}
	for i, want := range done.Retired {
		if got := audit.Retired[strconv.Itoa(i+1)]; got.Key != want.Key || got.UpTo != want.UpTo || !got.At.Equal(want.At) {
			t.Errorf("retired.%d in the audit line is %+v, want %+v:\n%s", i+1, got, want, line)
		}
	}
	// Every key once, at each level.
	var check func(d *json.Decoder, at string)
	check = func(d *json.Decoder, at string) {
		if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("%s: %v %v", at, tok, err)
		}
		seen := map[string]bool{}
		for d.More() {
			tok, err := d.Token()
			if err != nil {
				t.Fatal(err)
			}
			key := tok.(string)
			if seen[key] {
				t.Errorf("the audit line repeats %s%q:\n%s", at, key, line)
			}
			seen[key] = true
			var v json.RawMessage
			if err := d.Decode(&v); err != nil {
				t.Fatal(err)
			}
			if len(v) > 0 && v[0] == '{' {
				check(json.NewDecoder(bytes.NewReader(v)), at+key+".")
			}
		}
	}
	check(json.NewDecoder(strings.NewReader(line)), "")
}
