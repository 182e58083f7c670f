// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Bulk (RFC 7644 §3.7). Each operation is the single request it stands for,
// through the same code (createResource, replaceResource, patchResource and
// deleteResource), so it is checked, stored and turned into events exactly
// as that request would be, and it commits on its own: the RFC has a bulk
// request processed operation by operation, not as one transaction (a
// failure does not undo what came before it; failOnErrors only stops what
// comes after).
//
// Operations run in the order given, except that an operation referring to
// a bulkId runs after the operation that creates it (RFC 7644 §3.7: the
// client's intent must be preserved). A reference that cannot be resolved,
// because no operation creates that bulkId, because the one that does failed,
// or because the references form a cycle (RFC 7644 §3.7.1 allows refusing
// circular references with 409 Conflict), fails its operation with 409.

// bulkIDChars is what a reference reads as a bulkId: what ends a path's
// segment, a filter's string or a list item ends it.
const bulkIDChars = `[^\s"'\[\]/,]+`

var (
	// bulkRef matches a bulkId reference inside a string, such as the
	// PATCH path members[value eq "bulkId:qwerty"].
	bulkRef = regexp.MustCompile(`bulkId:(` + bulkIDChars + `)`)
	// referable matches a bulkId that a reference can name whole: a POST's
	// bulkId holding anything else could never be referred to.
	referable = regexp.MustCompile(`^` + bulkIDChars + `$`)
)

const bulkRefPrefix = "bulkId:"

// filterString matches a string compared in a PATCH path's filter.
var filterString = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)

// bulkOp is one operation of a bulk request.
type bulkOp struct {
	index   int
	method  string // POST, PUT, PATCH or DELETE; as sent when it is none of them
	bulkID  string
	version Precondition
	path    string
	data    any      // decoded, numbers as json.Number; nil for DELETE
	refs    []string // bulkIds the operation refers to, in path and data
	err     *Error   // what is wrong with the operation itself
}

// splitPath reads the operation's path as its endpoint (Users, Groups) and
// what follows it, as written ("" for a POST to a collection); hasID says
// there was a second segment.
func (op *bulkOp) splitPath() (endpoint, rest string, hasID bool) {
	return strings.Cut(strings.TrimSuffix(strings.TrimPrefix(op.path, "/"), "/"), "/")
}

// endpoint is the first segment of the operation's path (Users, Groups).
func (op *bulkOp) endpoint() string {
	e, _, _ := op.splitPath()
	return e
}

// resourceID is the id in the operation's path, unescaped, as target reads
// it ("" for a POST to a collection; a bulkId reference stays as written).
func (op *bulkOp) resourceID() string {
	_, id, _ := op.splitPath()
	return unescapeID(id)
}

// unescapeID is a path's id segment unescaped, or as written when it is
// not a valid escape.
func unescapeID(id string) string {
	if uid, err := url.PathUnescape(id); err == nil {
		return uid
	}
	return id
}

// bulkRequest is a parsed bulk request.
type bulkRequest struct {
	failOnErrors int // 0: never stop
	ops          []*bulkOp
	creates      map[string]int // bulkId → index of the POST that creates it
	referrers    map[int][]int  // index of a POST creating a bulkId → the operations referring to it
}

// bulkResult is one operation's entry in the bulk response.
type bulkResult struct {
	Location string `json:"location,omitempty"`
	Method   string `json:"method"`
	BulkID   string `json:"bulkId,omitempty"`
	Version  string `json:"version,omitempty"`
	Status   string `json:"status"`
	Response any    `json:"response,omitempty"`
}

type bulkResponse struct {
	Schemas    []string      `json:"schemas"`
	Operations []*bulkResult `json:"Operations"`
}

// bulkEnvelopeDepth is how many levels a Bulk request adds around an
// operation's data.
const bulkEnvelopeDepth = 3

// encodeData writes an operation's data as the body of its single request:
// compact, and with &, < and > as they came (json.Marshal writes each as
// six bytes, which the size limit would count).
func encodeData(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// lineSeparators counts U+2028 and U+2029 in v's strings and keys, which
// encodeData writes as six-byte escapes where a client may have sent their
// three bytes: the size limit counts them as sent (a title of 250 of them
// passed alone and was 413 in a Bulk).
func lineSeparators(v any) int {
	count := func(s string) int { return strings.Count(s, "\u2028") + strings.Count(s, "\u2029") }
	switch v := v.(type) {
	case string:
		return count(v)
	case []any:
		n := 0
		for _, e := range v {
			n += lineSeparators(e)
		}
		return n
	case map[string]any:
		n := 0
		for k, e := range v {
			n += count(k) + lineSeparators(e)
		}
		return n
	}
	return 0
}

// bulk serves POST /Bulk.
func (h *Handler) bulk(w http.ResponseWriter, r *http.Request, c *call) error {
	// The envelope ({"Operations":[{"data": …}]}) takes three levels; each
	// operation's data is held to the depth of its single request (run).
	body, err := h.readBody(w, r, h.o.BulkMaxPayload, h.o.MaxJSONDepth+bulkEnvelopeDepth)
	if err != nil {
		if errors.Is(err, ErrPayloadTooLarge) {
			return Errorf(ErrPayloadTooLarge, "the size of the bulk request exceeds maxPayloadSize (%d bytes)", h.o.BulkMaxPayload)
		}
		return err
	}
	req, err := parseBulk(body, h.o.BulkMaxOperations)
	if err != nil {
		return err
	}
	// Each operation costs what its single request would, and the whole
	// at most the tenant's burst, or a Bulk larger than the burst would
	// never pass; admit took one.
	cost := len(req.ops)
	if h.o.Limiter != nil {
		cost = min(cost, h.o.Limiter.Burst(c.tenant))
	}
	if err := h.limit(c.tenant, cost-1); err != nil {
		return err
	}
	run := &bulkRun{h: h, r: r, c: c, req: req, state: make([]int, len(req.ops)), created: map[string]string{},
		waitsOn: map[int]int{}, waiting: map[int][]int{}, ids: make([]string, len(req.ops)), refsDone: make([]int, len(req.ops)),
		touches: make([][]int, len(req.ops))}
	for i, op := range req.ops {
		run.ids[i] = op.resourceID()
	}
	for i := range req.ops {
		run.visit(r.Context(), i)
	}
	run.finish(r.Context())
	c.info.Detail = Truncate(run.summary(), 1024)
	if err := r.Context().Err(); err != nil {
		return err // the client went away: nobody reads the answer (writeError records 499)
	}
	// A write that fails is writeError's to tell: the client gone (EPIPE,
	// ECONNRESET: 499) or the relay's own write_timeout (500 at Error).
	return writeJSON(w, http.StatusOK, bulkResponse{Schemas: []string{BulkResponseSchema}, Operations: run.results})
}

// parseBulk decodes a bulk request and checks it as a whole; problems of a
// single operation are kept on the operation, to be answered in its result.
func parseBulk(body []byte, maxOps int) (*bulkRequest, error) {
	raw, err := decodeObject(body, "request body")
	if err != nil {
		return nil, err
	}
	m, twice := lowerKeys(raw)
	if twice != "" {
		return nil, givenTwice("the bulk request", twice)
	}
	schemas, operations, failOn := m["schemas"], m["operations"], m["failonerrors"]
	if !listsSchema(schemas, BulkRequestSchema) {
		return nil, Errorf(ErrInvalidSyntax, "a bulk request needs \"schemas\": [%q]", BulkRequestSchema)
	}
	req := &bulkRequest{creates: map[string]int{}}
	if failOn != nil {
		n, ok := failOn.(json.Number)
		v, err := n.Int64()
		if !ok || err != nil || v < 0 {
			return nil, Errorf(ErrInvalidValue, "failOnErrors must be an integer, 0 or more, got %s", Truncate(fmt.Sprint(failOn), 32))
		}
		// RFC 7644 §3.7 bounds it by nothing: one past the operations a
		// request may hold never stops it, as any larger one.
		req.failOnErrors = int(min(v, int64(maxOps)+1))
	}
	list, ok := operations.([]any)
	if !ok || len(list) == 0 {
		return nil, Errorf(ErrInvalidSyntax, "a bulk request needs a non-empty Operations array")
	}
	if len(list) > maxOps {
		return nil, Errorf(ErrPayloadTooLarge, "the bulk request has %d operations; maxOperations is %d", len(list), maxOps)
	}
	for i, o := range list {
		op := parseBulkOp(i, o)
		if op.bulkID != "" && op.method == http.MethodPost && op.err == nil {
			if j, dup := req.creates[op.bulkID]; dup {
				return nil, Errorf(ErrInvalidValue, "Operations[%d] and Operations[%d] both create bulkId %q; a bulkId must be unique within a request", j, i, Truncate(op.bulkID, 64))
			}
			req.creates[op.bulkID] = i
		}
		req.ops = append(req.ops, op)
	}
	req.referrers = map[int][]int{}
	for i, op := range req.ops {
		for _, ref := range op.refs {
			if k, ok := req.creates[ref]; ok {
				req.referrers[k] = append(req.referrers[k], i)
			}
		}
	}
	return req, nil
}

func parseBulkOp(i int, o any) *bulkOp {
	op := &bulkOp{index: i}
	obj, ok := o.(map[string]any)
	if !ok {
		op.err = Errorf(ErrInvalidSyntax, "Operations[%d] must be an object", i)
		return op
	}
	f, twice := lowerKeys(obj)
	if twice != "" {
		op.err = givenTwice(fmt.Sprintf("Operations[%d]", i), twice)
		return op
	}
	method := f["method"]
	m, _ := method.(string)
	op.method = strings.ToUpper(m)
	var bulkIDIsString, versionIsString, pathIsString bool
	op.bulkID, bulkIDIsString = f["bulkid"].(string)
	version, versionIsString := f["version"].(string)
	var versionOK bool
	// A version present is a condition, an empty one too (it matches
	// nothing, as an empty If-Match does).
	op.version, versionOK = parsePrecondition(version, versionIsString)
	op.path, pathIsString = f["path"].(string)
	op.data = f["data"]
	switch {
	case f["version"] != nil && !versionIsString:
		op.err = Errorf(ErrInvalidSyntax, "Operations[%d]: version must be a string, an ETag such as W/\"3\", got %s", i, quoteOrKind(f["version"]))
	case !versionOK:
		op.err = Errorf(ErrInvalidValue, `Operations[%d]: version must be * or an entity tag such as W/"3", got %q`, i, Truncate(version, 64))
	case f["path"] != nil && !pathIsString:
		op.err = Errorf(ErrInvalidSyntax, "Operations[%d]: path must be a string, got %s", i, quoteOrKind(f["path"]))
	case op.method != http.MethodPost && op.method != http.MethodPut && op.method != http.MethodPatch && op.method != http.MethodDelete:
		op.method = Truncate(m, 16)
		op.err = Errorf(ErrInvalidSyntax, "Operations[%d]: method must be POST, PUT, PATCH or DELETE, got %s", i, quoteOrKind(method))
	case f["bulkid"] != nil && !bulkIDIsString:
		op.err = Errorf(ErrInvalidSyntax, "Operations[%d]: bulkId must be a string, got %s", i, quoteOrKind(f["bulkid"]))
	case op.method == http.MethodPost && op.bulkID != "" && !referable.MatchString(op.bulkID):
		op.err = Errorf(ErrInvalidValue, "Operations[%d]: bulkId %q could never be referred to: a bulkId holds no space, quote, bracket, slash or comma", i, Truncate(op.bulkID, 64))
	case op.path == "":
		op.err = Errorf(ErrInvalidSyntax, "Operations[%d]: path is required (/Users, /Groups, or /Users/<id> ...)", i)
	case strings.ContainsAny(op.path, "?#"):
		// Not an id, nor a bulkId, holding "?": the relay's ids never do,
		// and a client that sent a query meant it, which an operation
		// cannot take. Refused here, before a reference in the path would
		// be looked for with the query (409, "no POST has that bulkId").
		q := op.path[strings.IndexAny(op.path, "?#"):]
		op.err = Errorf(ErrInvalidValue, "Operations[%d]: path takes no query or fragment (%q); give the resource's path alone", i, Truncate(q, 64))
	case op.method != http.MethodDelete:
		if _, ok := op.data.(map[string]any); !ok {
			op.err = Errorf(ErrInvalidSyntax, "Operations[%d]: %s needs data, a JSON object", i, op.method)
		}
	}
	if op.err == nil {
		op.refs = bulkRefs(op)
	}
	return op
}

// bulkRefs lists the bulkIds an operation refers to: in its path, and in
// its data as whole string values ("value": "bulkId:qwerty") or, for a PATCH,
// inside an operation's path (members[value eq "bulkId:qwerty"]). Any string
// value counts, whatever its attribute: a PATCH value may be a bare member
// id or a manager as a string, and an unknown extension's references look
// like its other strings. So a title of "bulkId:zz" is a reference too; a
// client that means it as text sends it outside Bulk (docs/decisions.md,
// "Bulk order and references").
func bulkRefs(op *bulkOp) []string {
	var refs []string
	seen := map[string]bool{} // a loop over refs took 4.8 s for 60,000 of them
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			refs = append(refs, id)
		}
	}
	for _, m := range bulkRef.FindAllStringSubmatch(op.path, -1) {
		add(m[1])
	}
	walkBulkStrings(op.data, op.method == http.MethodPatch, func(s string, inPath bool) string {
		if inPath {
			for _, m := range bulkRef.FindAllStringSubmatch(s, -1) {
				add(m[1])
			}
		} else if strings.HasPrefix(s, bulkRefPrefix) && len(s) > len(bulkRefPrefix) {
			add(s[len(bulkRefPrefix):])
		}
		return s
	})
	return refs
}

// walkBulkStrings calls f on every string value in v and stores what it
// returns; inPath says the string is a PATCH operation's path.
func walkBulkStrings(v any, patch bool, f func(s string, inPath bool) string) any {
	switch v := v.(type) {
	case string:
		return f(v, false)
	case []any:
		for i, e := range v {
			v[i] = walkBulkStrings(e, patch, f)
		}
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && patch && strings.EqualFold(k, "path") {
				v[k] = f(s, true)
				continue
			}
			v[k] = walkBulkStrings(e, patch, f)
		}
	}
	return v
}

// Visit states of a bulk operation.
const (
	opPending = iota
	opWaiting // for the POST creating a bulkId it refers to, or an earlier waiting operation (waitsOn)
	opDone
)

// bulkRun processes one bulk request.
type bulkRun struct {
	h        *Handler
	r        *http.Request // the Bulk request, whose credential each operation checks again
	c        *call
	req      *bulkRequest
	state    []int
	waitsOn  map[int]int    // a waiting operation → the operation it waits for
	waiting  map[int][]int  // an operation → those waiting for it, in the order they came
	touch    *bulkTouches   // what the operations touch, by the key they share (touchIndex)
	touches  [][]int        // an operation → those before it that it touches (touching), once read
	cyclic   map[int]string // operation → the cycle it is in, for its error
	created  map[string]string
	results  []*bulkResult
	failed   int
	ignored  []string
	ids      []string // an operation → its resourceID
	refsDone []int    // an operation → how many of its refs, from the first, name a POST done
}

// stopped reports whether failOnErrors was reached.
func (b *bulkRun) stopped() bool {
	return b.req.failOnErrors > 0 && b.failed >= b.req.failOnErrors
}

// run performs one operation and returns its result.
func (b *bulkRun) run(ctx context.Context, op *bulkOp) *bulkResult {
	res := &bulkResult{Method: op.method, BulkID: op.bulkID}
	fail := func(err error) *bulkResult {
		var se *Error
		if !errors.As(err, &se) && clientGone(b.r, err) {
			// The client went away: the operation was not performed, and
			// nothing failed on the relay's side (writeError says so at Debug).
			se = Errorf(ErrClientClosedRequest, "Operations[%d]: not performed: the client closed the request", op.index)
		}
		if se == nil {
			id := b.c.info.RequestID
			b.h.log.ErrorContext(ctx, "scim bulk operation failed", "request_id", id, "operation", op.index, "err", err)
			se = Errorf(ErrInternal, "internal error (request %s, operation %d)", id, op.index)
		}
		res.Status = strconv.Itoa(se.Status)
		res.Response = se.body()
		return res
	}
	if op.err != nil {
		return fail(op.err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err) // the client went away: what is left is not performed
	}
	// A credential revoked (or expired) while a Bulk runs stops what is
	// left of it, as it stops the next request.
	if err := b.h.authenticate(b.r, b.c.tenant); err != nil {
		return fail(err)
	}
	// The operations before this one were charged their work (events,
	// memberships read, stored bytes) past the tenant's bucket, as their
	// single requests would be: once that has spent the budget, the rest
	// are refused as the tenant's next request would be. Without this,
	// one Bulk of a thousand writes of a 256 KiB user, admitted for the
	// burst, held the committer for every one of them (each charged 63).
	if b.h.o.Limiter != nil {
		if ok, wait := b.h.o.Limiter.AllowN(b.c.tenant, 0); !ok {
			rl := &rateLimited{wait: wait, tenant: b.c.tenant}
			return fail(Errorf(ErrTooManyRequests, "Operations[%d]: not performed: %s", op.index, rl.Error()))
		}
	}
	if cycle, ok := b.cyclic[op.index]; ok {
		return fail(Errorf(ErrConflict, "Operations[%d]: circular bulkId references (%s); create the resources first and link them in a later request", op.index, cycle))
	}
	if err := b.resolve(op); err != nil {
		return fail(err)
	}
	c, err := b.target(op)
	if err != nil {
		return fail(err)
	}
	var body []byte
	if op.data != nil {
		if body, err = encodeData(op.data); err != nil {
			return fail(fmt.Errorf("encoding operation %d: %w", op.index, err))
		}
		// The checks of the single request's body: a Bulk of a larger
		// one stored it, and one an envelope took past the depth refused
		// the whole Bulk.
		if n := int64(len(body)); n > b.h.o.MaxBodyBytes && n-3*int64(lineSeparators(op.data)) > b.h.o.MaxBodyBytes {
			return fail(Errorf(ErrPayloadTooLarge, "Operations[%d]: data is larger than %d bytes", op.index, b.h.o.MaxBodyBytes))
		}
		if jsonDepth(body) > b.h.o.MaxJSONDepth {
			return fail(Errorf(ErrInvalidSyntax, "Operations[%d]: data nests deeper than %d levels", op.index, b.h.o.MaxJSONDepth))
		}
	}
	var out *Resource
	switch op.method {
	case http.MethodPost:
		if c.id != "" {
			return fail(Errorf(ErrInvalidSyntax, "Operations[%d]: POST goes to %s, not to a resource", op.index, c.rt.Endpoint))
		}
		if op.version.present {
			// As a create carrying If-Match (writePrecondition).
			return fail(Errorf(ErrNotImplemented, "Operations[%d]: a version (If-Match) is not supported on a create; nothing was created", op.index))
		}
		if out, err = b.h.createResource(ctx, c, body); err != nil {
			return fail(err)
		}
		res.Status = strconv.Itoa(http.StatusCreated)
		if op.bulkID != "" {
			b.created[op.bulkID] = out.ID()
		}
	case http.MethodPut:
		out, err = b.h.replaceResource(ctx, c, body, op.version)
		res.Status = strconv.Itoa(http.StatusOK)
	case http.MethodPatch:
		out, err = b.h.patchResource(ctx, c, body, op.version)
		res.Status = strconv.Itoa(http.StatusOK)
		if patchAnswersEmpty(c.rt, nil) {
			res.Status = strconv.Itoa(http.StatusNoContent)
		}
	case http.MethodDelete:
		err = b.h.deleteResource(ctx, c, op.version)
		res.Status = strconv.Itoa(http.StatusNoContent)
		res.Location = Location(c.base, c.rt, c.id)
	}
	if err != nil {
		res.Location = ""
		if op.method != http.MethodPost {
			res.Location = Location(c.base, c.rt, c.id)
		}
		return fail(err)
	}
	b.ignore(c.info.Detail)
	b.c.info.EventIDs = append(b.c.info.EventIDs, c.info.EventIDs...)
	if out != nil {
		res.Location = c.location(out)
		res.Version = out.Meta().Version
	}
	return res
}

// resolve replaces the bulkId references of op with the ids they stand for.
func (b *bulkRun) resolve(op *bulkOp) error {
	for _, ref := range op.refs {
		if _, ok := b.created[ref]; ok {
			continue
		}
		if j, ok := b.req.creates[ref]; ok {
			return Errorf(ErrConflict, "Operations[%d]: bulkId %q could not be resolved: Operations[%d], which creates it, failed", op.index, Truncate(ref, 64), j)
		}
		return Errorf(ErrConflict, "Operations[%d]: bulkId %q could not be resolved: no POST in this request has that bulkId", op.index, Truncate(ref, 64))
	}
	if len(op.refs) == 0 {
		return nil
	}
	replaceIn := func(s string) string {
		return bulkRef.ReplaceAllStringFunc(s, func(m string) string { return b.created[m[len(bulkRefPrefix):]] })
	}
	op.path = replaceIn(op.path)
	op.data = walkBulkStrings(op.data, op.method == http.MethodPatch, func(s string, inPath bool) string {
		if inPath {
			return replaceIn(s)
		}
		if id, ok := b.created[strings.TrimPrefix(s, bulkRefPrefix)]; ok && strings.HasPrefix(s, bulkRefPrefix) {
			return id
		}
		return s
	})
	return nil
}

// target resolves an operation's path, "/Users" or "/Groups/<id>", to a call
// of its own (its endpoint matched in any case and a trailing slash
// trimmed, as on the URL).
func (b *bulkRun) target(op *bulkOp) (*call, error) {
	endpoint, id, hasID := op.splitPath()
	var rt *ResourceType
	for _, t := range ResourceTypes {
		if strings.EqualFold("/"+endpoint, t.Endpoint) {
			rt = t
		}
	}
	if rt == nil || (hasID && (id == "" || strings.Contains(id, "/"))) {
		return nil, Errorf(ErrInvalidValue, "Operations[%d]: path must be /Users, /Groups, /Users/<id> or /Groups/<id>, got %q", op.index, Truncate(op.path, 128))
	}
	id = unescapeID(id)
	if op.method != http.MethodPost && id == "" {
		return nil, Errorf(ErrInvalidValue, "Operations[%d]: %s needs the path of a resource, e.g. %s/<id>", op.index, op.method, rt.Endpoint)
	}
	return &call{tenant: b.c.tenant, id: id, rt: rt, base: b.c.base, info: &RequestInfo{RequestID: b.c.info.RequestID}}, nil
}

// ignore collects what an operation noted about dropped attributes.
func (b *bulkRun) ignore(note string) {
	if note != "" {
		b.ignored = append(b.ignored, note)
	}
}

// summary describes the request for the provisioning log.
func (b *bulkRun) summary() string {
	s := fmt.Sprintf("%d of %d operations performed, %d failed", len(b.results), len(b.req.ops), b.failed)
	if b.stopped() && len(b.results) < len(b.req.ops) {
		s += fmt.Sprintf("; stopped after failOnErrors (%d)", b.req.failOnErrors)
	}
	if len(b.ignored) > 0 {
		s += "; " + strings.Join(b.ignored, "; ")
	}
	return s
}
