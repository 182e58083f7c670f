// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxBodiesInFlight bounds the request bodies one tenant's requests
// hold at once (Options.MaxBodiesInFlight): four bodies of the default
// MaxBodyBytes.
const DefaultMaxBodiesInFlight = 16 << 20

// A request's body takes far more memory than its size while the request
// is served: read whole, decoded into maps, copied and encoded again, a
// 2.4 MB user took 65 MiB of heap, and eight sent at once by one tenant
// 527 MiB (an attack round; the Helm chart gives a front end 1 GiB). The
// bytes of the bodies a tenant's requests have read and not finished with
// are bounded: a read past the bound ends the request with 429 and
// Retry-After, and the bytes are given back when the request is answered.
// A bound per tenant, so that one tenant's bodies never refuse another's;
// counted as read, not as declared, so that a body sent slowly holds only
// what it sent, and an identity provider's requests of a few KiB each,
// however many at once, are never refused.

// inFlight counts, per tenant, the bytes of bodies being served.
type inFlight struct{ m sync.Map } // tenant → *atomic.Int64

func (f *inFlight) of(tenant string) *atomic.Int64 {
	if v, ok := f.m.Load(tenant); ok {
		return v.(*atomic.Int64)
	}
	v, _ := f.m.LoadOrStore(tenant, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// heldBody is a request body whose bytes, as they are read, count against
// its tenant's bound until release.
type heldBody struct {
	io.ReadCloser
	tenant string
	count  *atomic.Int64
	limit  int64
	held   int64
}

// bodiesInFlight is the error a heldBody's read returns past the bound.
type bodiesInFlight struct{ tenant string }

func (e *bodiesInFlight) Error() string {
	return "tenant " + e.tenant + "'s requests hold more request bodies than the relay takes at once"
}

func (b *heldBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.held += int64(n)
		if b.count.Add(int64(n)) > b.limit {
			return n, &bodiesInFlight{tenant: b.tenant}
		}
	}
	return n, err
}

// release gives the bytes read back.
func (b *heldBody) release() { b.count.Add(-b.held) }

// answerHold counts an answer's bytes (a list's page, a GET's resource)
// against what its tenant's requests may hold at once (MaxBodiesInFlight,
// with their bodies) until it is sent: a GET has no body, and a client
// that reads its answers slowly kept each page (up to 4 MiB of resources as stored, more as
// written) in the heap until write_timeout: 200 list GETs, one second of
// the default rate, held 924 MiB; 20 of groups whose members are sent as
// they are read (the answer started before it was whole) held 100 MiB
// (attack rounds). The page is counted from its read, before anything is
// written, so that past the bound the request is still a 429 with
// Retry-After; then the answer, when it is written whole and larger.
func (h *Handler) answerHold(tenant string) *heldAnswer {
	return &heldAnswer{tenant: tenant, count: h.inFlight.of(tenant), limit: h.o.MaxBodiesInFlight}
}

// heldAnswer is the count of one answer (answerHold).
type heldAnswer struct {
	tenant string
	count  *atomic.Int64
	limit  int64
	held   int64
}

// set makes the answer count n bytes, or is a 429 when that takes the
// tenant past its bound; the count is unchanged then. An answer of less
// than flushSize counts nothing (an identity provider's pages are never
// refused), and one larger than the bound alone is never refused (it
// could never be answered).
func (a *heldAnswer) set(n int64) error {
	if n < flushSize {
		n = 0
	}
	if a.count.Add(n-a.held) > a.limit && n > a.held && n < a.limit {
		a.count.Add(a.held - n)
		return &rateLimited{wait: time.Second, tenant: a.tenant, bodies: true}
	}
	a.held = n
	return nil
}

// release gives the bytes counted back.
func (a *heldAnswer) release() {
	a.count.Add(-a.held)
	a.held = 0
}
