// SPDX-License-Identifier: Apache-2.0

package adminclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/sinks"
)

// Kind names a collection of stored credentials: SCIM tokens or OAuth
// clients, which share their lifecycle and their routes' shape.
type Kind string

// The admin API's credential collections.
const (
	Tokens  Kind = "/admin/v1/tokens"
	Clients Kind = "/admin/v1/clients"
)

// Credentials lists the credentials of a kind, of one tenant ("" for all),
// never their secrets.
func (c *Client) Credentials(ctx context.Context, kind Kind, tenant string) ([]relay.Token, error) {
	var list []relay.Token
	err := c.Do(ctx, http.MethodGet, string(kind)+"?tenant="+url.QueryEscape(tenant), nil, &list)
	return list, err
}

// Issue creates a credential; the answer carries its secret, shown once.
func (c *Client) Issue(ctx context.Context, kind Kind, req admin.TokenRequest) (admin.TokenResponse, error) {
	var res admin.TokenResponse
	err := c.Do(ctx, http.MethodPost, string(kind), req, &res)
	return res, err
}

// Rotate issues a credential and makes the tenant's other live ones of the
// kind expire after req.Overlap.
func (c *Client) Rotate(ctx context.Context, kind Kind, req admin.TokenRequest) (admin.TokenResponse, error) {
	var res admin.TokenResponse
	err := c.Do(ctx, http.MethodPost, string(kind)+"/rotate", req, &res)
	return res, err
}

// Revoke revokes a credential at once; the answer says whether an earlier
// revocation had.
func (c *Client) Revoke(ctx context.Context, kind Kind, id string) (admin.RevokeResponse, error) {
	var t admin.RevokeResponse
	err := c.Do(ctx, http.MethodDelete, string(kind)+"/"+url.PathEscape(id), nil, &t)
	return t, err
}

// Reload asks the relay to re-read relay.yaml and apply it. A refused file
// is an *Error with status 422 whose Problems list what is wrong.
func (c *Client) Reload(ctx context.Context) (admin.ReloadResult, error) {
	var res admin.ReloadResult
	err := c.Do(ctx, http.MethodPost, "/admin/v1/reload", nil, &res)
	return res, err
}

// Tenants lists the tenants with the URLs an identity provider is given.
func (c *Client) Tenants(ctx context.Context) ([]admin.TenantInfo, error) {
	var list []admin.TenantInfo
	err := c.Do(ctx, http.MethodGet, "/admin/v1/tenants", nil, &list)
	return list, err
}

// PurgeTenant starts a job deleting what a tenant no longer configured
// left (its result an admin.PurgeResult): refused with 409 for a tenant
// that is configured, and 404 for a name that holds nothing.
func (c *Client) PurgeTenant(ctx context.Context, tenant string) (Job, error) {
	return c.StartJob(ctx, "/admin/v1/tenants/"+url.PathEscape(tenant)+"/purge", nil)
}

// Log reads the provisioning log; q takes the route's parameters (tenant,
// since, until, after, status, user, operation, limit).
func (c *Client) Log(ctx context.Context, q url.Values) ([]relay.LogEntry, error) {
	var list []relay.LogEntry
	err := c.Do(ctx, http.MethodGet, "/admin/v1/log?"+q.Encode(), nil, &list)
	return list, err
}

// LogEntry reads one request of the provisioning log with the events it
// produced and their deliveries.
func (c *Client) LogEntry(ctx context.Context, key string) (admin.LogDetail, error) {
	var d admin.LogDetail
	err := c.Do(ctx, http.MethodGet, "/admin/v1/log/"+url.PathEscape(key), nil, &d)
	return d, err
}

// Stats reads the counts of the overview: requests since a time, the outbox.
func (c *Client) Stats(ctx context.Context, since string) (admin.Stats, error) {
	var s admin.Stats
	err := c.Do(ctx, http.MethodGet, "/admin/v1/stats?since="+url.QueryEscape(since), nil, &s)
	return s, err
}

// Storage reads the data file's size and each bucket's share of it. The
// relay walks every page of the file to answer, so this is for operators
// and benchmarks, not for polling.
func (c *Client) Storage(ctx context.Context) (relay.StorageStats, error) {
	var st relay.StorageStats
	err := c.Do(ctx, http.MethodGet, "/admin/v1/storage", nil, &st)
	return st, err
}

// Metrics reads the relay's /metrics (the Prometheus text format) and
// returns its metric families by name.
func (c *Client) Metrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	res, err := c.Send(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the relay's /metrics: %w", err)
	}
	return families, nil
}

// Ready reads the readiness checks. A relay that is not ready answers 503
// with the same body, which is returned without an error.
func (c *Client) Ready(ctx context.Context) (admin.Readiness, error) {
	var r admin.Readiness
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	res, err := c.send(ctx, http.MethodGet, "/readyz?format=json", nil, http.StatusServiceUnavailable)
	if err != nil {
		return r, err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("reading the relay's readiness: %w", err)
	}
	return r, nil
}

// Deliveries reads delivery attempts; q takes sink, since and limit.
func (c *Client) Deliveries(ctx context.Context, q url.Values) ([]sinks.Attempt, error) {
	var list []sinks.Attempt
	err := c.Do(ctx, http.MethodGet, "/admin/v1/deliveries?"+q.Encode(), nil, &list)
	return list, err
}

// Sinks lists the sinks with their state.
func (c *Client) Sinks(ctx context.Context) ([]sinks.Status, error) {
	var list []sinks.Status
	err := c.Do(ctx, http.MethodGet, "/admin/v1/sinks", nil, &list)
	return list, err
}

// Sink reads one sink's state.
func (c *Client) Sink(ctx context.Context, sink string) (sinks.Status, error) {
	var s sinks.Status
	err := c.Do(ctx, http.MethodGet, "/admin/v1/sinks/"+url.PathEscape(sink), nil, &s)
	return s, err
}

// DeadLetterQueues lists the dead-letter queues: every configured sink's
// and those sinks no longer configured left with dead letters.
func (c *Client) DeadLetterQueues(ctx context.Context) ([]sinks.DeadLetterQueue, error) {
	var list []sinks.DeadLetterQueue
	err := c.Do(ctx, http.MethodGet, "/admin/v1/dlq", nil, &list)
	return list, err
}

// DeadLetters reads a page of a sink's dead letters, oldest first; limit 0
// is the API's default page.
func (c *Client) DeadLetters(ctx context.Context, sink, after string, limit int) (sinks.DeadLetterPage, error) {
	q := url.Values{"after": {after}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var page sinks.DeadLetterPage
	err := c.Do(ctx, http.MethodGet, "/admin/v1/sinks/"+url.PathEscape(sink)+"/dlq?"+q.Encode(), nil, &page)
	return page, err
}

// Redrive starts a job delivering a sink's dead letters again.
func (c *Client) Redrive(ctx context.Context, sink string, req admin.RedriveRequest) (Job, error) {
	return c.StartJob(ctx, "/admin/v1/sinks/"+url.PathEscape(sink)+"/dlq/redrive", req)
}

// Replay starts a job sending a sink the events since req.Since again.
func (c *Client) Replay(ctx context.Context, sink string, req admin.ReplayRequest) (Job, error) {
	return c.StartJob(ctx, "/admin/v1/sinks/"+url.PathEscape(sink)+"/replay", req)
}

// ForgetSink deletes what a sink no longer configured left in NATS, and
// says what it deleted.
func (c *Client) ForgetSink(ctx context.Context, sink string) (sinks.Forgotten, error) {
	var f sinks.Forgotten
	err := c.Do(ctx, http.MethodPost, "/admin/v1/sinks/"+url.PathEscape(sink)+"/forget", nil, &f)
	return f, err
}

// Tail streams events, one structured CloudEvent per line (NDJSON); q takes
// tenant, type, since, from_seq and follow. The caller closes the stream;
// it is not bounded by Timeout.
func (c *Client) Tail(ctx context.Context, q url.Values) (io.ReadCloser, error) {
	res, err := c.Send(ctx, http.MethodGet, "/admin/v1/events?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	return res.Body, nil
}

// Keys lists the relay's keys: its event-signing key and the event
// stream's, and the access-token keys (never a secret).
func (c *Client) Keys(ctx context.Context) (admin.KeysInfo, error) {
	var k admin.KeysInfo
	err := c.Do(ctx, http.MethodGet, "/admin/v1/keys", nil, &k)
	return k, err
}

// RotateEventKey gives the front end a new event-signing key and retires
// the old one.
func (c *Client) RotateEventKey(ctx context.Context) (admin.KeyRotation, error) {
	var res admin.KeyRotation
	err := c.Do(ctx, http.MethodPost, "/admin/v1/keys/events/rotate", nil, &res)
	return res, err
}

// RotateOAuthKey gives the relay a new access-token key; those the old
// key signed keep working for req.Overlap.
func (c *Client) RotateOAuthKey(ctx context.Context, req admin.KeyRotateRequest) (admin.KeyRotation, error) {
	var res admin.KeyRotation
	err := c.Do(ctx, http.MethodPost, "/admin/v1/keys/oauth/rotate", req, &res)
	return res, err
}
