// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Signatures are made by the official Standard Webhooks library, the one
// receivers verify with, so that signing and verifying cannot disagree.
// A sink has one secret, or two while it rotates: the new one and the
// previous one, which signs too until it is removed or expires, so that a
// receiver verifying with either secret accepts every delivery (the
// webhook-signature header carries one "v1,<base64>" per secret, separated
// by a space, as the specification allows).

// signer signs deliveries with a sink's secrets.
type signer struct {
	current  *standardwebhooks.Webhook
	previous *standardwebhooks.Webhook // nil: no rotation under way
	// previousUntil ends the overlap; zero: until previous is removed.
	previousUntil time.Time
}

// ParseSecret returns the signer and verifier of a Standard Webhooks
// secret, whsec_ followed by the base64 of 24 to 64 bytes. It checks the
// format, which the library alone is lenient about (it takes any base64,
// with or without the prefix, of any length).
func ParseSecret(secret string) (*standardwebhooks.Webhook, error) {
	raw, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, errors.New("must be whsec_ followed by base64 (the Standard Webhooks format)")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, errors.New("the part after whsec_ must be base64 of 24 to 64 random bytes")
	}
	return standardwebhooks.NewWebhookRaw(key)
}

// newSigner checks the secrets; each problem names its option.
// previousUntil is an RFC 3339 time, or "" for no expiry.
func newSigner(secret, previous, previousUntil string) (*signer, error) {
	var errs []error
	s := &signer{}
	var err error
	if s.current, err = ParseSecret(secret); err != nil {
		errs = append(errs, fmt.Errorf("secret: %w", err))
	}
	if previous != "" {
		if s.previous, err = ParseSecret(previous); err != nil {
			errs = append(errs, fmt.Errorf("previous_secret: %w", err))
		} else if previous == secret {
			errs = append(errs, errors.New("previous_secret: is the same as secret; set it to the secret being replaced"))
		}
	}
	if previousUntil != "" {
		t, err := time.Parse(time.RFC3339, previousUntil)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("previous_secret_expires: want an RFC 3339 time such as 2026-12-31T00:00:00Z, got %q", previousUntil))
		case previous == "":
			errs = append(errs, errors.New("previous_secret_expires: set without previous_secret"))
		default:
			s.previousUntil = t
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// sign returns the webhook-signature value of one attempt sent at ts: one
// signature per secret in use.
func (s *signer) sign(id string, ts time.Time, body []byte) (string, error) {
	sig, err := s.current.Sign(id, ts, body)
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	if s.previous != nil && (s.previousUntil.IsZero() || ts.Before(s.previousUntil)) {
		old, err := s.previous.Sign(id, ts, body)
		if err != nil {
			return "", fmt.Errorf("signing with the previous secret: %w", err)
		}
		sig += " " + old
	}
	return sig, nil
}
