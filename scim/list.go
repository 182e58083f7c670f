// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// Lists: GET on a resource type's endpoint and POST .search (RFC 7644
// §3.4.2, §3.4.3), their query (filter, sort, paging, projection) read
// from the URL or the search body alike, and the pages written as they are
// read from the Backend.

// list answers GET on a resource type's endpoint.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, c *call) error {
	q, err := queryOf(r)
	if err != nil {
		return err
	}
	return h.query(w, r, c, listParams{
		filter: q.Get("filter"), filterGiven: q.Has("filter"),
		startIndex: q.Get("startIndex"), count: q.Get("count"),
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
	body, err := h.readBody(w, r, h.o.MaxBodyBytes, h.o.MaxJSONDepth)
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
	p.filterGiven = m["filter"] != nil
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
	// filterGiven is whether the query names a filter, also an empty
	// one: that is refused as any filter that does not parse, not read as
	// none. A client whose filter's text went missing (filter=, or
	// "filter": "") would otherwise get every resource, and one that takes
	// the first of a match's results for its own would take a stranger.
	filterGiven bool
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
	if p.filterGiven {
		if strings.TrimSpace(p.filter) == "" {
			return Errorf(ErrInvalidFilter, `filter is empty: give one, such as userName eq "ann", or leave filter out to list every resource`)
		}
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
		if instead := addedLink(sp.URN, sp.Name, sp.Sub); instead != "" {
			// meta.location: every resource's is missing to the sort.
			return Errorf(ErrInvalidValue, "sortBy: %s.%s is a link the answer makes from the URL the client used, not stored, which lists do not sort by; sort by %s", sp.Name, sp.Sub, instead)
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
	held := h.answerHold(c.tenant)
	defer held.release()
	for attempt := 1; ; attempt++ {
		page, err := h.backend.List(r.Context(), c.tenant, c.rt, q)
		if err != nil {
			return err
		}
		if err := held.set(int64(page.Bytes)); err != nil {
			return err
		}
		err = h.writePage(r.Context(), lw, c, q, page, proj, still)
		if err == nil {
			if !lw.started {
				// Written whole, not yet sent: the answer, larger than
				// the page as stored, is what waits for the client.
				if err := held.set(max(int64(page.Bytes), int64(len(lw.buf)))); err != nil {
					return err
				}
			}
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
