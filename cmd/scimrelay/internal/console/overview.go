// SPDX-License-Identifier: Apache-2.0

package console

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/sinks"
)

// overviewData is the overview: is provisioning and delivery healthy.
type overviewData struct {
	Now     time.Time
	Ready   admin.Readiness
	Tenants []tenantRow
	// NoLog and NoTokens say this relay's role has no provisioning log or
	// tokens (role sinks).
	NoLog, NoTokens bool
	// Outbox is the outbox's depth; -1 where the role has no data file.
	Outbox int
	// DataFile is the data file's size and free pages; nil where the role
	// has none.
	DataFile *admin.DataFileSpace
	Sinks    []sinks.Status
	// Expiring are the tokens and clients to rotate, as the daily warning
	// names them (relay.DueForRotation).
	Expiring []relay.Token
	// Expired are those the expiry metric keeps after they expired
	// (relay.Expiries): their tenant has no live one of their kind, so the
	// identity provider is refused until it is given a new one.
	Expired []relay.Token
}

type tenantRow struct {
	admin.TenantInfo
	Requests relay.LogCount
	Live     int // live tokens and clients
}

// GET /ui/
func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) error {
	api, ctx := c.api(s), r.Context()
	d := overviewData{Now: c.now()}
	var err error
	if d.Ready, err = api.Ready(ctx); err != nil {
		return err
	}
	tenants, err := api.Tenants(ctx)
	if err != nil {
		return err
	}
	stats, err := api.Stats(ctx, "1h")
	if err != nil {
		return err
	}
	d.NoLog, d.Outbox = stats.Requests == nil, -1
	if stats.OutboxDepth != nil {
		d.Outbox = *stats.OutboxDepth
	}
	d.DataFile = stats.DataFile
	creds, err := credentialsOf(r, api, "")
	if d.NoTokens = unavailable(err); err != nil && !d.NoTokens {
		return err
	}
	for _, t := range tenants {
		row := tenantRow{TenantInfo: t, Requests: relay.LogCount{Tenant: t.Name}}
		for _, lc := range stats.Requests {
			if lc.Tenant == t.Name {
				row.Requests = lc
			}
		}
		for _, cr := range creds {
			if cr.Tenant == t.Name && cr.Live(d.Now) {
				row.Live++
			}
		}
		d.Tenants = append(d.Tenants, row)
	}
	configured := func(tenant string) bool {
		return slices.ContainsFunc(tenants, func(t admin.TenantInfo) bool { return t.Name == tenant })
	}
	expiries := relay.Expiries(creds, configured, d.Now)
	d.Expiring = relay.DueForRotation(expiries, d.Now)
	for _, t := range expiries {
		if !t.Live(d.Now) {
			d.Expired = append(d.Expired, t)
		}
	}
	if d.Sinks, err = api.Sinks(ctx); err != nil {
		return err
	}
	c.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", CSRF: s.csrf, Notice: s.takeNotice(), Data: d})
	return nil
}

// credentialsOf lists a tenant's tokens and OAuth clients ("" for every
// tenant's), newest first.
func credentialsOf(r *http.Request, api *adminclient.Client, tenant string) ([]relay.Token, error) {
	tokens, err := api.Credentials(r.Context(), adminclient.Tokens, tenant)
	if err != nil {
		return nil, err
	}
	clients, err := api.Credentials(r.Context(), adminclient.Clients, tenant)
	if err != nil {
		return nil, err
	}
	all := append(tokens, clients...)
	slices.SortStableFunc(all, func(a, b relay.Token) int { return cmp.Compare(b.Created.UnixNano(), a.Created.UnixNano()) })
	return all, nil
}

// unavailable reports whether the admin API said it cannot do this in the
// relay's role.
func unavailable(err error) bool {
	var e *adminclient.Error
	return errors.As(err, &e) && e.Status == http.StatusServiceUnavailable
}
