// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/oauth"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/tracing"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/scim"
)

// observe receives every SCIM request after it was answered: metrics, the
// provisioning log, and a log line for server errors.
func (s *server) observe(ctx context.Context, info *scim.RequestInfo) {
	// A refused request is counted under the configured tenant its path
	// names, as the provisioning log files it: a tenant whose token
	// expired shows its 401s. A name no tenant has is counted under "",
	// so that requests cannot make label values of their choosing.
	tenant := s.logTenant(info)
	metricTenant := tenant
	if metricTenant != "" && s.store != nil && !s.store.HasTenant(metricTenant) {
		// Removed by a reload while the request ran: the reload forgot
		// the tenant's series, which this would make again for good.
		metricTenant = ""
	}
	s.reqMetrics.Observe(info, metricTenant)
	client := clientRequestID(info)
	if s.tracing != nil {
		tracing.Annotate(ctx, tracing.Request{
			Tenant: info.Tenant, Operation: info.Operation, ResourceType: info.ResourceType,
			Route: routeOf(info), RequestID: info.RequestID, ClientRequestID: client, Status: info.Status,
		})
	}
	s.reqLog.Record(relay.LogEntry{
		Time: info.Start, RequestID: info.RequestID, ClientRequestID: client, Tenant: tenant, Method: info.Method, Path: info.Path,
		Operation: info.Operation, Resource: info.ResourceType, ResourceID: info.ResourceID, Name: info.Name, Email: info.Email,
		Status: info.Status, ScimType: info.ScimType, Detail: info.Detail, Latency: info.Latency,
		EventIDs: info.EventIDs, Unauthenticated: !info.Authenticated,
	})
	// A 501 answers what the relay does not offer (/Me): expected, the
	// caller's concern, not an error of the relay's. A failure the handler
	// logged with its cause ("scim request failed") is not logged again;
	// any other 5xx (a 503 while NATS is away) is, with what its answer said,
	// but a 507: the store said "the data disk is full" once when it filled,
	// and a line for each write refused meanwhile floods the log.
	if info.Status >= 500 && info.Status != http.StatusNotImplemented && info.Status != http.StatusInsufficientStorage && !info.FailureLogged {
		s.log.Error("scim request answered 5xx", append(requestIDs(info.RequestID, client), "tenant", info.Tenant, "op", info.Operation,
			"status", info.Status, "scim_type", info.ScimType, "detail", info.Detail)...)
	}
	if s.log.Enabled(ctx, slog.LevelDebug) { // its arguments cost allocations on every request
		s.log.DebugContext(ctx, "scim request", append(requestIDs(info.RequestID, client), "tenant", info.Tenant, "method", info.Method, "path", info.Path,
			"status", info.Status, "scim_type", info.ScimType, "latency", info.Latency)...)
	}
}

// requestIDs are a request's log attributes that name it: request_id,
// the relay's, and client_request_id when the client's is kept.
func requestIDs(id, client string) []any {
	if client == "" {
		return []any{"request_id", id}
	}
	return []any{"request_id", id, "client_request_id", client}
}

// clientRequestID is the X-Request-Id a request's client sent, as the
// relay keeps it beside its own id: only for a request whose credential
// was accepted. An outsider's refused request keeps none, so that nothing
// it chose looks like an id of the relay's or of its directory's.
func clientRequestID(info *scim.RequestInfo) string {
	if !info.Authenticated {
		return ""
	}
	return info.ClientRequestID
}

// logTenant is the tenant a request's log entry is filed under: the one
// it authenticated for, or, for a refused credential, the configured
// tenant its path names, so that a tenant's log shows what its directory
// was refused and why ("scimrelay log --tenant acme --status 4xx"), and
// unauthenticated refusals are summed up per tenant (relay/provlog.go).
// A name no tenant has is not recorded: the path is the caller's to choose.
func (s *server) logTenant(info *scim.RequestInfo) string {
	if info.Tenant != "" || info.Authenticated || s.store == nil {
		return info.Tenant
	}
	segs := strings.SplitN(info.Path, "/", 5)
	if len(segs) >= 4 && segs[1] == "scim" && segs[2] == "v2" && s.store.HasTenant(segs[3]) {
		return segs[3]
	}
	return ""
}

// routeOf is a request's path as a template, without the tenant or the
// resource id: /scim/v2/{tenant}/Users/{id}, /oauth2/{tenant}/token.
func routeOf(info *scim.RequestInfo) string {
	// Only a path the handler routed has a template: any other is the
	// caller's text (a userName, an email pasted into a path), which no
	// span, log label or metric may keep.
	segs := strings.Split(info.Path, "/")
	switch {
	case info.Operation == "":
		return ""
	case info.Route != "":
		return info.Route // the SCIM router's template: the path as routed, canonical
	case len(segs) == 4 && "/"+segs[1]+"/" == oauth.PathPrefix && segs[3] == "token":
		segs[2] = "{tenant}"
	default:
		return ""
	}
	return strings.Join(segs, "/")
}
