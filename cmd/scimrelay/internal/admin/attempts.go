// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
	"github.com/scimrelay/scimrelay/scim"
)

// maxPathLogged is how much of a refused request's path a log line says:
// the path is the caller's, as long as the request line the listener
// takes (about 1 MiB), and a refusal needs no token.
const maxPathLogged = 256

// TokenPerAddress and TokenOverall limit wrong admin tokens: 10 a minute
// per client address (bursts of 10), 60 a minute in all (30), on the
// admin API and at the console's sign-in alike: one TokenAttempts serves
// both, so that guessing costs the same budget whichever door it knocks
// on. Only wrong tokens are charged (the CLI and the console's pages send
// the right one many times a minute), and the budget is checked before
// the token is compared: a client that spent its budget waits, even with
// the right token, so a guesser learns nothing more until it refills.
// Checking and charging are one step (Begin holds a share of the budget
// until the token is known wrong or right), so that guesses sent at once
// cannot all pass the check before any is charged.
//
// Loopback clients are one address, and only that address's budget holds
// them: the overall budget, which an attacker with many addresses could
// spend, does not lock out the CLI on the relay's own machine (or in its
// pod or container, through kubectl exec or port-forward, docker compose
// exec).
var (
	TokenPerAddress = httpmw.Limit{Rate: 10.0 / 60, Burst: 10}
	TokenOverall    = httpmw.Limit{Rate: 1, Burst: 30}
)

// Limiter keys: a client's address is an IP, never one of these.
const (
	overallKey  = "overall"
	loopbackKey = "loopback"
)

// refusalLogEvery is how often refused tokens are summed up in the log.
const refusalLogEvery = time.Minute

// A summary names up to maxClientsLogged addresses, those with the most
// refusals among the first maxClientsCounted it saw.
const (
	maxClientsLogged  = 10
	maxClientsCounted = 1000
)

// InProcess is the RemoteAddr of a request the console makes in-process
// (adminclient.HandlerTransport); no connection has it. Those requests
// are not limited here: the console limits its sign-in with the same
// TokenAttempts, and its other calls carry the token of a session.
const InProcess = "in-process"

// TokenAttempts limits and logs the wrong admin tokens clients send.
type TokenAttempts struct {
	limit *httpmw.Limiter
	log   *slog.Logger

	// gate makes checking a budget and holding part of it one step; held
	// counts the attempts under way by limiter key.
	gate sync.Mutex
	held map[string]int

	mu sync.Mutex
	// quiet: no refusal since the last summary, so the next one is
	// logged at once.
	quiet           bool
	wrong, tooMany  int
	clients         map[string]int
	lastPath, where string
}

// NewTokenAttempts returns the limiter of wrong admin tokens, logging to
// log: TokenPerAddress and TokenOverall, unless a test wants others (a
// zero Limit is none).
func NewTokenAttempts(perAddress, overall httpmw.Limit, log *slog.Logger) *TokenAttempts {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TokenAttempts{
		limit: httpmw.NewLimiter(perAddress, map[string]httpmw.Limit{overallKey: overall}),
		log:   log, quiet: true, clients: map[string]int{}, held: map[string]int{},
	}
}

// clientKey is the limiter's key of r's client, and whether it is on
// loopback.
func clientKey(r *http.Request) (string, bool) {
	addr := httpmw.ClientAddress(r)
	if ip := net.ParseIP(addr); ip != nil && ip.IsLoopback() {
		return loopbackKey, true
	}
	return addr, false
}

// Attempt is an admin token being compared. From Begin until it is known
// to be right (Done) or wrong (Wrong) it holds one of its client's budget
// and, off loopback, one of the overall budget, so that guesses sent at
// once cannot all pass a check that none of them has paid for yet: at most
// as many are compared as the budget has left.
type Attempt struct {
	a     *TokenAttempts
	r     *http.Request
	where string
	key   string
	local bool
	ended bool
}

// Begin holds one of r's client's budget while its token is compared, or,
// when the budget (less what attempts under way hold) is spent, says how
// long until it is not and logs the refusal (summed). Call it before
// comparing, and end the attempt with Wrong or Done.
func (a *TokenAttempts) Begin(r *http.Request, where string) (*Attempt, time.Duration) {
	key, local := clientKey(r)
	a.gate.Lock()
	wait := a.limit.WaitN(key, a.held[key]+1)
	if wait == 0 && !local {
		wait = a.limit.WaitN(overallKey, a.held[overallKey]+1)
	}
	if wait == 0 {
		a.held[key]++
		if !local {
			a.held[overallKey]++
		}
	}
	a.gate.Unlock()
	if wait > 0 {
		a.note(r, where, false)
		return nil, wait
	}
	return &Attempt{a: a, r: r, where: where, key: key, local: local}, 0
}

// Wrong spends what the attempt holds, the token being wrong, and logs it
// (summed). A loopback client's wrong token is charged to the overall
// budget too, which does not hold it.
func (at *Attempt) Wrong() { at.end(true) }

// Done gives back what the attempt holds: the token was right, or there
// was none to compare (a request without one is not a guess). After Wrong
// it does nothing. A nil Attempt (a request not limited) does nothing.
func (at *Attempt) Done() { at.end(false) }

func (at *Attempt) end(wrong bool) {
	if at == nil || at.ended {
		return
	}
	at.ended = true
	a := at.a
	a.gate.Lock()
	if wrong {
		a.limit.Allow(at.key)
		a.limit.Allow(overallKey)
	}
	a.release(at.key)
	if !at.local {
		a.release(overallKey)
	}
	a.gate.Unlock()
	if wrong {
		a.note(at.r, at.where, true)
	}
}

// release drops one attempt under way of key. a.gate is held.
func (a *TokenAttempts) release(key string) {
	if a.held[key]--; a.held[key] <= 0 {
		delete(a.held, key)
	}
}

// note logs a refusal: the first after a quiet period at once, the others
// summed up by Run once a minute, so that a flood of guesses is a line a
// minute in the log rather than a line each.
func (a *TokenAttempts) note(r *http.Request, where string, wrong bool) {
	client := httpmw.ClientAddress(r)
	a.mu.Lock()
	if a.quiet {
		a.quiet = false
		a.mu.Unlock()
		reason := "too many wrong admin tokens from this client, or from all"
		if wrong {
			reason = "wrong admin token"
		}
		a.log.WarnContext(r.Context(), "admin token refused; more refusals are summed up once a minute",
			append([]any{"reason", reason, "client", client, "where", where, "path", scim.Truncate(r.URL.Path, maxPathLogged)}, requestIDs(r.Context())...)...)
		return
	}
	defer a.mu.Unlock()
	if wrong {
		a.wrong++
	} else {
		a.tooMany++
	}
	if _, ok := a.clients[client]; ok || len(a.clients) < maxClientsCounted {
		a.clients[client]++
	}
	a.lastPath, a.where = scim.Truncate(r.URL.Path, maxPathLogged), where
}

// Run sums up the refusals once a minute until ctx ends.
func (a *TokenAttempts) Run(ctx context.Context) {
	t := time.NewTicker(refusalLogEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.flush()
			return
		case <-t.C:
			a.flush()
		}
	}
}

// flush logs the refusals since the last summary, if any; with none, the
// next refusal is logged at once.
func (a *TokenAttempts) flush() {
	a.mu.Lock()
	wrong, tooMany, clients, path, where := a.wrong, a.tooMany, a.clients, a.lastPath, a.where
	a.wrong, a.tooMany, a.clients = 0, 0, map[string]int{}
	a.quiet = wrong+tooMany == 0
	a.mu.Unlock()
	if wrong+tooMany == 0 {
		return
	}
	names := make([]string, 0, len(clients))
	for c := range clients {
		names = append(names, c)
	}
	sort.Slice(names, func(i, j int) bool { return clients[names[i]] > clients[names[j]] })
	a.log.Warn("admin tokens refused since the last line", "wrong_token", wrong, "too_many_attempts", tooMany,
		"clients", len(clients), "most_from", names[:min(len(names), maxClientsLogged)], "last_where", where, "last_path", path)
}
