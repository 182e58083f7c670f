// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync"
)

// Answers: a resource written as its projection asks (a group's members
// read in pages of the same version, writeLatest), and the buffer that
// sends a large answer in chunks (jsonWriter).

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

// fail ends an answer that err broke. One that sent nothing is err's
// error answer, or a 503 when a group kept changing. One whose first bytes
// were sent cannot be taken back: the connection is cut (the client reads
// again as after any broken read), and the request is recorded with what
// became of it, not with the 200 that went out: a group that changed while
// its members were sent (a group of more than a page of members, or a list
// whose earlier groups filled the first 64 KiB) says so at Info; a client
// that hung up is a 499 at Debug; anything else (the relay's own
// write_timeout passed, a read that failed) is a failure, a 500 logged at
// Error with its cause (writeError).
func (h *Handler) fail(r *http.Request, jw *jsonWriter, err error, what string) error {
	changed := errors.Is(err, ErrChanged)
	switch {
	case !jw.started && changed:
		return Errorf(ErrUnavailable, "%s changed %d times while the answer was read; read again", what, readAttempts)
	case !jw.started:
		return err
	case changed:
		const detail = "answer cut off: a group changed while its members were sent; read again"
		id := ""
		if info := infoOf(jw.w); info != nil {
			id, info.Detail = info.RequestID, detail
		}
		h.log.InfoContext(r.Context(), "scim "+detail, "path", r.URL.Path, "request_id", id)
	default:
		h.writeError(jw.w, r, err)
	}
	panic(http.ErrAbortHandler) // net/http drops the connection
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
	// HEAD is a read, answered as GET is (methods).
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if err != nil && !read && !jw.started && (errors.Is(err, ErrChanged) || errors.Is(err, ErrNotFound)) {
		jw.buf, jw.etag = h.appendResource(jw.buf[:0], c, res, proj), res.Meta().Version
		err = nil
	}
	if err != nil {
		return h.fail(r, jw, err, c.rt.Name+" "+res.ID())
	}
	if read && !jw.started {
		// A GET has no body: its answer, waiting for a client that reads
		// slowly, counts as a list's does (answerHold). A write's body
		// is counted until its answer is sent.
		held := h.answerHold(c.tenant)
		defer held.release()
		if err := held.set(int64(len(jw.buf))); err != nil {
			return err
		}
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
		if !proj.whole() {
			// Each group's $ref is made from its value, which the
			// projection may leave out (excludedAttributes=groups.value,
			// attributes=groups.$ref): it is set before projecting.
			res = withGroupRefs(res, c.base)
		}
	}
	return proj.Apply(res).appendJSON(b, l)
}

// withGroupRefs returns res with each of its groups holding its $ref,
// sharing the rest with res; res itself when it holds no groups.
func withGroupRefs(res *Resource, base string) *Resource {
	groups, ok := res.Attrs["groups"].([]any)
	if !ok || len(groups) == 0 {
		return res
	}
	out := &Resource{Type: res.Type, Attrs: maps.Clone(res.Attrs)}
	linked := make([]any, len(groups))
	for i, g := range groups {
		linked[i] = g
		m, ok := g.(map[string]any)
		id, _ := m["value"].(string)
		if !ok || id == "" {
			continue
		}
		c := maps.Clone(m)
		c["$ref"] = Location(base, GroupResourceType, id)
		linked[i] = c
	}
	out.Attrs["groups"] = linked
	return out
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

// writeJSON answers status with v encoded as a SCIM JSON document.
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
