// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

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
	// MaxBodiesInFlight bounds the bytes of request bodies one tenant's
	// requests have read and not yet answered (inflight.go): a read past
	// it ends its request with 429. Zero takes DefaultMaxBodiesInFlight,
	// or four times MaxBodyBytes or BulkMaxPayload if that is more.
	MaxBodiesInFlight int64
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
	RequestID string
	Tenant    string
	Method    string
	Path      string
	Operation string // one of Operations()
	// Route is the template of the route the request took
	// (/scim/v2/{tenant}/Users/{id}); "" when no route matched.
	Route        string
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
	backend  Backend
	auth     Authenticator
	o        Options
	router   *mux.Router
	log      *slog.Logger
	inFlight inFlight
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
	if o.MaxBodiesInFlight <= 0 {
		// Four of the largest bodies taken, so that a body the limits
		// allow is never refused for its size alone.
		o.MaxBodiesInFlight = max(DefaultMaxBodiesInFlight, 4*o.MaxBodyBytes, 4*o.BulkMaxPayload)
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
	// A query across resource types, from the base URL (RFC 7644 §3.4.2,
	// §3.4.3: a service provider MAY support it) is not served: each
	// resource type is queried on its own endpoint.
	across := "a query across resource types from the base URL is not supported: query /Users or /Groups under it"
	r.Handle("/scim/v2/{tenant}", h.methods(get(h.route(nil, "list", notImplemented(across)))))
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
	t.Handle("/.search", h.methods(post(h.route(nil, "search", notImplemented(across+" (POST /Users/.search, /Groups/.search)")))))
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
// header for the others. HEAD is answered as GET is, without the content
// (net/http drops it): "All general-purpose servers MUST support the
// methods GET and HEAD" (RFC 9110 §9.1).
func (h *Handler) methods(routes ...methodRoute) http.Handler {
	var allowed []string
	for _, m := range routes {
		allowed = append(allowed, m.method)
		if m.method == http.MethodGet {
			allowed = append(allowed, http.MethodHead)
		}
	}
	allow := strings.Join(allowed, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		for _, m := range routes {
			if m.method == method {
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
		if cur := mux.CurrentRoute(r); cur != nil {
			info.Route, _ = cur.GetPathTemplate()
		}
		if rt != nil {
			info.ResourceType = rt.Name
			info.ResourceID = c.id
		}
		if err := h.admit(r, c); err != nil {
			h.writeError(w, r, err)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			b := &heldBody{ReadCloser: r.Body, tenant: c.tenant, count: h.inFlight.of(c.tenant), limit: h.o.MaxBodiesInFlight}
			defer b.release()
			r.Body = b
		}
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
	// The request is the tenant's from here: a 429 is counted and logged
	// under it (it was under no tenant).
	c.info.Authenticated, c.info.Tenant = true, c.tenant
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
	// bodies: the tenant's requests hold too many bodies (inflight.go),
	// not over its rate.
	bodies bool
}

func (e *rateLimited) Error() string {
	if e.bodies {
		return fmt.Sprintf("tenant %s's requests under way hold more than the relay takes of request bodies and list pages at once; retry in %s s", e.tenant, e.retryAfter())
	}
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
	q, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, err
	}
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

// maxQueryParams bounds the parameters of a query, as url.ParseQuery does.
const maxQueryParams = 10000

// parseQuery reads a query as url.ParseQuery does, but for what it drops
// in silence: a pair holding a ";" (a character RFC 3986 allows in a
// query, which clients leave unencoded in a value such as a group's
// "Sales;EMEA") is read with its ";" as data, and a pair that is not
// valid percent-encoding (a "%" the client did not encode) is refused
// when it could be a SCIM parameter. A filter dropped so answered with
// every resource, and the client took a stranger for its match, and so
// did one past url.ParseQuery's bound on parameters.
func parseQuery(raw string) (url.Values, error) {
	// url.ParseQuery reads nothing at all past 10,000 parameters, the
	// filter among them.
	if strings.Count(raw, "&") >= maxQueryParams {
		return nil, Errorf(ErrInvalidSyntax, "the query has more than %d parameters", maxQueryParams)
	}
	q := url.Values{}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, errKey := url.QueryUnescape(k)
		value, errValue := url.QueryUnescape(v)
		if errKey != nil || errValue != nil {
			if errKey == nil && !containsFold(queryParams, key) {
				continue // not one of SCIM's: ignored, as any unknown parameter is
			}
			return nil, Errorf(ErrInvalidSyntax, "the query is not valid percent-encoding at %q: encode %% as %%25", Truncate(pair, 64))
		}
		q[key] = append(q[key], value)
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
	c.info.Name, c.info.Email = resourceName(res), logEmail(res)
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
	body, err := h.readBody(w, r, h.o.MaxBodyBytes, h.o.MaxJSONDepth)
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
	c.info.Name, c.info.Email = resourceName(res), logEmail(res)
	c.noteIgnored(ignored)
	created, err := h.backend.Create(ctx, c.tenant, res)
	if err != nil {
		return nil, err
	}
	c.info.ResourceID = created.Resource.ID()
	c.produced(created)
	return created.Resource, nil
}

// writeRequest reads what a PUT or PATCH of a resource brings: its
// precondition, the attributes its answer is to show (refused before
// anything is written) and its body.
func (h *Handler) writeRequest(w http.ResponseWriter, r *http.Request, c *call) (Precondition, *Projection, []byte, error) {
	ifMatch, err := writePrecondition(r)
	if err != nil {
		return ifMatch, nil, nil, err
	}
	proj, err := projectionOf(c.rt, r)
	if err != nil {
		return ifMatch, nil, nil, err
	}
	body, err := h.readBody(w, r, h.o.MaxBodyBytes, h.o.MaxJSONDepth)
	return ifMatch, proj, body, err
}

func (h *Handler) replace(w http.ResponseWriter, r *http.Request, c *call) error {
	ifMatch, proj, body, err := h.writeRequest(w, r, c)
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
	c.info.Name, c.info.Email = resourceName(in), logEmail(in)
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
	ifMatch, proj, body, err := h.writeRequest(w, r, c)
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
		c.info.Name, c.info.Email = resourceName(cur), logEmail(cur)
		if err := ifMatch.Check(cur); err != nil {
			return nil, err
		}
		return p.Apply(cur)
	})
	if err != nil {
		return nil, err
	}
	c.info.Name, c.info.Email = resourceName(res.Resource), logEmail(res.Resource)
	c.produced(res)
	return res.Resource, nil
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request, c *call) error {
	ifMatch, err := writePrecondition(r)
	if err != nil {
		return err
	}
	// Nothing is answered to project, but what is not an attribute name
	// is refused here as on every other request, before the delete.
	if _, err := projectionOf(c.rt, r); err != nil {
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
	if res.Deleted != nil {
		c.info.Name, c.info.Email = resourceName(res.Deleted), logEmail(res.Deleted)
	}
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

// memberFields are a member's sub-attributes, in the order an answer
// writes them.
var memberFields = [...]string{"value", "$ref", "display", "type"}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func logEmail(r *Resource) string {
	if e := r.PrimaryEmail(); e != "" {
		return e
	}
	return r.WorkEmail()
}

func resourceName(r *Resource) string {
	if r.Type == GroupResourceType {
		return r.String("displayName")
	}
	return r.String("userName")
}

// writeError is the one place that turns an error into a SCIM error
// response. Errors that are not *Error are internal: logged, answered 500
// with the request id, never with their text.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	info := infoOf(w)
	id := "" // the request's, for the log lines about it
	if info != nil {
		id = info.RequestID
	}
	var se *Error
	var rl *rateLimited
	switch {
	case errors.As(err, &rl):
		w.Header().Set("Retry-After", rl.retryAfter())
		se = Errorf(ErrTooManyRequests, "%s", rl.Error())
	case errors.As(err, &se):
	case clientGone(r, err):
		// The client went away (Entra timed out, a connection dropped):
		// nothing failed on our side, and nobody reads the answer.
		h.log.DebugContext(r.Context(), "scim client went away before the answer", "request_id", id, "method", r.Method, "path", r.URL.Path)
		se = errClientGone()
	default:
		if info != nil {
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
	if rec, ok := w.(*statusRecorder); ok && rec.wrote {
		// The answer had begun (a list's page, written as it is read):
		// its status is gone, and an error appended to its body would
		// only spoil it, and make net/http warn of a second status. What
		// is recorded is what became of it (499: the client gone), not
		// the status that went out.
		rec.status = se.Status
		return
	}
	_ = writeJSON(w, se.Status, se.body())
}

// clientGone reports whether err means that the client went away: its
// request's context canceled (it hung up, or timed out), or its answer's
// write finding the connection closed (EPIPE, ECONNRESET: it hung up while
// a list or a Bulk's answer was under way).
func clientGone(r *http.Request, err error) bool {
	return errors.Is(err, context.Canceled) && r.Context().Err() != nil ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// errClientGone is what a request whose client went away is recorded
// with (499, nginx's "client closed request"); nobody reads it.
func errClientGone() *Error { return Errorf(ErrClientClosedRequest, "the client closed the request") }

// challenge names the schemes a 401 takes (RFC 7235 §4.1): Bearer, with
// error="invalid_token" when the request carried a bearer token (RFC 6750
// §3.1; none when it carried nothing, or a credential of another scheme:
// "SHOULD NOT include an error code", §3.1), and Basic where enabled.
func (h *Handler) challenge(w http.ResponseWriter, r *http.Request) {
	bearer := `Bearer realm="scimrelay"`
	if scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		bearer += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", bearer)
	if h.o.BasicAuth {
		w.Header().Add("WWW-Authenticate", `Basic realm="scimrelay", charset="UTF-8"`)
	}
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
