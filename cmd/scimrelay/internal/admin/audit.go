// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
)

// The audit trail: every action that changes who can reach the relay or
// what it delivers (a credential issued, rotated or revoked; a subscriber
// added or removed; a reload; a redrive or replay started), or what it
// holds (a tenant purged: one line when the purge ends) is one Info line
// "admin action", naming the action, what it acted on, whether it came
// through the API or the console, the client's address and the request
// id. Never a secret: a credential's id and name identify it.

// Audited actions but the jobs', which are named by their kind (redrive,
// replay); a credential's are prefixed with its noun (token.issue,
// client.revoke).
const (
	actionIssue            = "issue"
	actionRotate           = "rotate"
	actionRevoke           = "revoke"
	actionSubscriberAdd    = "subscriber.add"
	actionSubscriberRemove = "subscriber.remove"
	actionReload           = "reload"
	actionTenantPurge      = "tenant.purge"
)

type consoleKey struct{}

// consoleCall is what the console tells the admin API of a call it makes
// in-process: the browser's address and the console request's id.
type consoleCall struct{ client, requestID string }

// ForConsoleClient returns ctx for an in-process call of the console made
// for the browser at addr (its client address) in the console request
// requestID: the audit trail names the browser as the action's client,
// and the call's id is the console request's. A request over the network
// cannot set it.
func ForConsoleClient(ctx context.Context, addr, requestID string) context.Context {
	return context.WithValue(ctx, consoleKey{}, consoleCall{client: addr, requestID: requestID})
}

// consoleOf returns what ForConsoleClient put in ctx, if anything.
func consoleOf(ctx context.Context) consoleCall {
	c, _ := ctx.Value(consoleKey{}).(consoleCall)
	return c
}

// caller says how r came (api or console) and from which address.
func caller(r *http.Request) (via, client string) {
	if r.RemoteAddr == InProcess {
		return "console", consoleOf(r.Context()).client
	}
	return "api", httpmw.ClientAddress(r)
}

// audit logs an admin action done for r, with attrs naming what it acted on.
func (h *Handler) audit(r *http.Request, action string, attrs ...any) {
	via, client := caller(r)
	attrs = append([]any{"action", action}, attrs...)
	attrs = append(append(attrs, "via", via, "client", client), requestIDs(r.Context())...)
	h.log.Log(r.Context(), slog.LevelInfo, "admin action", attrs...)
}
