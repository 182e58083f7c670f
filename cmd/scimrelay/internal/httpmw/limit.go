// SPDX-License-Identifier: Apache-2.0

package httpmw

import (
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/scimrelay/scimrelay/scim"
)

// Limit is a token bucket: Rate requests per second, bursts up to Burst.
// A zero Rate means no limit.
type Limit struct {
	Rate  float64
	Burst int
}

// Limiter applies a token bucket per key (a tenant, or a client's address
// at the console's sign-in). It implements scim.Limiter, and oauth.Limiter
// (whose guard is in cmd/scimrelay: oauth imports this package).
type Limiter struct {
	mu       sync.Mutex
	def      Limit
	override map[string]Limit
	buckets  map[string]*rate.Limiter
	now      func() time.Time
	// prune is how many buckets are kept before those back at full are
	// dropped: a full bucket is as good as a new one, and keys that come
	// from anywhere (addresses) must not grow the map without end.
	prune int
}

var _ scim.Limiter = (*Limiter)(nil)

// pruneBuckets is the default of Limiter.prune.
const pruneBuckets = 10_000

// NewLimiter returns a limiter with a default limit and per-tenant overrides.
func NewLimiter(def Limit, override map[string]Limit) *Limiter {
	return &Limiter{def: def, override: override, buckets: map[string]*rate.Limiter{}, now: time.Now, prune: pruneBuckets}
}

// SetClock makes the limiter read the time from now rather than the
// system clock: a caller with a clock of its own, or a test that checks
// how fast a budget refills without waiting for it.
func (l *Limiter) SetClock(now func() time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = now
}

// Set replaces the limits (relay.yaml was reloaded). A tenant whose limit
// changed starts with a full bucket of the new size; the others keep
// theirs as they are.
func (l *Limiter) Set(def Limit, override map[string]Limit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for tenant := range l.buckets {
		before, had := l.override[tenant]
		if !had {
			before = l.def
		}
		after, has := override[tenant]
		if !has {
			after = def
		}
		if before != after {
			delete(l.buckets, tenant)
		}
	}
	l.def, l.override = def, override
}

// Allow takes one token from tenant's bucket, or says how long until one is there.
func (l *Limiter) Allow(tenant string) (bool, time.Duration) { return l.AllowN(tenant, 1) }

// AllowN takes n tokens from tenant's bucket (a bulk request of n
// operations), or says how long until they are there. n is capped at the
// bucket's burst, so that the largest request a client may send can always
// pass once the bucket is full.
func (l *Limiter) AllowN(tenant string, n int) (bool, time.Duration) {
	now := l.now()
	b := l.bucket(tenant, now)
	if b.Limit() != rate.Inf {
		n = min(n, b.Burst())
	}
	r := b.ReserveN(now, n)
	if !r.OK() {
		return false, time.Second
	}
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now) // refused requests do not consume the budget
		return false, wait
	}
	return true, 0
}

// Charge takes n tokens from tenant's bucket for work already done (the
// events a write made), going into debt past what the bucket holds: the
// tenant's next requests wait until it is paid back.
func (l *Limiter) Charge(tenant string, n int) {
	now := l.now()
	b := l.bucket(tenant, now)
	if b.Limit() == rate.Inf {
		return
	}
	for n > 0 { // a reservation takes at most the burst
		k := min(n, b.Burst())
		b.ReserveN(now, k)
		n -= k
	}
}

// bucket is key's token bucket, made when it has none.
func (l *Limiter) bucket(key string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[key]; ok {
		return b
	}
	if len(l.buckets) >= l.prune {
		for k, full := range l.buckets {
			if full.TokensAt(now) >= float64(full.Burst()) {
				delete(l.buckets, k)
			}
		}
	}
	b := rate.NewLimiter(rate.Inf, 0)
	if lim := l.limitOf(key); lim.Rate > 0 {
		b = rate.NewLimiter(rate.Limit(lim.Rate), max(lim.Burst, 1))
	}
	l.buckets[key] = b
	return b
}

// limitOf is tenant's limit. l.mu is held.
func (l *Limiter) limitOf(tenant string) Limit {
	if lim, has := l.override[tenant]; has {
		return lim
	}
	return l.def
}

// Burst says how many requests tenant may make at once: what its full
// bucket holds (math.MaxInt without a limit).
func (l *Limiter) Burst(tenant string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim := l.limitOf(tenant); lim.Rate > 0 {
		return max(lim.Burst, 1)
	}
	return math.MaxInt
}

// Wait says how long until key's bucket holds a token, without taking
// one: 0 when a request would be allowed now. A key without a bucket has
// a full one, and is not given one.
func (l *Limiter) Wait(key string) time.Duration { return l.WaitN(key, 1) }

// WaitN says how long until key's bucket holds n tokens, without taking
// them: 0 when n requests would be allowed now (a caller holding n-1 for
// requests under way asks whether one more fits).
func (l *Limiter) WaitN(key string, n int) time.Duration {
	now := l.now()
	l.mu.Lock()
	b, ok := l.buckets[key]
	lim := l.limitOf(key)
	l.mu.Unlock()
	if !ok {
		if lim.Rate <= 0 || n <= max(lim.Burst, 1) {
			return 0
		}
		return time.Duration(float64(n-max(lim.Burst, 1)) / lim.Rate * float64(time.Second))
	}
	if b.Limit() == rate.Inf {
		return 0
	}
	tokens := b.TokensAt(now)
	if tokens >= float64(n) {
		return 0
	}
	if b.Limit() <= 0 {
		return time.Second
	}
	return time.Duration((float64(n) - tokens) / float64(b.Limit()) * float64(time.Second))
}

// ClientAddress is the key a client's failed attempts are counted by: the
// peer's IP address (behind a proxy, the proxy's).
func ClientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
