// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"log/slog"
	"time"
)

// ExpiryWarning is how long before a token expires the relay starts warning.
const ExpiryWarning = 14 * 24 * time.Hour

// ExpiryWarningEvery is how often serve repeats the warnings: daily.
const ExpiryWarningEvery = 24 * time.Hour

// ExpiredKept is how long after it expired a credential stays in
// TokenExpiries, and so in scimrelay_token_expiry_timestamp_seconds with its
// past expiry: an alert on the metric stays firing while the identity
// provider is refused, rather than resolving the moment it starts to be.
const ExpiredKept = 30 * 24 * time.Hour

// ExpiredRefusalWarnEvery is how often, at most, the relay warns that an
// expired token was refused, per token: Entra sends one every few seconds
// while it retries, each refused the same way.
const ExpiredRefusalWarnEvery = time.Hour

// warnExpiredRefused says, once a token an hour, that a request was refused
// with tok, expired: how many were since the last line, and what to do.
func (s *Store) warnExpiredRefused(tok Token, now time.Time) {
	due, held := s.tokens.expiredUse.Note(tok.ID, now)
	if !due {
		return
	}
	msg := "requests are refused with an expired SCIM token; issue a new one with scimrelay token create --tenant " + tok.Tenant +
		" (or scimrelay token rotate --tenant " + tok.Tenant + ") and paste it into the identity provider's provisioning"
	if tok.Kind == KindClient {
		msg = "requests are refused with an expired OAuth client; issue a new one with scimrelay client rotate --tenant " + tok.Tenant +
			" (or scimrelay client create --tenant " + tok.Tenant + ") and enter its id and secret in the identity provider's provisioning"
	}
	s.log.Warn(msg, "tenant", tok.Tenant, "kind", string(tok.Kind), "token", tok.ID, "name", tok.Name, "expired", tok.Expires.UTC().Format(time.RFC3339),
		"refused", held+1) // since the last such line of the token
}

// warnShortLived warns when a credential was issued (how: "issued",
// "rotated") that expires within ExpiryWarning: the daily warnings would
// say so only at the next start or day.
func (s *Store) warnShortLived(tok Token, how string) {
	left := tok.Expires.Sub(s.now())
	if tok.Expires.IsZero() || left > ExpiryWarning {
		return
	}
	msg := "a SCIM token was " + how + " that expires within 14 days; Entra's provisioning stops when it does: rotate it in time (scimrelay token rotate)"
	if tok.Kind == KindClient {
		msg = "an OAuth client was " + how + " that expires within 14 days; the identity provider's provisioning stops when it does: rotate it in time (scimrelay client rotate)"
	}
	s.log.Warn(msg, "tenant", tok.Tenant, "kind", string(tok.Kind), "token", tok.ID, "name", tok.Name,
		"expires", tok.Expires.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24))
}

// WarnExpiringTokens logs, at start and then every period (serve: once a
// day, ExpiryWarningEvery), a warning for each
// token and OAuth client that expires within ExpiryWarning: the SAFE guide's warning, that an
// expired token quarantines the Entra provisioning job, is why.
func (s *Store) WarnExpiringTokens(ctx context.Context, log *slog.Logger, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		now := s.now()
		for _, tok := range DueForRotation(s.TokenExpiries(), now) {
			msg := "a SCIM token expires soon; issue a new one with scimrelay token rotate before Entra's provisioning stops"
			if tok.Kind == KindClient {
				msg = "an OAuth client expires soon; issue a new one with scimrelay client rotate before the identity provider's provisioning stops"
			}
			log.Warn(msg, "tenant", tok.Tenant, "kind", string(tok.Kind), "token", tok.ID, "name", tok.Name,
				"expires", tok.Expires.Format(time.RFC3339), "days_left", int(tok.Expires.Sub(now).Hours()/24))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
