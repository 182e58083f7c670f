// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
)

// The keys in the data file, which its backups hold too: the one that
// signs events on an external NATS and the one that signs OAuth access
// tokens. GET /admin/v1/keys lists them (never a secret);
// POST /admin/v1/keys/{events,oauth}/rotate gives the relay new ones,
// after a data file or a backup leaked.

// actionKeyRotate is the audit trail's action of a key rotation.
const actionKeyRotate = "key.rotate"

// KeyStore is the data file's side of the keys.
type KeyStore interface {
	OAuthKey() relay.OAuthKey
	RotateOAuthKey(overlap time.Duration) (relay.OAuthKey, error)
	RotateEventSigningSeed(replaced string) ([]byte, error)
	EventKeysRetiring() ([]string, error)
	EventKeyRetired(key string) error
}

var _ KeyStore = (*relay.Store)(nil)

// KeyOptions are what rotating the keys takes.
type KeyOptions struct {
	Store KeyStore
	JS    jetstream.JetStream
	// Signer signs the front end's events; nil with NATS embedded, where
	// nothing is signed.
	Signer *events.Signer
	// Publisher publishes the events Signer signs; every message it sent
	// with the old key has JetStream's answer before that key is retired.
	Publisher interface {
		AwaitSettled(ctx context.Context) error
	}
	// TokenLifetime is the access tokens' lifetime in force
	// (oauth.token_lifetime): the default overlap of an OAuth key
	// rotation, so that an identity provider's token stays good until
	// it asks for a new one. Nil: relay.DefaultAccessTokenLifetime.
	TokenLifetime func() time.Duration
	Logger        *slog.Logger
}

// Keys lists and rotates the relay's keys.
type Keys struct {
	o  KeyOptions
	mu sync.Mutex // one rotation at a time
}

// NewKeys returns the keys of a front end.
func NewKeys(o KeyOptions) *Keys {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TokenLifetime == nil {
		o.TokenLifetime = func() time.Duration { return relay.DefaultAccessTokenLifetime }
	}
	return &Keys{o: o}
}

// KeysInfo is GET /admin/v1/keys's answer.
type KeysInfo struct {
	Events EventKeys      `json:"events"`
	OAuth  relay.OAuthKey `json:"oauth"`
}

// EventKeys are the event-signing keys: this front end's (Key, public),
// and the event stream's, named and retired. With NATS embedded nothing
// is signed: Key is empty and Note says so.
type EventKeys struct {
	Key    string              `json:"key,omitempty"`
	Note   string              `json:"note,omitempty"`
	Stream *events.SigningKeys `json:"stream,omitempty"`
}

// NotSignedNote is what the keys say of events with NATS embedded.
const NotSignedNote = "NATS embedded, events are not signed"

// KeyRotateRequest asks for a rotation of the OAuth key (the events'
// takes no body). Overlap is how long access tokens signed with the key
// replaced keep working ("0": not at all; empty: the access tokens'
// lifetime, oauth.token_lifetime).
type KeyRotateRequest struct {
	Overlap string `json:"overlap,omitempty"`
}

// KeyRotation is a rotation's answer: the events' new public key and the
// key it retired with its bound, or the access-token keys as they now
// are.
type KeyRotation struct {
	Kind    string              `json:"kind"`
	Key     string              `json:"key,omitempty"`
	Retired []events.RetiredKey `json:"retired,omitempty"`
	OAuth   *relay.OAuthKey     `json:"oauth,omitempty"`
}

// keyRoutes serves the keys.
func (h *Handler) keyRoutes() {
	h.api("GET /admin/v1/keys", h.listKeys)
	h.api("POST /admin/v1/keys/events/rotate", takesNoBody(h.rotateEventKey))
	h.api("POST /admin/v1/keys/oauth/rotate", h.rotateOAuthKey)
}

func (h *Handler) listKeys(w http.ResponseWriter, r *http.Request) error {
	k := h.o.Keys
	if k == nil {
		return unavailable("key management")
	}
	info := KeysInfo{OAuth: k.o.Store.OAuthKey()}
	if k.o.Signer == nil {
		info.Events.Note = NotSignedNote
	} else {
		info.Events.Key = k.o.Signer.PublicKey()
		named, err := events.ReadSigningKeys(r.Context(), k.o.JS)
		if err != nil {
			return err
		}
		info.Events.Stream = &named
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

// RotationTime bounds a rotation, which runs to its end once begun: one
// cut short by its client leaves the relay signing with a key the
// stream may not name, or the old key named.
const RotationTime = time.Minute

func (h *Handler) rotateEventKey(w http.ResponseWriter, r *http.Request) error {
	k := h.o.Keys
	if k == nil {
		return unavailable("key management")
	}
	if k.o.Signer == nil {
		return errorf(http.StatusConflict, "nothing to rotate: NATS is embedded in this relay, so events are not signed (no other client can publish into its stream) and there is no event-signing key")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), RotationTime)
	defer cancel()
	res, err := k.rotateEvents(ctx)
	if err != nil && res.Key == "" {
		return err // nothing changed
	}
	// Once the data file holds the new key, which a restart signs with
	// and the front end may sign with already, the rotation is audited,
	// failed or not.
	outcome := "rotated"
	if err != nil {
		outcome = "failed"
	}
	attrs := []any{"kind", "events", "outcome", outcome, "key", res.Key, "signing", k.o.Signer.PublicKey() == res.Key}
	// One group per key retired, numbered, so that a line retiring two (a
	// rotation run again after one that failed) names no key twice: its
	// JSON repeated "retired", and a parser kept only the last.
	if len(res.Retired) > 0 {
		var each []any
		for i, ret := range res.Retired {
			each = append(each, slog.Group(strconv.Itoa(i+1), "key", ret.Key, "up_to_seq", ret.UpTo, "retired_at", ret.At))
		}
		attrs = append(attrs, slog.Group("retired", each...))
	}
	if err != nil {
		h.audit(r, actionKeyRotate, append(attrs, "err", err)...)
		return err
	}
	h.audit(r, actionKeyRotate, attrs...)
	writeJSON(w, http.StatusOK, res)
	return nil
}

// rotateEvents gives the front end a new event-signing key: stored in the
// data file, named by the stream, signing; then, once JetStream has
// answered for every event the old key signed (Publisher.AwaitSettled),
// the old key retired at the stream's last sequence. It returns once every
// reader has read the keys since (events.KeysReadEvery).
func (k *Keys) rotateEvents(ctx context.Context) (KeyRotation, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.o.Signer.PublicKey()
	seed, err := k.o.Store.RotateEventSigningSeed(old)
	if err != nil {
		return KeyRotation{}, err
	}
	next, err := events.NewSigner(seed)
	if err != nil {
		return KeyRotation{}, err
	}
	res := KeyRotation{Kind: "events", Key: next.PublicKey()}
	if err := events.NameSigningKey(ctx, k.o.JS, res.Key, k.o.Logger); err != nil {
		return res, fmt.Errorf("naming the new event-signing key %s in the event stream (this front end still signs with %s; run the rotation again): %w", res.Key, old, err)
	}
	if err := k.o.Signer.Switch(seed); err != nil {
		return res, err
	}
	// Every message the old key signed is stored, or known never to be:
	// one whose acknowledgement timed out may be stored later, after
	// the bound, unless the publisher has had the answer to its copy
	// sent again (a duplicate's names where the first is).
	if err := k.o.Publisher.AwaitSettled(ctx); err != nil {
		return res, fmt.Errorf("this front end signs with its new key %s, but NATS has not answered for events the old one signed, so it is not retired yet (run the rotation again once NATS answers, or restart the front end: either retires it first): %w", res.Key, err)
	}
	if res.Retired, err = RetireEventKeys(ctx, k.o.Store, k.o.JS, k.o.Logger); err != nil {
		return res, fmt.Errorf("this front end signs with its new key %s, but retiring the old one failed (run the rotation again, or restart the front end: either retires it first): %w", res.Key, err)
	}
	// A reader verifies with keys read at most KeysReadEvery before: once
	// that has passed, none takes what the old key signed after its bound,
	// and the rotation's answer can say so.
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(events.KeysReadEvery):
	}
	k.o.Logger.Info("the event-signing key was rotated: this front end signs with the new key; the old one verifies only the events stored before it was retired", "key", res.Key, "retired", old)
	return res, nil
}

// RetireEventKeys retires in the event stream the keys a rotation
// replaced (KeyStore.EventKeysRetiring), recording each once it is: at
// the end of a rotation, and at a front end's start, before it publishes,
// for a rotation a crash cut short.
func RetireEventKeys(ctx context.Context, store KeyStore, js jetstream.JetStream, log *slog.Logger) ([]events.RetiredKey, error) {
	keys, err := store.EventKeysRetiring()
	if err != nil {
		return nil, err
	}
	retired := []events.RetiredKey{}
	for _, key := range keys {
		r, err := events.RetireSigningKey(ctx, js, key, log)
		if err != nil {
			return retired, err
		}
		if err := store.EventKeyRetired(key); err != nil {
			return retired, err
		}
		retired = append(retired, r)
	}
	return retired, nil
}

func (h *Handler) rotateOAuthKey(w http.ResponseWriter, r *http.Request) error {
	k := h.o.Keys
	if k == nil {
		return unavailable("key management")
	}
	var req KeyRotateRequest
	if err := decodeBody(r, &req, true); err != nil {
		return err
	}
	overlap := k.o.TokenLifetime()
	if req.Overlap != "" {
		d, err := config.ParseDuration(req.Overlap)
		switch {
		case err != nil:
			return badRequest("overlap: %v", err)
		case d < 0 || d > relay.MaxAccessTokenLifetime:
			return badRequest("overlap: between 0 and %s (the longest an access token lives), got %s", relay.MaxAccessTokenLifetime, d)
		}
		overlap = d
	}
	before := k.o.Store.OAuthKey()
	key, err := k.o.Store.RotateOAuthKey(overlap)
	if err != nil {
		return err
	}
	h.audit(r, actionKeyRotate, "kind", "oauth", "id", key.ID, "replaced", before.ID, "overlap", overlap.String())
	writeJSON(w, http.StatusOK, KeyRotation{Kind: "oauth", OAuth: &key})
	return nil
}
