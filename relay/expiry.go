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

// WarnExpiringTokens logs, at start and then every period (serve: once a
// day, ExpiryWarningEvery), a warning for each
// token and OAuth client that expires within ExpiryWarning: the SAFE guide's warning, that an
// expired token quarantines the Entra provisioning job, is why.
func (s *Store) WarnExpiringTokens(ctx context.Context, log *slog.Logger, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		now := s.now()
		for _, tok := range s.TokenExpiries() {
			if left := tok.Expires.Sub(now); left <= ExpiryWarning {
				msg := "a SCIM token expires soon; issue a new one with scimrelay token rotate before Entra's provisioning stops"
				if tok.Kind == KindClient {
					msg = "an OAuth client expires soon; issue a new one with scimrelay client rotate before the identity provider's provisioning stops"
				}
				log.Warn(msg, "tenant", tok.Tenant, "kind", string(tok.Kind), "token", tok.ID, "name", tok.Name,
					"expires", tok.Expires.Format(time.RFC3339), "days_left", int(left.Hours()/24))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
