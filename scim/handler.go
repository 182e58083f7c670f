// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gorilla/mux"
)

// ContentType is the media type of every SCIM response.
const ContentType = "application/scim+json; charset=utf-8"

// Defaults for Options.
const (
	DefaultMaxResults   = 1000
	DefaultCount        = 100
	DefaultMaxBodyBytes = 4 << 20
	DefaultMaxJSONDepth = 32
	// DefaultBulkMaxOperations and DefaultBulkMaxPayload bound /Bulk.
	DefaultBulkMaxOperations = 1000
	DefaultBulkMaxPayload    = 1 << 20
	// DefaultMaxSortMatches bounds a sorted list: each match is held (as
	// its sort key and id) until the sort is done.
	DefaultMaxSortMatches = 50_000
	memberChunk           = 1000 // members fetched per Backend.Members call
)

// Options configures a Handler. The zero value works.
type Options struct {
	// BaseURL is the service's public URL (relay.yaml public_url), used for
	// meta.location and Location headers. Empty: built from each request.
	BaseURL string
	// Logger receives errors; nil discards them.
	Logger *slog.Logger
	// MaxResults caps a page (advertised as filter.maxResults).
	MaxResults int
	// DefaultCount is the page size when the client gives no count.
	DefaultCount int
	// MaxBodyBytes bounds a request body: a larger one gets 413.
	MaxBodyBytes int64
	// MaxJSONDepth bounds how deeply a body nests: deeper gets 400 invalidSyntax.
	MaxJSONDepth int
	// MaxSortMatches bounds a list with sortBy: when more resources match,
	// the answer is 400 tooMany (Query.SortLimit).
	MaxSortMatches int
	// Limiter, when set, is asked once per authenticated request, and for
	// a /Bulk request once more for each of its operations but the first.
	Limiter Limiter
	// BulkMaxOperations and BulkMaxPayload bound a /Bulk request
	// (advertised as bulk.maxOperations and bulk.maxPayloadSize); more gets
	// 413. Zero takes the defaults.
	BulkMaxOperations int
	BulkMaxPayload    int64
	// TokenPath, when set, is where clients get OAuth 2.0 access tokens for
	// a tenant, a path on the same origin with {tenant} in it (for example
	// "/oauth2/{tenant}/token"): ServiceProviderConfig then advertises the
	// oauth2 scheme with that endpoint.
	TokenPath string
	// BasicAuth accepts HTTP Basic credentials, checked by the
	// Authenticator's AuthenticateBasic, and advertises the httpbasic scheme.
	BasicAuth bool
	// Observe, when set, is called after every request with what happened
	// (the provisioning log and metrics hang off it).
	Observe func(ctx context.Context, info *RequestInfo)
	// ValidTenant, when set, says which tenant names are possible at all
	// (the relay sets the event contract's rule, events.ValidName): a
	// path with any other is 404 before authentication, since the syntax
	// is public and the answer reveals nothing. Which tenants exist is the
	// Authenticator's to say.
	ValidTenant func(name string) bool
}

// Limiter decides whether a tenant may make requests now.
type Limiter interface {
	// AllowN reports whether tenant may make n more requests, and if not,
	// how long until it may.
	AllowN(tenant string, n int) (ok bool, retryAfter time.Duration)
	// Burst says how many requests tenant may make at once, so that a
	// Bulk request costing more is charged that many: the largest Bulk a
	// client may send then passes once the tenant's budget is full.
	Burst(tenant string) int
}

// operations are the names the handler gives its requests in
// RequestInfo.Operation; route refuses any other, so that the list cannot
// drift from the routes.
var operations = []string{"create", "get", "list", "search", "replace", "patch", "delete", "discovery", "bulk", "me"}

// Operations returns every name the handler can give a request in
// RequestInfo.Operation, for those that filter or label by it. The slice is
// the caller's.
func Operations() []string { return slices.Clone(operations) }

// RequestInfo describes one request after it was answered.
type RequestInfo struct {
	Start time.Time
	// RequestID is the relay's own id of the request (NewRequestID), the
	// one its answer's X-Request-Id carries: never the client's choice.
	RequestID    string
	Tenant       string
	Method       string
	Path         string
	Operation    string // one of Operations()
	ResourceType string // User, Group, or "" for discovery and errors before routing
	ResourceID   string
	Name         string // userName or displayName of the resource, when known
	Email        string // a User's primary (else work) email, when known
	Status       int
	ScimType     string
	Detail       string
	Latency      time.Duration
	// ClientRequestID is the X-Request-Id the client sent, when it is a
	// sane one (ClientRequestID), kept apart from RequestID: anyone can
	// send any id, including another request's.
	ClientRequestID string
	// Authenticated says the request's credential was accepted: a refusal
	// of one that was not costs its sender nothing, and the provisioning
	// log records such refusals in summaries past a few a minute.
	Authenticated bool
	// EventIDs are the ids of the events the request's writes committed
	// (WriteResult.EventIDs), in commit order.
	EventIDs []string
	// FailureLogged says the handler logged, with its cause, the failure
	// this answer reports (an internal error or a panic, answered 500), so
	// that an observer logging 5xx answers does not log it a second time.
	FailureLogged bool
}

// Handler serves the SCIM 2.0 protocol for every tenant under /scim/v2/{tenant}.
type Handler struct {
	backend Backend
	auth    Authenticator
	o       Options
	router  *mux.Router
	log     *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns a handler serving b, authenticating with auth.
func NewHandler(b Backend, auth Authenticator, o Options) *Handler {
	if o.MaxResults <= 0 {
		o.MaxResults = DefaultMaxResults
	}
	if o.DefaultCount <= 0 {
		o.DefaultCount = DefaultCount
	}
	if o.DefaultCount > o.MaxResults {
		o.DefaultCount = o.MaxResults
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxJSONDepth <= 0 {
		o.MaxJSONDepth = DefaultMaxJSONDepth
	}
	if o.MaxSortMatches <= 0 {
		o.MaxSortMatches = DefaultMaxSortMatches
	}
	if o.BulkMaxOperations <= 0 {
		o.BulkMaxOperations = DefaultBulkMaxOperations
	}
	if o.BulkMaxPayload <= 0 {
		o.BulkMaxPayload = DefaultBulkMaxPayload
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{backend: b, auth: auth, o: o, log: log}
	h.router = h.routes()
	return h
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, c *call) error

// call carries what a request resolved to through the handlers.
type call struct {
	tenant string
	id     string // the {id} path segment, decoded
	rt     *ResourceType
	base   string // the tenant's base URL, e.g. https://relay.example.com/scim/v2/acme
	info   *RequestInfo
}

func (h *Handler) routes() *mux.Router {
	notFound := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.writeError(w, req, Errorf(ErrNotFound, "no SCIM endpoint at %s; the base URL is /scim/v2/<tenant>", req.URL.Path))
	})
	// Paths are taken literally: no cleaning of "..", and an encoded "/"
	// stays inside its segment, so that /Users/<id>%2F.. is an unknown id,
	// not a redirect to the list.
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	r.NotFoundHandler = notFound
	t := r.PathPrefix("/scim/v2/{tenant}").Subrouter()
	t.NotFoundHandler = notFound
	for _, rt := range ResourceTypes {
		t.Handle(rt.Endpoint, h.methods(
			get(h.route(rt, "list", h.list)),
			post(h.route(rt, "create", h.create)),
		))
		t.Handle(rt.Endpoint+"/.search", h.methods(post(h.route(rt, "search", h.search))))
		t.Handle(rt.Endpoint+"/{id}", h.methods(
			get(h.route(rt, "get", h.get)),
			put(h.route(rt, "replace", h.replace)),
			patch(h.route(rt, "patch", h.patch)),
			del(h.route(rt, "delete", h.delete)),
		))
	}
	t.Handle("/ServiceProviderConfig", h.methods(get(h.route(nil, "discovery", h.serviceProviderConfig))))
	t.Handle("/Schemas", h.methods(get(h.route(nil, "discovery", h.schemas))))
	t.Handle("/Schemas/{id}", h.methods(get(h.route(nil, "discovery", h.schema))))
	t.Handle("/ResourceTypes", h.methods(get(h.route(nil, "discovery", h.resourceTypes))))
	t.Handle("/ResourceTypes/{id}", h.methods(get(h.route(nil, "discovery", h.resourceType))))
	t.Handle("/Bulk", h.methods(post(h.route(nil, "bulk", h.bulk))))
	t.Handle("/Me", h.route(nil, "me", notImplemented("/Me is not supported: scimrelay has no authenticated subject")))
	return r
}

type methodRoute struct {
	method string
	h      http.Handler
}

func get(h http.Handler) methodRoute   { return methodRoute{http.MethodGet, h} }
func post(h http.Handler) methodRoute  { return methodRoute{http.MethodPost, h} }
func put(h http.Handler) methodRoute   { return methodRoute{http.MethodPut, h} }
func patch(h http.Handler) methodRoute { return methodRoute{http.MethodPatch, h} }
func del(h http.Handler) methodRoute   { return methodRoute{http.MethodDelete, h} }

// methods dispatches on the request method, answering 405 with an Allow
// header for the others.
func (h *Handler) methods(routes ...methodRoute) http.Handler {
	allowed := make([]string, len(routes))
	for i, m := range routes {
		allowed[i] = m.method
	}
	allow := strings.Join(allowed, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range routes {
			if m.method == r.Method {
				m.h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Allow", allow)
		h.writeError(w, r, Errorf(ErrMethodNotAllowed, "%s is not allowed on %s; use %s", Truncate(r.Method, 16), Truncate(r.URL.Path, 256), allow))
	})
}

func notImplemented(detail string) handlerFunc {
	return func(http.ResponseWriter, *http.Request, *call) error {
		return Errorf(ErrNotImplemented, "%s", detail)
	}
}

// ServeHTTP answers one request and reports it to Options.Observe.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, info: RequestInfo{
		Start:           time.Now(),
		RequestID:       NewRequestID(),
		ClientRequestID: ClientRequestID(r),
		Method:          r.Method,
		Path:            r.URL.Path,
	}}
	info := &rec.info
	w.Header().Set("X-Request-Id", info.RequestID)
	canonicalPath(r.URL)
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			h.log.ErrorContext(r.Context(), "scim handler panicked", "request_id", info.RequestID, "panic", p)
			info.FailureLogged = true
			if !rec.wrote {
				h.writeError(rec, r, Errorf(ErrInternal, "internal error (request %s)", info.RequestID))
			}
		}
		info.Status = rec.status
		info.Latency = time.Since(info.Start)
		if h.o.Observe != nil {
			h.o.Observe(r.Context(), info)
		}
		if p == http.ErrAbortHandler {
			panic(p) // a response already under way: net/http drops the connection
		}
	}()
	h.router.ServeHTTP(rec, r)
}

// endpoints are the path segments after /scim/v2/<tenant> this service
// serves, in their canonical case.
var endpoints = func() map[string]string {
	m := map[string]string{}
	for _, e := range []string{"ServiceProviderConfig", "Schemas", "ResourceTypes", "Bulk", "Me", ".search"} {
		m[strings.ToLower(e)] = e
	}
	for _, rt := range ResourceTypes {
		e := strings.TrimPrefix(rt.Endpoint, "/")
		m[strings.ToLower(e)] = e
	}
	return m
}()

// canonicalPath tolerates a trailing slash, and a doubled one between the
// tenant and the endpoint (/scim/v2/acme//Users: a Tenant URL entered with
// a trailing slash, as Microsoft's own examples write it), and rewrites the
// endpoint segment of a SCIM path (the one after the tenant, and a .search
// after it) to its canonical case, so that /users routes as /Users: clients
// differ, and nothing is gained by refusing them. It works on the encoded
// path and touches only whole segments that name an endpoint, so an id such
// as %2F stays in its segment and never becomes a route to the collection.
func canonicalPath(u *url.URL) {
	escaped := u.EscapedPath()
	trimmed := escaped
	if len(trimmed) > 1 {
		trimmed = strings.TrimRight(trimmed, "/")
	}
	segs := strings.Split(trimmed, "/")
	// "", "scim", "v2", tenant, endpoint, [id or .search]
	if len(segs) >= 5 && segs[1] == "scim" && segs[2] == "v2" {
		changed := false
		if len(segs) >= 6 && segs[4] == "" {
			if _, ok := lookupLower(endpoints, segs[5]); ok {
				// A Tenant URL entered with a trailing slash: the client
				// appended "/Users" to it.
				segs = slices.Delete(segs, 4, 5)
				changed = true
			}
		}
		for i := 4; i < len(segs) && i < 6; i++ {
			if canon, ok := lookupLower(endpoints, segs[i]); ok && (i == 4 || canon == ".search") && segs[i] != canon {
				segs[i] = canon
				changed = true
			}
		}
		if changed { // most paths are canonical already
			trimmed = strings.Join(segs, "/")
		}
	}
	if trimmed == escaped {
		return
	}
	if p, err := url.PathUnescape(trimmed); err == nil {
		u.Path, u.RawPath = p, trimmed
	}
}

// route adapts a handlerFunc: it resolves the tenant, authenticates, applies
// the rate limit, and turns a returned error into a SCIM error response.
func (h *Handler) route(rt *ResourceType, op string, f handlerFunc) http.Handler {
	if !slices.Contains(operations, op) {
		panic("scim: operation " + op + " is not in Operations")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoOf(w)
		if info == nil {
			info = &RequestInfo{}
		}
		vars := mux.Vars(r) // raw: the router matches the encoded path
		c := &call{tenant: vars["tenant"], rt: rt, info: info}
		if id, err := url.PathUnescape(vars["id"]); err == nil {
			c.id = id
		} else {
			c.id = vars["id"]
		}
		info.Operation = op
		if rt != nil {
			info.ResourceType = rt.Name
			info.ResourceID = c.id
		}
		if err := h.admit(r, c); err != nil {
			h.writeError(w, r, err)
			return
		}
		info.Tenant = c.tenant
		c.base = h.baseURL(r, c.tenant)
		if err := f(w, r, c); err != nil {
			h.writeError(w, r, err)
		}
	})
}

// admit checks the tenant, the credentials and the rate limit.
func (h *Handler) admit(r *http.Request, c *call) error {
	if h.o.ValidTenant != nil && !h.o.ValidTenant(c.tenant) {
		return Errorf(ErrNotFound, "no tenant %q", Truncate(c.tenant, 64))
	}
	if err := h.authenticate(r, c.tenant); err != nil {
		return err
	}
	c.info.Authenticated = true
	return h.limit(c.tenant, 1)
}

// limit takes n requests from the tenant's rate limit.
func (h *Handler) limit(tenant string, n int) error {
	if h.o.Limiter == nil || n <= 0 {
		return nil
	}
	if ok, wait := h.o.Limiter.AllowN(tenant, n); !ok {
		return &rateLimited{wait: wait, tenant: tenant}
	}
	return nil
}

// authenticate checks the request's Authorization header: a bearer token
// (RFC 6750), or HTTP Basic credentials (RFC 7617) that the Authenticator
// checks as an OAuth client's id and secret.
func (h *Handler) authenticate(r *http.Request, tenant string) error {
	usage := bearerUsage
	if h.o.BasicAuth {
		usage = bearerOrBasicUsage
	}
	if len(r.Header.Values("Authorization")) > 1 {
		return Errorf(ErrInvalidSyntax, "more than one Authorization header; send exactly one")
	}
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return Errorf(ErrUnauthorized, "missing Authorization header; %s", usage)
	}
	scheme, cred, ok := strings.Cut(hdr, " ")
	cred = strings.TrimSpace(cred)
	if !ok || cred == "" || strings.ContainsAny(cred, " \t") {
		return Errorf(ErrUnauthorized, "malformed Authorization header; %s", usage)
	}
	// An unknown tenant answers as a wrong credential does, so that tenant
	// names cannot be found by asking.
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if err := h.auth.Authenticate(r.Context(), tenant, cred); errors.Is(err, ErrNotFound) {
			return Errorf(ErrUnauthorized, "invalid bearer token")
		} else if err != nil {
			return err
		}
		return nil
	case strings.EqualFold(scheme, "Basic") && h.o.BasicAuth:
		user, password, ok := r.BasicAuth()
		if !ok || user == "" || password == "" {
			return Errorf(ErrUnauthorized, "malformed Basic credentials; %s", usage)
		}
		if err := h.auth.AuthenticateBasic(r.Context(), tenant, user, password); errors.Is(err, ErrNotFound) {
			return Errorf(ErrUnauthorized, "invalid client credentials")
		} else if err != nil {
			return err
		}
		return nil
	}
	return Errorf(ErrUnauthorized, "malformed Authorization header: unsupported scheme; %s", usage)
}

// How to authenticate, for the refusals that say so.
const (
	bearerUsage        = "send Authorization: Bearer <token>"
	bearerOrBasicUsage = bearerUsage + ", or Basic with an OAuth client's id and secret"
)

// rateLimited is a 429 that carries its Retry-After.
type rateLimited struct {
	wait   time.Duration
	tenant string
}

func (e *rateLimited) Error() string {
	return fmt.Sprintf("tenant %s is over its request rate; retry in %s s", e.tenant, e.retryAfter())
}

func (e *rateLimited) retryAfter() string {
	secs := int((e.wait + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return strconv.Itoa(secs)
}

// baseURL returns the tenant's SCIM base URL.
func (h *Handler) baseURL(r *http.Request, tenant string) string {
	if h.o.BaseURL != "" {
		return TenantURL(h.o.BaseURL, tenant)
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	return TenantURL(scheme+"://"+r.Host, tenant)
}

// --- resources

func (h *Handler) list(w http.ResponseWriter, r *http.Request, c *call) error {
	q, err := queryOf(r)
	if err != nil {
		return err
	}
	return h.query(w, r, c, listParams{
		filter: q.Get("filter"), startIndex: q.Get("startIndex"), count: q.Get("count"),
		sortBy: q.Get("sortBy"), sortOrder: q.Get("sortOrder"),
		attributes: q.Get("attributes"), excluded: q.Get("excludedAttributes"),
	})
}

// search serves POST /.search (RFC 7644 §3.4.3). Its body must list the
// SearchRequest schema, as a PATCH body must list PatchOp and a bulk
// request BulkRequest: a body without it is refused, not guessed at.
func (h *Handler) search(w http.ResponseWriter, r *http.Request, c *call) error {
	// Its parameters are in its body (RFC 7644 §3.4.3: queries "without
	// passing parameters on the URL"): one in the query too was ignored
	// for the body's, and the client got an answer to another question.
	if r.URL.RawQuery != "" {
		q, err := queryOf(r)
		if err != nil {
			return err
		}
		for _, name := range queryParams {
			if _, ok := q[name]; ok {
				return Errorf(ErrInvalidValue, "POST .search takes %s in its body, not in the query: put it in the search request", name)
			}
		}
	}
	body, err := h.readBody(w, r, h.o.MaxBodyBytes)
	if err != nil {
		return err
	}
	// Read as every request body is (a name given twice is refused, in
	// any spelling), then member by member, so that a refusal names the
	// member and what it must be.
	raw, err := decodeObject(body, "request body")
	if err != nil {
		return err
	}
	m, twice := lowerKeys(raw)
	if twice != "" {
		return givenTwice("the search request", twice)
	}
	if !listsSchema(m["schemas"], SearchRequestSchema) {
		return Errorf(ErrInvalidSyntax, "a search request needs \"schemas\": [%q]", SearchRequestSchema)
	}
	var p listParams
	for _, f := range []struct {
		name, must string
		kind       *Error
		read       func(any) (string, bool)
		to         *string
	}{
		{"filter", `a string, a filter such as userName eq "ann"`, ErrInvalidFilter, searchString, &p.filter},
		{"startIndex", "an integer", ErrInvalidValue, searchNumber, &p.startIndex},
		{"count", "an integer", ErrInvalidValue, searchNumber, &p.count},
		{"sortBy", "a string, an attribute name", ErrInvalidValue, searchString, &p.sortBy},
		{"sortOrder", `"ascending" or "descending"`, ErrInvalidValue, searchString, &p.sortOrder},
		{"attributes", "an array of attribute names", ErrInvalidValue, searchNames, &p.attributes},
		{"excludedAttributes", "an array of attribute names", ErrInvalidValue, searchNames, &p.excluded},
	} {
		v := m[strings.ToLower(f.name)]
		if v == nil {
			continue // null, as absent
		}
		s, ok := f.read(v)
		if !ok {
			return Errorf(f.kind, "%s must be %s, got %s", f.name, f.must, Truncate(quoteOrKind(v), 64))
		}
		*f.to = s
	}
	return h.query(w, r, c, p)
}

// searchString, searchNumber and searchNames read a search request's
// members as the query parameters they stand for: a number keeps its text,
// for query to read as it reads count=10 (1e2 is not an integer there
// either), and a list of names is joined with commas.
func searchString(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

func searchNumber(v any) (string, bool) {
	n, ok := v.(json.Number)
	return n.String(), ok
}

func searchNames(v any) (string, bool) {
	list, ok := v.([]any)
	names := make([]string, len(list))
	for i, e := range list {
		if names[i], ok = e.(string); !ok {
			return "", false
		}
	}
	return strings.Join(names, ","), ok
}

type listParams struct {
	filter, startIndex, count, sortBy, sortOrder, attributes, excluded string
}

// atoiSaturating reads a decimal integer, one beyond int's range as the
// largest or smallest int: a count or startIndex past it is capped, or
// past the end, like any other too large.
func atoiSaturating(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if errors.Is(err, strconv.ErrRange) {
		return n, nil
	}
	return n, err
}

func (h *Handler) query(w http.ResponseWriter, r *http.Request, c *call, p listParams) error {
	q := Query{StartIndex: 1, Count: h.o.DefaultCount}
	if p.filter != "" {
		f, err := ParseFilter(c.rt, p.filter)
		if err != nil {
			return err
		}
		q.Filter = f
	}
	if p.startIndex != "" {
		n, err := atoiSaturating(p.startIndex)
		if err != nil {
			return Errorf(ErrInvalidValue, "startIndex must be an integer, got %q", Truncate(p.startIndex, 32))
		}
		if n > 1 {
			q.StartIndex = n
		}
	}
	if p.count != "" {
		n, err := atoiSaturating(p.count)
		if err != nil {
			return Errorf(ErrInvalidValue, "count must be an integer, got %q", Truncate(p.count, 32))
		}
		q.Count = max(0, min(n, h.o.MaxResults))
	}
	if p.sortBy != "" {
		sp, err := c.rt.ParsePath(p.sortBy)
		if err != nil {
			return Errorf(ErrInvalidValue, "sortBy: %v", err)
		}
		if sp.URN == "" && (strings.EqualFold(sp.Name, "groups") || strings.EqualFold(sp.Name, "members")) {
			// Kept apart from the records, read after a page is cut: a
			// sort by them would be a sort by nothing.
			return Errorf(ErrInvalidValue, "sortBy: %s are memberships, which lists do not sort by; sort by another attribute", sp.Name)
		}
		q.SortBy, q.SortLimit = &sp, h.o.MaxSortMatches
	}
	switch strings.ToLower(p.sortOrder) {
	case "", "ascending":
	case "descending":
		q.Descending = true
	default:
		return Errorf(ErrInvalidValue, "sortOrder must be ascending or descending, got %q", Truncate(p.sortOrder, 32))
	}
	proj, err := ParseProjection(c.rt, p.attributes, p.excluded)
	if err != nil {
		return err
	}
	q.Stored = proj.whole()
	lw := newJSONWriter(w, http.StatusOK, "")
	// A group that changed between the list and the read of its members
	// is read again and written in its place while it still matches the
	// filter (one on members cannot be told without them).
	still := func(cur *Resource) bool {
		return q.Filter == nil || (!q.Filter.References("members") && q.Filter.Match(cur))
	}
	for attempt := 1; ; attempt++ {
		page, err := h.backend.List(r.Context(), c.tenant, c.rt, q)
		if err != nil {
			return err
		}
		err = h.writePage(r.Context(), lw, c, q, page, proj, still)
		if err == nil {
			return lw.finish()
		}
		if !errors.Is(err, ErrChanged) || lw.started || attempt == readAttempts {
			return h.fail(r, lw, err, "the groups of this page")
		}
		// A listed group was deleted, or no longer matches, and nothing
		// was sent: the page is taken again.
		lw.buf = lw.buf[:0]
	}
}

// writePage writes a list answer: the page's resources, each Group with
// the members of the version it is written at. A listed group deleted
// before its members were read, or one that no longer belongs, is
// ErrChanged.
func (h *Handler) writePage(ctx context.Context, lw *jsonWriter, c *call, q Query, page Page, proj *Projection, still func(*Resource) bool) error {
	lw.raw(`{"schemas":["` + ListResponseSchema + `"],"totalResults":`)
	lw.raw(strconv.Itoa(page.Total))
	lw.raw(`,"startIndex":` + strconv.Itoa(q.StartIndex) + `,"itemsPerPage":` + strconv.Itoa(len(page.Resources)+len(page.Stored)) + `,"Resources":[`)
	written := 0
	next := func() {
		if written > 0 {
			lw.raw(",")
		}
		written++
	}
	for _, res := range page.Resources {
		next()
		if err := h.writeLatest(ctx, lw, c, res, proj, still); err != nil {
			if errors.Is(err, ErrNotFound) {
				return ErrChanged
			}
			return err
		}
	}
	for _, s := range page.Stored {
		next()
		if err := h.writeStored(ctx, lw, c, s, proj); err != nil {
			return err
		}
	}
	lw.raw("]}")
	return nil
}

// readAttempts bounds how often a group is read again because it changed
// between the read of the group and the read of its members (ErrChanged):
// once is a concurrent write, three times in a row is a group changing
// faster than it can be answered.
const readAttempts = 3

// writeLatest writes res as writeResource does. A Group found changed
// before its members were read, while nothing of it was sent, is read
// again and written in its place, up to readAttempts times, as long as
// still (nil: always) says the group as it is now belongs in the answer;
// a single resource's answer takes the version written as its ETag. It
// returns the error of the last read: ErrChanged (the group kept changing,
// no longer belongs, or changed after part of it was sent), or the Get's
// (ErrNotFound: deleted).
func (h *Handler) writeLatest(ctx context.Context, jw *jsonWriter, c *call, res *Resource, proj *Projection, still func(*Resource) bool) error {
	mark, sent := len(jw.buf), jw.sent
	for attempt := 1; ; attempt++ {
		err := h.writeResource(ctx, jw, c, res, proj)
		if !errors.Is(err, ErrChanged) || jw.sent != sent || attempt == readAttempts {
			return err
		}
		jw.buf = jw.buf[:mark]
		cur, err := h.backend.Get(ctx, c.tenant, c.rt, res.ID())
		if err != nil {
			return err
		}
		if still != nil && !still(cur) {
			return ErrChanged
		}
		res = cur
		if jw.etag != "" {
			jw.etag = res.Meta().Version
		}
	}
}

// fail ends an answer that err broke. An answer whose first bytes were
// sent cannot be taken back: a group that changed while its members were
// sent (a group of more than a page of members, or a list whose earlier
// groups filled the first 64 KiB) cuts the connection, and the client
// reads again as after any broken read; the request's log entry says so.
// One that sent nothing is a 503 when a group kept changing.
func (h *Handler) fail(r *http.Request, jw *jsonWriter, err error, what string) error {
	if !errors.Is(err, ErrChanged) {
		return jw.abort(err)
	}
	if jw.started {
		const detail = "answer cut off: a group changed while its members were sent; read again"
		id := ""
		if info := infoOf(jw.w); info != nil {
			id, info.Detail = info.RequestID, detail
		}
		h.log.InfoContext(r.Context(), "scim "+detail, "path", r.URL.Path, "request_id", id)
		return jw.abort(err)
	}
	return Errorf(ErrUnavailable, "%s changed %d times while the answer was read; read again", what, readAttempts)
}

// projectionOf is the projection a request's attributes and
// excludedAttributes ask for. Most requests have no query at all, and
// need no map of its parameters to say so.
func projectionOf(rt *ResourceType, r *http.Request) (*Projection, error) {
	if r.URL.RawQuery == "" {
		return wholeResource, nil
	}
	q, err := queryOf(r)
	if err != nil {
		return nil, err
	}
	return ParseProjection(rt, q.Get("attributes"), q.Get("excludedAttributes"))
}

// queryParams are the query parameters RFC 7644 defines, as it spells
// them.
var queryParams = []string{"filter", "startIndex", "count", "sortBy", "sortOrder", "attributes", "excludedAttributes"}

// queryOf returns r's query parameters with those of SCIM under the names
// RFC 7644 gives them, whatever their case in the request: the RFC leaves
// it open, Entra asks a server not to match structural elements case
// by case, and a filter given as Filter and not read would answer with
// every resource. One given more than once, in one spelling or several,
// is refused unless every value is the same (which one counted would
// depend on their order), but for attributes and excludedAttributes,
// whose values are lists: theirs are joined.
func queryOf(r *http.Request) (url.Values, error) {
	q := r.URL.Query()
	for k, vs := range q {
		for _, name := range queryParams {
			if k != name && strings.EqualFold(k, name) {
				q[name] = append(q[name], vs...)
				delete(q, k)
			}
		}
	}
	for _, name := range queryParams {
		vs := q[name]
		switch {
		case len(vs) < 2:
		case name == "attributes" || name == "excludedAttributes":
			q[name] = []string{strings.Join(vs, ",")}
		case slices.ContainsFunc(vs, func(v string) bool { return v != vs[0] }):
			return nil, Errorf(ErrInvalidSyntax, "the query gives %s more than once (its name in any case), with different values", name)
		}
	}
	return q, nil
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, c *call) error {
	proj, err := projectionOf(c.rt, r)
	if err != nil {
		return err
	}
	res, err := h.backend.Get(r.Context(), c.tenant, c.rt, c.id)
	if err != nil {
		return err
	}
	c.info.Name, c.info.Email = resourceName(res), res.PrimaryEmail()
	// If-None-Match is not answered with 304: a user's groups and a group's
	// members' names come from other records, and change without a new
	// version of this one. The whole answer is always right.
	return h.respond(w, r, c, http.StatusOK, res, proj)
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := writePrecondition(r); err != nil {
		return err
	}
	proj, err := projectionOf(c.rt, r) // refused before anything is written
	if err != nil {
		return err
	}
	body, err := h.readBody(w, r, h.o.MaxBodyBytes)
	if err != nil {
		return err
	}
	created, err := h.createResource(r.Context(), c, body)
	if err != nil {
		return err
	}
	w.Header().Set("Location", c.location(created))
	return h.respond(w, r, c, http.StatusCreated, created, proj)
}

// createResource is a POST of body to c's resource type, for the endpoint
// and for /Bulk alike.
func (h *Handler) createResource(ctx context.Context, c *call, body []byte) (*Resource, error) {
	res, ignored, err := ParseResourceNoting(c.rt, body)
	if err != nil {
		return nil, err
	}
	c.info.Name, c.info.Email = resourceName(res), res.PrimaryEmail()
	c.noteIgnored(ignored)
	created, err := h.backend.Create(ctx, c.tenant, res)
	if err != nil {
		return nil, err
	}
	c.info.ResourceID = created.Resource.ID()
	c.produced(created)
	return created.Resource, nil
}

func (h *Handler) replace(w http.ResponseWriter, r *http.Request, c *call) error {
	ifMatch, err := writePrecondition(r)
	if err != nil {
		return err
	}
	proj, err := projectionOf(c.rt, r) // refused before anything is written
	if err != nil {
		return err
	}
	body, err := h.readBody(w, r, h.o.MaxBodyBytes)
	if err != nil {
		return err
	}
	res, err := h.replaceResource(r.Context(), c, body, ifMatch)
	if err != nil {
		return err
	}
	return h.respond(w, r, c, http.StatusOK, res, proj)
}

// replaceResource is a PUT of body to the resource c.id. The new state is
// compared with the stored one attribute by attribute, so a full replace
// reports the same fine-grained changes (and member events) as the PATCH
// that would have made it, and a PUT that repeats what is stored changes
// nothing.
func (h *Handler) replaceResource(ctx context.Context, c *call, body []byte, ifMatch Precondition) (*Resource, error) {
	in, ignored, err := ParseResourceNoting(c.rt, body)
	if err != nil {
		return nil, err
	}
	c.info.Name, c.info.Email = resourceName(in), in.PrimaryEmail()
	c.noteIgnored(ignored)
	var ops []MemberOp
	if c.rt == GroupResourceType {
		// PUT replaces the whole group, members included.
		members, err := MembersFromValue(in.Attrs["members"])
		if err != nil {
			return nil, err
		}
		delete(in.Attrs, "members")
		ops = []MemberOp{{Kind: RemoveAllMembers}}
		if len(members) > 0 {
			ops = append(ops, MemberOp{Kind: AddMembers, Members: members})
		}
	}
	res, err := h.backend.Update(ctx, c.tenant, c.rt, c.id, func(cur *Resource) (*Update, error) {
		if err := ifMatch.Check(cur); err != nil {
			return nil, err
		}
		next := &Resource{Type: cur.Type, Attrs: cloneObject(in.Attrs)}
		next.Attrs["id"] = cur.Attrs["id"]
		next.Attrs["meta"] = cur.Attrs["meta"]
		return &Update{Resource: next, Changes: Diff(cur, next), Members: ops}, nil
	})
	if err != nil {
		return nil, err
	}
	c.produced(res)
	return res.Resource, nil
}

func (h *Handler) patch(w http.ResponseWriter, r *http.Request, c *call) error {
	ifMatch, err := writePrecondition(r)
	if err != nil {
		return err
	}
	proj, err := projectionOf(c.rt, r) // refused before anything is written
	if err != nil {
		return err
	}
	body, err := h.readBody(w, r, h.o.MaxBodyBytes)
	if err != nil {
		return err
	}
	res, err := h.patchResource(r.Context(), c, body, ifMatch)
	if err != nil {
		return err
	}
	if patchAnswersEmpty(c.rt, proj) {
		if v := res.Meta().Version; v != "" {
			w.Header().Set("ETag", v)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return h.respond(w, r, c, http.StatusOK, res, proj)
}

// patchAnswersEmpty reports whether a PATCH is answered 204: a group's is,
// unless attributes were asked for (RFC 7644 §3.5.2 then wants 200). Entra
// asks for 204 on group PATCH: a body listing every member is what it must
// not get. A user's PATCH answers 200 with the user, as Entra's guide shows.
func patchAnswersEmpty(rt *ResourceType, proj *Projection) bool {
	return rt == GroupResourceType && !proj.Selects()
}

// patchResource is a PATCH of body to the resource c.id.
func (h *Handler) patchResource(ctx context.Context, c *call, body []byte, ifMatch Precondition) (*Resource, error) {
	p, ignored, err := ParsePatchNoting(c.rt, body)
	if err != nil {
		return nil, err
	}
	c.noteIgnored(ignored)
	res, err := h.backend.Update(ctx, c.tenant, c.rt, c.id, func(cur *Resource) (*Update, error) {
		if err := ifMatch.Check(cur); err != nil {
			return nil, err
		}
		return p.Apply(cur)
	})
	if err != nil {
		return nil, err
	}
	c.info.Name, c.info.Email = resourceName(res.Resource), res.Resource.PrimaryEmail()
	c.produced(res)
	return res.Resource, nil
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request, c *call) error {
	ifMatch, err := writePrecondition(r)
	if err != nil {
		return err
	}
	if err := h.deleteResource(r.Context(), c, ifMatch); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteResource is a DELETE of the resource c.id.
func (h *Handler) deleteResource(ctx context.Context, c *call, ifMatch Precondition) error {
	res, err := h.backend.Delete(ctx, c.tenant, c.rt, c.id, ifMatch)
	if err != nil {
		return err
	}
	c.produced(res)
	return nil
}

// produced records, for the provisioning log, the events a write committed.
func (c *call) produced(res WriteResult) {
	c.info.EventIDs = append(c.info.EventIDs, res.EventIDs...)
}

// location is the URL of a resource under the call's tenant.
func (c *call) location(res *Resource) string {
	return Location(c.base, res.Type, res.ID())
}

// noteIgnored records, for the provisioning log, the attributes a body
// carried (or a PATCH named) that the schema does not define and that were
// dropped.
func (c *call) noteIgnored(names []string) {
	if len(names) == 0 {
		return
	}
	note := "ignored unknown attributes: " + strings.Join(names, ", ")
	if c.info.Detail != "" {
		note = c.info.Detail + "; " + note
	}
	c.info.Detail = Truncate(note, 1024)
}

// respond writes one resource with its ETag. A Group that changed after
// res was read, before its members were, is read again, so that the
// members answered are those of the version the ETag names (writeLatest).
// A write's answer is never a failure, its change being stored: a group
// that kept changing, or was deleted, before its members were read is
// answered as the write stored it, without its members.
func (h *Handler) respond(w http.ResponseWriter, r *http.Request, c *call, status int, res *Resource, proj *Projection) error {
	jw := newJSONWriter(w, status, res.Meta().Version)
	err := h.writeLatest(r.Context(), jw, c, res, proj, nil)
	if err != nil && r.Method != http.MethodGet && !jw.started && (errors.Is(err, ErrChanged) || errors.Is(err, ErrNotFound)) {
		jw.buf, jw.etag = h.appendResource(jw.buf[:0], c, res, proj), res.Meta().Version
		err = nil
	}
	if err != nil {
		return h.fail(r, jw, err, c.rt.Name+" "+res.ID())
	}
	return jw.finish()
}

// appendResource writes a resource, projected, with meta.location and
// $ref values set from the base URL; a Group without its members.
func (h *Handler) appendResource(b []byte, c *call, res *Resource, proj *Projection) []byte {
	l := &links{}
	if proj.keeps("meta", "location") {
		l.location = c.location(res)
	}
	if proj.keeps("groups", "$ref") {
		l.base = c.base
	}
	return proj.Apply(res).appendJSON(b, l)
}

// writeResource writes a resource, projected, with meta.location and $ref
// values set from the base URL. A Group's members are streamed from the
// backend in chunks, so that a group of 100,000 members is never held whole.
func (h *Handler) writeResource(ctx context.Context, jw *jsonWriter, c *call, res *Resource, proj *Projection) error {
	b := h.appendResource(jw.buf, c, res, proj)
	if res.Type != GroupResourceType || !proj.Wants("members") {
		jw.buf = b
		return nil
	}
	// Stream members: the object is closed after them.
	b = b[:len(b)-1]
	subs := proj.subFilter("members", memberFields[:])
	after := ""
	first := true
	for {
		chunk, err := h.backend.Members(ctx, c.tenant, res.ID(), res.Meta().Version, after, memberChunk)
		if err != nil {
			return err
		}
		for _, m := range chunk {
			mark := len(b)
			if first {
				b = append(b, `,"members":[`...)
			} else {
				b = append(b, ',')
			}
			elem := len(b)
			if b = appendMember(b, m, c.base, subs); len(b) == elem+len("{}") {
				// members.display of a member without one: left out, as
				// Apply leaves out such elements of other attributes.
				b = b[:mark]
				continue
			}
			first = false
		}
		jw.buf = b
		if err := jw.flushIfLarge(); err != nil {
			return err
		}
		b = jw.buf
		if len(chunk) < memberChunk {
			break
		}
		after = chunk[len(chunk)-1].Value
	}
	if !first {
		b = append(b, ']')
	}
	jw.buf = append(b, '}')
	return nil
}

// memberFields are a member's sub-attributes, in the order an answer
// writes them.
var memberFields = [...]string{"value", "$ref", "display", "type"}

// appendMember writes one member object; subs limits it to those sub-attributes.
func appendMember(b []byte, m Member, base string, subs []string) []byte {
	ref := m.Ref
	if ref == "" && m.Value != "" {
		rt := UserResourceType
		if m.Type == GroupResourceType.Name {
			rt = GroupResourceType
		}
		ref = Location(base, rt, m.Value)
	}
	values := [len(memberFields)]string{m.Value, ref, m.Display, m.Type} // memberFields' order
	b = append(b, '{')
	wrote := false
	for i, name := range memberFields {
		if values[i] == "" || (subs != nil && !containsFold(subs, name)) {
			continue
		}
		if wrote {
			b = append(b, ',')
		}
		wrote = true
		b = appendString(b, name)
		b = append(b, ':')
		b = appendString(b, values[i])
	}
	return append(b, '}')
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func resourceName(r *Resource) string {
	if r.Type == GroupResourceType {
		return r.String("displayName")
	}
	return r.String("userName")
}

// utf8Charset reports whether a body in charset cs can be read as UTF-8:
// UTF-8 (also spelled utf8), or ASCII, which is part of it.
func utf8Charset(cs string) bool {
	for _, name := range []string{"utf-8", "utf8", "us-ascii", "ascii"} {
		if strings.EqualFold(cs, name) {
			return true
		}
	}
	return false
}

// readBody reads a request body of at most limit bytes and within the
// depth limit.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	// A body in a content coding is not read: a gzip body would be refused
	// for what it is not, and a plain one sent under a coding's name taken
	// as if the name were not there. RFC 9110 §15.5.16: 415, saying in
	// Accept-Encoding what is taken.
	for _, line := range r.Header.Values("Content-Encoding") {
		for _, coding := range strings.Split(line, ",") {
			if coding = strings.TrimSpace(coding); coding != "" && !strings.EqualFold(coding, "identity") {
				w.Header().Set("Accept-Encoding", "identity")
				return nil, Errorf(ErrUnsupportedMedia, "Content-Encoding %q is not supported; send the body uncompressed, without Content-Encoding", Truncate(coding, 32))
			}
		}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/scim+json" && mt != "application/json") {
			return nil, Errorf(ErrUnsupportedMedia, "Content-Type must be application/scim+json or application/json, got %q", Truncate(ct, 64))
		}
		// SCIM is UTF-8 (RFC 7644 §3.8); a body in another charset
		// would be read as UTF-8 and stored wrong.
		if cs, ok := params["charset"]; ok && !utf8Charset(cs) {
			return nil, Errorf(ErrUnsupportedMedia, "a SCIM body is UTF-8, got charset %q", Truncate(cs, 64))
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, Errorf(ErrPayloadTooLarge, "request body is larger than %d bytes", limit)
		}
		return nil, Errorf(ErrInvalidSyntax, "reading request body: %v", err)
	}
	if depth := jsonDepth(body); depth > h.o.MaxJSONDepth {
		return nil, Errorf(ErrInvalidSyntax, "request body nests deeper than %d levels", h.o.MaxJSONDepth)
	}
	// A JSON decoder would replace invalid UTF-8 and lone surrogate escapes
	// by U+FFFD, silently changing a name (and making it collide with
	// others): refuse them instead.
	if !utf8.Valid(body) {
		return nil, Errorf(ErrInvalidSyntax, "request body is not valid UTF-8")
	}
	if at := loneSurrogate(body); at >= 0 {
		return nil, Errorf(ErrInvalidSyntax, "request body has an unpaired UTF-16 surrogate escape at byte %d", at)
	}
	return body, nil
}

// loneSurrogate returns the offset of the first \uD800–\uDFFF escape in a
// JSON string that is not part of a surrogate pair, or -1.
func loneSurrogate(b []byte) int {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
		return rune(n), err == nil
	}
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\':
			r, ok := hex4(i)
			switch {
			case !ok:
				i++ // a one-character escape
			case utf16.IsSurrogate(r) && r < 0xDC00:
				if r2, ok := hex4(i + 6); !ok || r2 < 0xDC00 || r2 > 0xDFFF {
					return i
				}
				i += 11
			case utf16.IsSurrogate(r):
				return i
			default:
				i += 5
			}
		}
	}
	return -1
}

// jsonDepth returns how deeply the JSON text nests objects and arrays,
// without decoding it, so that a hostile body is refused before it costs more.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// --- discovery

// checkDiscoveryQuery refuses a filter on discovery endpoints (RFC 7644 §4).
func checkDiscoveryQuery(r *http.Request) error {
	q, err := queryOf(r)
	if err != nil {
		return err
	}
	if q.Get("filter") != "" {
		return Errorf(ErrForbidden, "discovery endpoints do not support filtering")
	}
	return nil
}

func (h *Handler) serviceProviderConfig(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkDiscoveryQuery(r); err != nil {
		return err
	}
	tokenURL := ""
	if h.o.TokenPath != "" {
		origin := strings.TrimSuffix(c.base, "/scim/v2/"+c.tenant)
		tokenURL = origin + strings.ReplaceAll(h.o.TokenPath, "{tenant}", c.tenant)
	}
	return writeJSON(w, http.StatusOK, serviceProviderConfig(c.base, h.o, tokenURL))
}

func (h *Handler) schemas(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkDiscoveryQuery(r); err != nil {
		return err
	}
	var docs []any
	for _, s := range knownSchemas() {
		docs = append(docs, h.tenantSchema(c, s))
	}
	return writeJSON(w, http.StatusOK, listResponse(docs))
}

// EmailUniqueness is what a Backend implements whose tenants may hold
// their users unique by work email instead of userName (the relay's
// unique: email); the handler asks it for the User schema a tenant
// advertises.
type EmailUniqueness interface {
	UniqueByEmail(tenant string) bool
}

// tenantSchema is s as c's tenant has it: in a tenant whose users are
// unique by work email, userName is not unique, and the User schema says
// so rather than what RFC 7643 asks of userName.
func (h *Handler) tenantSchema(c *call, s *Schema) schemaDoc {
	doc := schemaDocument(c.base, s)
	if u, ok := h.backend.(EmailUniqueness); ok && s == UserResourceType.Schema && u.UniqueByEmail(c.tenant) {
		doc.Attributes = slices.Clone(doc.Attributes)
		for i := range doc.Attributes {
			if doc.Attributes[i].Name == "userName" {
				doc.Attributes[i].Uniqueness = "none"
			}
		}
	}
	return doc
}

func (h *Handler) schema(w http.ResponseWriter, r *http.Request, c *call) error {
	id := c.id
	for _, s := range knownSchemas() {
		if strings.EqualFold(s.ID, id) {
			return writeJSON(w, http.StatusOK, h.tenantSchema(c, s))
		}
	}
	return Errorf(ErrNotFound, "no schema %q", Truncate(id, 128))
}

func (h *Handler) resourceTypes(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkDiscoveryQuery(r); err != nil {
		return err
	}
	var docs []any
	for _, rt := range ResourceTypes {
		docs = append(docs, resourceTypeDocument(c.base, rt))
	}
	return writeJSON(w, http.StatusOK, listResponse(docs))
}

func (h *Handler) resourceType(w http.ResponseWriter, r *http.Request, c *call) error {
	id := c.id
	for _, rt := range ResourceTypes {
		if strings.EqualFold(rt.ID, id) {
			return writeJSON(w, http.StatusOK, resourceTypeDocument(c.base, rt))
		}
	}
	return Errorf(ErrNotFound, "no resource type %q", Truncate(id, 128))
}

type listResponseDoc struct {
	Schemas      []string `json:"schemas"`
	TotalResults int      `json:"totalResults"`
	StartIndex   int      `json:"startIndex"`
	ItemsPerPage int      `json:"itemsPerPage"`
	Resources    []any    `json:"Resources"`
}

func listResponse(docs []any) listResponseDoc {
	if docs == nil {
		docs = []any{}
	}
	return listResponseDoc{Schemas: []string{ListResponseSchema}, TotalResults: len(docs), StartIndex: 1, ItemsPerPage: len(docs), Resources: docs}
}

// --- writing

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding response: %w", err)
	}
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	_, err = w.Write(b)
	return err
}

// writeError is the one place that turns an error into a SCIM error
// response. Errors that are not *Error are internal: logged, answered 500
// with the request id, never with their text.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	info := infoOf(w)
	var se *Error
	var rl *rateLimited
	switch {
	case errors.As(err, &rl):
		w.Header().Set("Retry-After", rl.retryAfter())
		se = Errorf(ErrTooManyRequests, "%s", rl.Error())
	case errors.As(err, &se):
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away (Entra timed out, a connection dropped):
		// nothing failed on our side, and nobody reads the answer.
		h.log.DebugContext(r.Context(), "scim client went away before the answer", "method", r.Method, "path", r.URL.Path)
		se = Errorf(ErrClientClosedRequest, "the client closed the request")
	default:
		id := ""
		if info != nil {
			id = info.RequestID
			info.FailureLogged = true
		}
		h.log.ErrorContext(r.Context(), "scim request failed", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
		se = Errorf(ErrInternal, "internal error (request %s)", id)
	}
	if se.Status == http.StatusUnauthorized {
		h.challenge(w, r)
	}
	if info != nil {
		info.ScimType, info.Detail = se.Type, se.Detail
	}
	_ = writeJSON(w, se.Status, se.body())
}

// challenge names the schemes a 401 takes (RFC 7235 §4.1): Bearer, with
// error="invalid_token" when the request carried a credential (RFC 6750
// §3.1; none when it carried nothing, §3), and Basic where enabled.
func (h *Handler) challenge(w http.ResponseWriter, r *http.Request) {
	bearer := `Bearer realm="scimrelay"`
	if r.Header.Get("Authorization") != "" {
		bearer += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", bearer)
	if h.o.BasicAuth {
		w.Header().Add("WWW-Authenticate", `Basic realm="scimrelay", charset="UTF-8"`)
	}
}

// jsonWriter buffers a response and flushes large ones in chunks. Until the
// first flush an error can still become a proper SCIM error response.
type jsonWriter struct {
	w       http.ResponseWriter
	status  int
	etag    string
	buf     []byte
	pooled  *[]byte // where buf came from, to go back to answerBuffers
	started bool
	sent    int // bytes sent before finish
}

// answerBuffers holds the buffers answers are written in, for the next
// answer: most are a few KiB, written and sent within their request, and a
// buffer made for each was a third of the bytes a filter GET allocated.
var answerBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledAnswer bounds the buffers kept: a large group's answer flushes
// at flushSize, but the buffer may outgrow it by one chunk of members.
const maxPooledAnswer = 2 * flushSize

func newJSONWriter(w http.ResponseWriter, status int, etag string) *jsonWriter {
	pooled := answerBuffers.Get().(*[]byte)
	if *pooled == nil {
		*pooled = make([]byte, 0, 4096)
	}
	return &jsonWriter{w: w, status: status, etag: etag, buf: (*pooled)[:0], pooled: pooled}
}

func (jw *jsonWriter) raw(s string) { jw.buf = append(jw.buf, s...) }

func (jw *jsonWriter) start() {
	if jw.started {
		return
	}
	jw.started = true
	jw.w.Header().Set("Content-Type", ContentType)
	if jw.etag != "" {
		jw.w.Header().Set("ETag", jw.etag)
	}
	jw.w.WriteHeader(jw.status)
}

const flushSize = 64 << 10

func (jw *jsonWriter) flushIfLarge() error {
	if len(jw.buf) < flushSize {
		return nil
	}
	jw.start()
	_, err := jw.w.Write(jw.buf)
	jw.sent += len(jw.buf)
	jw.buf = jw.buf[:0]
	return err
}

// finish sends what is buffered and gives the buffer back: the writer is
// done.
func (jw *jsonWriter) finish() error {
	jw.start()
	_, err := jw.w.Write(jw.buf)
	if jw.pooled != nil && cap(jw.buf) <= maxPooledAnswer {
		*jw.pooled = jw.buf[:0]
		answerBuffers.Put(jw.pooled)
	}
	jw.buf, jw.pooled = nil, nil
	return err
}

// abort returns err for the error response if nothing was sent yet; after
// the status line went out, the connection is the only thing left to break.
func (jw *jsonWriter) abort(err error) error {
	if !jw.started {
		return err
	}
	panic(http.ErrAbortHandler)
}

// statusRecorder remembers the status a handler wrote, and carries the
// request's RequestInfo to the route and the error writer (infoOf): mux
// hands them the writer ServeHTTP gave it, so the info needs no context
// value, which would copy the request once more.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
	info   RequestInfo
}

// infoOf returns the RequestInfo of the request w answers, or nil for a
// writer ServeHTTP did not make.
func infoOf(w http.ResponseWriter) *RequestInfo {
	if rec, ok := w.(*statusRecorder); ok {
		return &rec.info
	}
	return nil
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if !s.wrote {
		s.status, s.wrote = http.StatusOK, true
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// NewRequestID makes a request's id: 16 hex digits.
func NewRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ClientRequestID returns the X-Request-Id the client sent when it is a
// sane one: up to 64 visible ASCII characters (no space, control or
// non-ASCII character, so no bidi override either); "" otherwise.
func ClientRequestID(r *http.Request) string {
	id := r.Header.Get("X-Request-Id")
	if len(id) > 64 || strings.ContainsFunc(id, func(c rune) bool { return c <= ' ' || c > '~' }) {
		return ""
	}
	return id
}
