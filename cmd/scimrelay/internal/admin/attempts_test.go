// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestWrongTokensAreLimited: wrong admin tokens cost a budget per client
// address (10) and in all (30), checked before the token is compared, so
// that once an address spent its budget even the right token waits (429
// with Retry-After); a request without a token costs nothing; loopback
// clients are held by their own budget only, so that guessers elsewhere
// cannot lock the CLI on the relay's machine out; the refusals are logged
// once, then summed up.
func TestWrongTokensAreLimited(t *testing.T) {
	var logBuf eventstest.Log
	h := NewHandler(Options{Token: adminToken, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	send := func(addr, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/admin/v1/nothing-here", nil)
		req.RemoteAddr = addr
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res := httptest.NewRecorder()
		h.ServeHTTP(res, req)
		return res
	}
	const guesser = "192.0.2.1:40000"
	for i := range 20 {
		if res := send(guesser, ""); res.Code != http.StatusUnauthorized {
			t.Fatalf("request %d without a token: %d, want 401 (it is not a guess)", i, res.Code)
		}
	}
	for i := range 10 {
		if res := send(guesser, fmt.Sprintf("guess-%d-0123456789abcdef", i)); res.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d %s, want 401", i, res.Code, res.Body)
		}
	}
	for _, token := range []string{"guess-10-0123456789abcdef", adminToken} {
		res := send(guesser, token)
		if res.Code != http.StatusTooManyRequests || res.Header().Get("Retry-After") == "" || !strings.Contains(res.Body.String(), "too many wrong admin tokens") ||
			!strings.Contains(res.Body.String(), "retry in "+res.Header().Get("Retry-After")+"s") {
			t.Fatalf("after 10 wrong tokens: %d (Retry-After %q) %s, want 429", res.Code, res.Header().Get("Retry-After"), res.Body)
		}
	}
	// Another address is not held by the guesser's budget.
	if res := send("192.0.2.2:40000", adminToken); res.Code != http.StatusNotFound {
		t.Fatalf("the right token from another address: %d %s, want it through (404)", res.Code, res.Body)
	}
	// The overall budget: 30 in a burst, 10 of them spent above.
	for i := range 20 {
		if res := send(fmt.Sprintf("198.51.100.%d:40000", i+1), "guess-0123456789abcdef"); res.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token from fresh address %d: %d, want 401", i, res.Code)
		}
	}
	if res := send("203.0.113.1:40000", adminToken); res.Code != http.StatusTooManyRequests {
		t.Fatalf("the right token from a fresh address once the overall budget is spent: %d, want 429", res.Code)
	}
	for _, local := range []string{"127.0.0.1:40000", "[::1]:40000"} {
		if res := send(local, adminToken); res.Code != http.StatusNotFound {
			t.Fatalf("the right token from %s once the overall budget is spent: %d %s, want it through (404)", local, res.Code, res.Body)
		}
	}
	// Logged once at once, then summed up.
	if n := strings.Count(logBuf.String(), "admin token refused"); n != 1 {
		t.Fatalf("%d lines for the refusals before a summary, want 1:\n%s", n, logBuf.String())
	}
	h.attempts.flush()
	if !strings.Contains(logBuf.String(), "wrong_token=29 too_many_attempts=3") || !strings.Contains(logBuf.String(), "192.0.2.1") {
		t.Fatalf("no summary of 29 more wrong tokens and 3 refused attempts, naming the guesser:\n%s", logBuf.String())
	}
	h.attempts.flush()
	if n := strings.Count(logBuf.String(), "admin tokens refused since the last line"); n != 1 {
		t.Fatalf("%d summaries, want 1 (nothing was refused since):\n%s", n, logBuf.String())
	}
	if res := send(guesser, "guess-0123456789abcdef"); res.Code != http.StatusTooManyRequests || strings.Count(logBuf.String(), "admin token refused") != 2 {
		t.Fatalf("the first refusal after a quiet minute is logged at once: %d\n%s", res.Code, logBuf.String())
	}
}

// TestConcurrentGuessesStayWithinTheBudget: guesses sent at once are
// compared at most as many as the budget holds (the burst of 10), however
// many pass the check before any is known wrong; a right token gives its
// share back.
func TestConcurrentGuessesStayWithinTheBudget(t *testing.T) {
	a := NewTokenAttempts(TokenPerAddress, TokenOverall, nil)
	request := func(addr string) *http.Request {
		req := httptest.NewRequest("GET", "/admin/v1/tokens", nil)
		req.RemoteAddr = addr
		return req
	}
	// Right tokens, one after another, give their share back.
	for i := range 3 * TokenPerAddress.Burst {
		at, _ := a.Begin(request("192.0.2.1:40000"), "test")
		if at == nil {
			t.Fatalf("right token %d refused: a right token must not spend the budget", i)
		}
		at.Done()
	}
	// 100 guesses at once: every one that begins is held until all have
	// tried, as comparisons under way are.
	const guesses = 100
	var (
		begun   sync.WaitGroup
		mu      sync.Mutex
		held    []*Attempt
		compare int
	)
	begun.Add(guesses)
	for range guesses {
		go func() {
			defer begun.Done()
			if at, _ := a.Begin(request("192.0.2.1:40000"), "test"); at != nil {
				mu.Lock()
				held, compare = append(held, at), compare+1
				mu.Unlock()
			}
		}()
	}
	begun.Wait()
	for _, at := range held {
		at.Wrong()
	}
	if compare != TokenPerAddress.Burst {
		t.Fatalf("%d of %d concurrent guesses were let through to be compared, want the burst, %d", compare, guesses, TokenPerAddress.Burst)
	}
	if at, _ := a.Begin(request("192.0.2.1:40000"), "test"); at != nil {
		t.Fatal("a guess after the budget was spent was let through")
	}
}

// TestWrongTokenBudgetsRefill: the budgets refill at the rates README
// gives, 10 a minute per address (one guess every 6 s) and 60 a minute
// in all (one a second), on the limiter's clock, moved by the test: a
// spent address is compared again after 6 s and not before, once; a spent
// overall budget after 1 s and not before, once.
func TestWrongTokenBudgetsRefill(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	h := NewHandler(Options{Token: adminToken})
	h.attempts.limit.SetClock(func() time.Time { return now })
	guess := func(addr string) int {
		req := httptest.NewRequest("GET", "/admin/v1/nothing-here", nil)
		req.RemoteAddr = addr
		req.Header.Set("Authorization", "Bearer guess-0123456789abcdef")
		res := httptest.NewRecorder()
		h.ServeHTTP(res, req)
		return res.Code
	}
	want := func(what, addr string, status int) {
		t.Helper()
		if got := guess(addr); got != status {
			t.Fatalf("%s, from %s: %d, want %d", what, addr, got, status)
		}
	}

	// An address: 10 at once, then one every 6 s.
	const guesser = "192.0.2.1:40000"
	for range TokenPerAddress.Burst {
		want("a guess within the burst", guesser, http.StatusUnauthorized)
	}
	want("a guess past the burst", guesser, http.StatusTooManyRequests)
	now = now.Add(5900 * time.Millisecond)
	want("a guess 5.9 s later", guesser, http.StatusTooManyRequests)
	now = now.Add(100 * time.Millisecond)
	want("a guess 6 s later", guesser, http.StatusUnauthorized)
	want("a second guess 6 s later", guesser, http.StatusTooManyRequests)

	// In all: a minute on, every budget is full again; 30 at once from
	// fresh addresses (10 each at most), then one a second.
	now = now.Add(time.Minute)
	for i := range TokenOverall.Burst {
		want("a guess within the overall burst", fmt.Sprintf("198.51.100.%d:40000", i/TokenPerAddress.Burst+1), http.StatusUnauthorized)
	}
	want("a guess past the overall burst", "203.0.113.1:40000", http.StatusTooManyRequests)
	now = now.Add(900 * time.Millisecond)
	want("a guess 0.9 s later", "203.0.113.2:40000", http.StatusTooManyRequests)
	now = now.Add(100 * time.Millisecond)
	want("a guess 1 s later", "203.0.113.3:40000", http.StatusUnauthorized)
	want("a second guess 1 s later", "203.0.113.4:40000", http.StatusTooManyRequests)
}
