// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// maxResponseBytes bounds what the bench reads of one response. It is
// generous because a non-scimrelay server may answer a group PATCH with the
// whole member list; the bench reads it all to keep the connection reusable.
const maxResponseBytes = 64 << 20

// client sends the bench's requests through one keep-alive transport.
type client struct {
	base  string
	auth  string
	http  *http.Client
	trans *http.Transport
}

func newClient(o Options, base string) *client {
	conns := o.Concurrency
	if o.Rate > 0 {
		conns = max(conns, openLoopMaxInFlight)
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &client{
		base:  base,
		auth:  "Bearer " + o.Token,
		trans: tr,
		http: &http.Client{
			Transport: tr,
			Timeout:   o.Timeout,
			// Entra does not follow redirects; a 3xx is an answer to count.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (c *client) close() { c.trans.CloseIdleConnections() }

// request is one SCIM request and what counts as its success.
type request struct {
	method, path string
	body         []byte
	want         []int // the statuses that are success
	// parse checks a successful response's body; it may set *found.
	parse func(body []byte, found *string) error
	found *string
}

// result is the outcome of one request.
type result struct {
	status int // 0 = no response (network error, timeout)
	end    time.Time
	err    error // nil when status is wanted and the body parsed
	// throttled counts the 429 answers waited out (Retry-After) and sent
	// again before this outcome.
	throttled int
}

// Entra's answer to 429: wait what Retry-After says (or a default), send
// again, and give up after a few tries.
const (
	maxThrottleRetries = 10
	defaultRetryAfter  = time.Second
	maxRetryAfter      = 5 * time.Minute
)

// errStatus reports an unexpected status.
var errStatus = errors.New("unexpected status")

// send makes one request; res.end is when its response body was read. A
// 429 is waited out as its Retry-After asks and the request sent again, as
// Entra does, up to maxThrottleRetries times.
func (c *client) send(ctx context.Context, r request) result {
	for throttled := 0; ; throttled++ {
		res, wait := c.sendOnce(ctx, r)
		res.throttled = throttled
		if res.status != http.StatusTooManyRequests || throttled == maxThrottleRetries {
			return res
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res
		case <-t.C:
		}
	}
}

// retryAfter reads a Retry-After header: seconds or an HTTP date, bounded;
// defaultRetryAfter when absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs >= 0 {
		return min(time.Duration(secs)*time.Second, maxRetryAfter)
	}
	if at, err := http.ParseTime(v); err == nil {
		return min(max(at.Sub(now), 0), maxRetryAfter)
	}
	return defaultRetryAfter
}

// sendOnce makes one request, and says how long to wait before sending it
// again when it was answered 429.
func (c *client) sendOnce(ctx context.Context, r request) (result, time.Duration) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path, body)
	if err != nil {
		return result{end: time.Now(), err: fmt.Errorf("building request: %w", err)}, 0
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/scim+json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return result{end: time.Now(), err: err}, 0
	}
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	_ = resp.Body.Close()
	res := result{status: resp.StatusCode, end: time.Now()}
	switch {
	case !slices.Contains(r.want, resp.StatusCode):
		res.err = fmt.Errorf("%w %d: %s", errStatus, resp.StatusCode, snippet(data))
	case readErr != nil:
		res.err = fmt.Errorf("reading response: %w", readErr)
	case r.parse != nil:
		res.err = r.parse(data, r.found)
	}
	return res, retryAfter(resp.Header.Get("Retry-After"), res.end)
}

// snippet shortens a response body for an error message.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

// listResponse is the part of a SCIM ListResponse the bench reads.
type listResponse struct {
	TotalResults *int `json:"totalResults"`
	Resources    []struct {
		ID      string          `json:"id"`
		Members json.RawMessage `json:"members"`
	} `json:"Resources"`
}

// expectEmptyList checks a filter GET's answer: a ListResponse with
// totalResults 0. When the filter found something, it sets *found to the
// first match's id, so that the bench links to it as Entra would.
func expectEmptyList(body []byte, found *string) error {
	var l listResponse
	if err := json.Unmarshal(body, &l); err != nil {
		return fmt.Errorf("filter response is not a ListResponse: %w", err)
	}
	if l.TotalResults == nil {
		return errors.New("filter response has no totalResults")
	}
	if *l.TotalResults == 0 {
		return nil
	}
	if len(l.Resources) > 0 && l.Resources[0].ID != "" && found != nil {
		*found = l.Resources[0].ID
	}
	return fmt.Errorf("filter found %d resources; want 0 (a name of this run exists already)", *l.TotalResults)
}

// expectID checks a create's answer: a resource with an id, stored in *found.
func expectID(body []byte, found *string) error {
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("create response is not a resource: %w", err)
	}
	if r.ID == "" {
		return errors.New("create response has no id")
	}
	if found != nil {
		*found = r.ID
	}
	return nil
}

// userBody is Entra's create-user body.
func userBody(u *user, i int) []byte {
	given, family := fmt.Sprintf("Given%06d", i), "Bench"
	return mustJSON(map[string]any{
		"schemas":     []string{scim.UserSchema, scim.EnterpriseUserSchema},
		"externalId":  u.externalID,
		"userName":    u.name,
		"active":      true,
		"displayName": given + " " + family,
		"emails":      []map[string]any{{"primary": true, "type": "work", "value": u.name}},
		"meta":        map[string]string{"resourceType": "User"},
		"name":        map[string]string{"formatted": given + " " + family, "familyName": family, "givenName": given},
		scim.EnterpriseUserSchema: map[string]string{
			"employeeNumber": fmt.Sprintf("E%06d", i),
			"department":     fmt.Sprintf("Department %d", i%17),
		},
		"roles": []any{},
	})
}

// groupBody is Entra's create-group body: no members.
func groupBody(g *group) []byte {
	return mustJSON(map[string]any{
		"schemas":     []string{scim.GroupSchema, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"},
		"externalId":  g.externalID,
		"displayName": g.name,
		"meta":        map[string]string{"resourceType": "Group"},
	})
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path,omitempty"`
	Value any    `json:"value"`
}

func patchBody(ops ...patchOp) []byte {
	return mustJSON(map[string]any{"schemas": []string{scim.PatchOpSchema}, "Operations": ops})
}

// addMembersBody is Entra's member addition: op Add, path members.
func addMembersBody(ids []string) []byte {
	v := make([]map[string]string, len(ids))
	for i, id := range ids {
		v[i] = map[string]string{"value": id}
	}
	return patchBody(patchOp{Op: "Add", Path: "members", Value: v})
}

// patchUserBody is Entra's replace-multi-flag shape: a filtered path for the
// work email, then a path-less replace with dotted and URN keys.
func patchUserBody(u *user, i int) []byte {
	return patchBody(
		patchOp{Op: "replace", Path: `emails[type eq "work"].value`, Value: "changed." + u.name},
		patchOp{Op: "replace", Value: map[string]string{
			"displayName":     fmt.Sprintf("Changed%06d Bench", i),
			"name.givenName":  fmt.Sprintf("Changed%06d", i),
			"name.familyName": "Benched",
			scim.EnterpriseUserSchema + ":employeeNumber": fmt.Sprintf("F%06d", i),
		}},
	)
}

// deactivateBody is Entra's deactivation without the aadOptscim062020 flag:
// active as the string "False".
var deactivateBody = patchBody(patchOp{Op: "Replace", Path: "active", Value: "False"})

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encoding a request body: %v", err)) // only maps of strings: cannot happen
	}
	return b
}
