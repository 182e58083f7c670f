// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// openStoreLogging is openStore with the store's log (Warn and above)
// written to the returned log.
func openStoreLogging(t *testing.T) (*Store, *clock, *eventstest.Log) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	log := &eventstest.Log{}
	o := testOptions(c)
	o.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Open(filepath.Join(t.TempDir(), "scimrelay.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, c, log
}

// expirySeries gathers the token expiry metrics: by metric name and
// token id, the value.
func expirySeries(t *testing.T, s *Store) map[string]map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(tokenExpiry{s})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, f := range families {
		out[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "token" {
					out[f.GetName()][l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// TestExpiredTokenStaysInTheExpiryMetric: a token that expired stays in
// scimrelay_token_expiry_timestamp_seconds, with its past expiry, for
// ExpiredKept, so that the README's alert (value - time() < 14 days) goes on
// firing while Entra is refused instead of resolving the moment it starts
// to be; the deprecated metric says seconds left, negative once expired,
// as its help promises. A revoked token is left out: it was ended on
// purpose. An on-call review saw the series vanish at expiry.
func TestExpiredTokenStaysInTheExpiryMetric(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	_, tok, err := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(10*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, cl, _ := s.Clients().Create(ctx, "acme", "okta", c.now().Add(10*24*time.Hour))
	_, revoked, _ := s.Tokens().Create(ctx, "acme", "leaked", c.now().Add(10*24*time.Hour))
	if _, _, err := s.Tokens().Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	c.add(11 * 24 * time.Hour) // both expired a day ago
	got := expirySeries(t, s)
	at, dep := got["scimrelay_token_expiry_timestamp_seconds"], got["scimrelay_token_expiry_seconds"]
	for _, id := range []string{tok.ID, cl.ID} {
		if v, ok := at[id]; !ok || v != float64(c.now().Add(-24*time.Hour).Unix()) {
			t.Errorf("a day after %s expired: timestamp series %v (present %v), want its expiry", id, v, ok)
		}
		if v, ok := dep[id]; !ok || v != -(24*time.Hour).Seconds() {
			t.Errorf("a day after %s expired: deprecated seconds left %v (present %v), want -86400", id, v, ok)
		}
	}
	if _, ok := at[revoked.ID]; ok {
		t.Errorf("the revoked token is in the metric: %v", at)
	}
	c.add(ExpiredKept - 24*time.Hour - time.Second)
	if _, ok := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"][tok.ID]; !ok {
		t.Error("gone from the metric before ExpiredKept")
	}
	c.add(time.Second)
	if got := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"]; len(got) != 0 {
		t.Errorf("%s after expiry, still in the metric: %v", ExpiredKept, got)
	}
}

// TestRotatedOutTokenLeavesTheExpiryMetric: a token a rotation replaced
// leaves scimrelay_token_expiry_timestamp_seconds once its overlap is over
// and the new one is live: the identity provider is not refused, and the
// alert on the metric must not fire for a month after every routine
// rotation (the diff review found it did). Once no credential of its kind
// is live for the tenant, an expired one is shown again.
func TestRotatedOutTokenLeavesTheExpiryMetric(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	_, old, err := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, next, _, err := s.Tokens().Rotate(ctx, "acme", "entra", c.now().Add(20*24*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.add(2 * time.Hour) // the overlap is over
	at := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"]
	if _, ok := at[old.ID]; ok {
		t.Errorf("the rotated-out token is in the metric while its successor is live: %v", at)
	}
	if _, ok := at[next.ID]; !ok {
		t.Errorf("the live token is not in the metric: %v", at)
	}
	c.add(21 * 24 * time.Hour) // the successor expired too: nothing is live
	at = expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"]
	if _, ok := at[next.ID]; !ok {
		t.Errorf("with no live token, the expired one is not in the metric: %v", at)
	}
}

// alertFiring returns the credentials whose expiry series the alert
// (less than 14 days left) fires for, by id.
func alertFiring(t *testing.T, s *Store, c *clock) []string {
	t.Helper()
	var ids []string
	for id, at := range expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"] {
		if at-float64(c.now().Unix()) < 14*86400 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestExpiringAlertEndsOnceItsAdviceIsFollowed: ScimrelayCredentialExpiring
// fires 14 days before a token expires and says to rotate it. Once
// rotated, the token replaced is left out of the metric (and the daily
// warning) while the identity provider does not use it: it fired for the
// whole overlap after every routine rotation, and following its advice
// again cut the token just put into Entra to the overlap (a review of the
// advice the relay gives). If the identity provider goes on using the old
// token, the new one was not put in: it fires again, for the old one.
func TestExpiringAlertEndsOnceItsAdviceIsFollowed(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	oldSecret, old, err := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	firing := func() []string { t.Helper(); return alertFiring(t, s, c) }
	c.add(80 * 24 * time.Hour) // 10 days left: the alert fires, rightly
	if got := firing(); !slices.Equal(got, []string{old.ID}) {
		t.Fatalf("alert series 10 days before the expiry: %v, want %s", got, old.ID)
	}
	// Its advice: token rotate --tenant acme (90 days, an overlap of 24 h).
	newSecret, _, _, err := s.Tokens().Rotate(ctx, "acme", "rotated", c.now().Add(90*24*time.Hour), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute) // the new token is in Entra
	if got := firing(); len(got) != 0 {
		t.Errorf("after the rotation the alert still fires for %v, asking for another", got)
	}
	var buf bytes.Buffer
	done, cancel := context.WithCancel(ctx)
	cancel() // one round of warnings, then return
	s.WarnExpiringTokens(done, slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	if strings.Contains(buf.String(), old.ID) {
		t.Errorf("the daily warning names the token the rotation replaced:\n%s", buf.String())
	}
	// Entra still uses the old token: the new one was not put in.
	if err := s.Authenticate(ctx, "acme", oldSecret); err != nil {
		t.Fatal(err)
	}
	if got := firing(); !slices.Equal(got, []string{old.ID}) {
		t.Errorf("the identity provider uses the replaced token, 24 h from its end: the alert fires for %v, want %s", got, old.ID)
	}
	// Then the new one is put in, and Entra uses it alone: the replaced
	// token leaves the alert (before, it stayed for the whole overlap).
	c.add(40 * time.Minute)
	if err := s.Authenticate(ctx, "acme", newSecret); err != nil {
		t.Fatal(err)
	}
	if got := firing(); len(got) != 0 {
		t.Errorf("Entra uses the new token alone, yet the alert (advice: rotate) fires for %v, the token replaced", got)
	}
}

// TestExpiredTokenRefusalsWarnHourly: requests refused with an expired
// token are logged once a token an hour, not once a request and not
// never: naming the tenant, the token, how many were refused since the
// last line, and the command that issues a new one. An on-call review saw
// Entra refused with nothing in the log.
func TestExpiredTokenRefusalsWarnHourly(t *testing.T) {
	s, c, log := openStoreLogging(t)
	secret, tok, _ := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(20*24*time.Hour))
	other, otherTok, _ := s.Tokens().Create(ctx, "globex", "entra", c.now().Add(20*24*time.Hour))
	c.add(21 * 24 * time.Hour)
	refuse := func(tenant, secret string, n int) {
		t.Helper()
		for range n {
			wantErr(t, s.Authenticate(ctx, tenant, secret), scim.ErrUnauthorized, "expired at")
			c.add(time.Second)
		}
	}
	lines := func() []string {
		var out []string
		for l := range strings.Lines(log.String()) {
			if strings.Contains(l, "expired SCIM token") {
				out = append(out, l)
			}
		}
		return out
	}
	refuse("acme", secret, 5)
	refuse("globex", other, 1)
	got := lines()
	if len(got) != 2 || !strings.Contains(got[0], "token="+tok.ID) || !strings.Contains(got[0], "refused=1\n") ||
		!strings.Contains(got[0], "tenant=acme") || !strings.Contains(got[0], "name=entra") ||
		!strings.Contains(got[0], "scimrelay token create --tenant acme") || !strings.Contains(got[1], "token="+otherTok.ID) {
		t.Fatalf("after 5 refusals of one token and 1 of another, want a line each, the first of 1 refused:\n%s", log)
	}
	c.add(time.Hour)
	refuse("acme", secret, 3)
	got = lines()
	if len(got) != 3 || !strings.Contains(got[2], "token="+tok.ID) || !strings.Contains(got[2], "refused=5\n") {
		t.Fatalf("an hour on, want one more line counting the 4 held back and this one:\n%s", log)
	}
}

// TestShortLivedCredentialWarnsAtIssue: a token or client issued, or
// rotated in, with less than ExpiryWarning to live is warned about at
// once; the daily warning would wait for the next day or start. One that
// lives longer, or never expires, is not.
func TestShortLivedCredentialWarnsAtIssue(t *testing.T) {
	s, c, log := openStoreLogging(t)
	_, short, _ := s.Tokens().Create(ctx, "acme", "short", c.now().Add(7*24*time.Hour))
	_, long, _ := s.Tokens().Create(ctx, "acme", "long", c.now().Add(15*24*time.Hour))
	_, never, _ := s.Tokens().Create(ctx, "acme", "never", time.Time{})
	_, cl, _ := s.Clients().Create(ctx, "acme", "client", c.now().Add(24*time.Hour))
	_, rotated, _, err := s.Tokens().Rotate(ctx, "globex", "rotated", c.now().Add(13*24*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out := log.String()
	for _, want := range []string{short.ID, cl.ID, rotated.ID} {
		if !strings.Contains(out, "token="+want) {
			t.Errorf("no warning for %s, which expires within 14 days:\n%s", want, out)
		}
	}
	for _, not := range []string{long.ID, never.ID} {
		if strings.Contains(out, not) {
			t.Errorf("a warning for %s:\n%s", not, out)
		}
	}
	if !strings.Contains(out, "a SCIM token was issued that expires within 14 days") || !strings.Contains(out, "days_left=7") ||
		!strings.Contains(out, "an OAuth client was issued") || !strings.Contains(out, "a SCIM token was rotated") {
		t.Errorf("warnings:\n%s", out)
	}
}

// TestFarExpiryInTheExpiryMetric: `scimrelay token create --expires
// 2562047h` is accepted (config.ParseDuration: at most what a
// time.Duration holds, about 292 years), so a token may expire after
// 2262, past what UnixNano represents. The metric must still say when it
// expires, not a time in the past that fires the README's alert
// (scimrelay_token_expiry_timestamp_seconds - time() < 14 * 86400).
func TestFarExpiryInTheExpiryMetric(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	expires := c.now().Add(2562047 * time.Hour) // year 2319
	_, tok, err := s.Tokens().Create(ctx, "acme", "forever", expires)
	if err != nil {
		t.Fatal(err)
	}
	got := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"][tok.ID]
	if want := float64(expires.Unix()); got != want {
		t.Fatalf("a token expiring %s: scimrelay_token_expiry_timestamp_seconds is %v (%s), want %v",
			expires.Format(time.RFC3339), got, time.Unix(int64(got), 0).UTC().Format(time.RFC3339), want)
	}
}

// TestRemovedTenantLeavesTheExpiryMetric: a tenant removed from relay.yaml
// (reloaded, not yet purged) has no SCIM endpoint and its credentials
// authenticate nothing; `token rotate --tenant` is refused for it (404).
// Its stored token must not stay in scimrelay_token_expiry_timestamp_seconds,
// or ScimrelayCredentialExpiring fires for it ("issue a new one ... token
// rotate --tenant globex"), and after the expiry keeps firing for 30 days.
func TestRemovedTenantLeavesTheExpiryMetric(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	_, tok, err := s.Tokens().Create(ctx, "globex", "entra", c.now().Add(10*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"][tok.ID]; !ok {
		t.Fatal("the configured tenant's token is not in the metric")
	}
	// The customer left: globex removed from relay.yaml, reloaded.
	if err := s.SetTenants(testOptions(c).Tenants[:2]); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Tokens().Rotate(ctx, "globex", "entra", c.now().Add(90*24*time.Hour), 0); err == nil {
		t.Fatal("rotate for a removed tenant was accepted")
	}
	if v, ok := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"][tok.ID]; ok {
		t.Errorf("removed tenant globex: its token is still in the expiry metric (expires in %.0f days): ScimrelayCredentialExpiring fires for a tenant that is not configured",
			(v-float64(c.now().Unix()))/86400)
	}
	c.add(11 * 24 * time.Hour) // expired a day ago
	if _, ok := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"][tok.ID]; ok {
		t.Errorf("removed tenant globex: its expired token stays in the expiry metric (for %s)", ExpiredKept)
	}
}

// TestTokenRotatedByThePreviousReleaseLeavesTheExpiryMetric: a token
// rotated by the release before this one (37537d8) and still in its
// overlap when this release starts on the same data file. That release's
// Rotate stored the fresh token and shortened the old one's expiry to the
// overlap's end, and wrote no "replaced" (the field is new). The README:
// "one a rotation replaced goes … and within the overlap too, and out of
// the daily warning, while the identity provider has not used it since
// the rotation". After the upgrade it stays, its expiry a day away, and
// the alert (value - time() < 14 days), whose advice is to rotate again,
// fired through the rest of the overlap: what the Replaced mark fixed, for
// every rotation made before the upgrade (an upgrade review).
// markReplacedBefore gives such a record the mark at load.
func TestTokenRotatedByThePreviousReleaseLeavesTheExpiryMetric(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "scimrelay.db")
	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	_, old, err := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c.add(80 * 24 * time.Hour) // 10 days left: the alert fires, and says to rotate
	// What 37537d8's `token rotate --tenant acme --overlap 48h` stored: the
	// new token, and the old one's expiry cut to the overlap's end.
	_, next, err := s.Tokens().Create(ctx, "acme", "rotated", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s.tokens.writeMu.Lock()
	cp := *s.tokens.byID[old.ID]
	cp.Expires = c.now().Add(48 * time.Hour).UTC()
	err = s.putTokens(ctx, &cp)
	s.tokens.writeMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	// A file that release wrote has no mark of this release's first start.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyReplacedMarked) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// This release starts on the file; the new token is in Entra, the old
	// one is not used again.
	c.add(time.Minute)
	s, err = Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	at := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"]
	if _, ok := at[next.ID]; !ok {
		t.Fatalf("the live token is not in the metric: %v", at)
	}
	if v, ok := at[old.ID]; ok {
		t.Errorf("after the upgrade, the token the previous release's rotation replaced (not used since) is in the metric, "+
			"expiring in %s: the alert asking for a rotation fires through the overlap",
			time.Unix(int64(v), 0).Sub(c.now()).Round(time.Minute))
	}
	var buf bytes.Buffer
	done, cancel := context.WithCancel(ctx)
	cancel() // one round of warnings, then return
	s.WarnExpiringTokens(done, slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	if strings.Contains(buf.String(), old.ID) {
		t.Errorf("the daily warning names the token the previous release's rotation replaced:\n%s", buf.String())
	}
}

// TestSecondTokenMadeOnPurposeStaysInTheExpiryMetric: a second token made
// for another identity provider, outliving the first, is no rotation: the
// first stays in the expiry metric across restarts. Rotations an earlier
// release made are inferred once, at this release's first start; inferred
// at every start, the first token left the metric after any restart, its
// alert silent while its identity provider did not use it (a review of the
// day's later diff).
func TestSecondTokenMadeOnPurposeStaysInTheExpiryMetric(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "scimrelay.db")
	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	secretA, a, err := s.Tokens().Create(ctx, "acme", "entra-eu", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c.add(80 * 24 * time.Hour)
	if err := s.Authenticate(ctx, "acme", secretA); err != nil { // its identity provider syncs
		t.Fatal(err)
	}
	c.add(10 * time.Minute)
	_, b, err := s.Tokens().Create(ctx, "acme", "entra-us", c.now().Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"][a.ID]; !ok {
		t.Fatalf("before the restart, token a (10 days left) is not in the metric")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.add(5 * time.Minute)
	s, err = Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	at := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"]
	if _, ok := at[b.ID]; !ok {
		t.Fatalf("token b is not in the metric: %v", at)
	}
	if _, ok := at[a.ID]; !ok {
		t.Errorf("after a restart, token a (never rotated, 10 days left) left the expiry metric: %v", at)
	}
}

// TestReplacedTokenInUseStaysInTheExpiryMetricWhileItsUseIsWritten: a
// replaced token the identity provider still uses stays in the expiry
// metric while the flush writes that use. The flush took the use out of
// memory before its write committed, and for that while the token read
// as unused since the rotation: it left the metric, and the alert on it
// ended and fired again (a review of the token rotation).
func TestReplacedTokenInUseStaysInTheExpiryMetricWhileItsUseIsWritten(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	secret, old, err := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(10*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Tokens().Rotate(ctx, "acme", "rotated", c.now().Add(90*24*time.Hour), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	for round := range 100 {
		c.add(time.Second)
		if err := s.Authenticate(ctx, "acme", secret); err != nil { // Entra has not the new one yet
			t.Fatal(err)
		}
		flushed := make(chan error, 1)
		go func() { flushed <- s.flushTokenUse() }()
		for writing := true; writing; {
			select {
			case err := <-flushed:
				if err != nil {
					t.Fatal(err)
				}
				writing = false
			default:
			}
			if !inExpiries(s, old.ID) {
				t.Fatalf("round %d: the replaced token, used since the rotation, left the expiry metric while its use was written", round)
			}
		}
	}
}

// TestReplacedTokenUsedAfterAClockStepBackStaysInTheExpiryMetric: a token
// is rotated, then the wall clock steps back an hour (NTP correcting a
// clock that ran ahead), and Entra, which was not given the new token,
// goes on using the old one. README: "while the identity provider has not
// used it since the rotation; used since, it is shown again, as the new
// one is not in the identity provider yet". The use came after the
// rotation; the old token must stay in the expiry metric (and the daily
// warning, the console's overview), or its overlap ends with Entra
// refused and no alert having fired.
func TestReplacedTokenUsedAfterAClockStepBackStaysInTheExpiryMetric(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	secret, old, err := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(10*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	if err := s.Authenticate(ctx, "acme", secret); err != nil { // Entra's last sync before the rotation
		t.Fatal(err)
	}
	if err := s.flushTokenUse(); err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	if _, _, _, err := s.Tokens().Rotate(ctx, "acme", "rotated", c.now().Add(90*24*time.Hour), 7*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if inExpiries(s, old.ID) {
		t.Fatal("set-up: the replaced token, not used since the rotation, is listed")
	}
	c.add(-time.Hour) // the wall clock steps back
	for range 3 {
		c.add(10 * time.Minute) // Entra syncs with the old token
		if err := s.Authenticate(ctx, "acme", secret); err != nil {
			t.Fatal(err)
		}
		if err := s.flushTokenUse(); err != nil {
			t.Fatal(err)
		}
		if !inExpiries(s, old.ID) {
			t.Fatalf("the replaced token, used by Entra after the rotation (the wall clock stepped back an hour since), is out of the expiry metric and the daily warning: its overlap ends with Entra refused and no alert")
		}
	}
}

// inExpiries reports whether the credential id is in s.TokenExpiries (the
// expiry metric, the daily warning, the console's tokens to rotate).
func inExpiries(s *Store, id string) bool {
	for _, tok := range s.TokenExpiries() {
		if tok.ID == id {
			return true
		}
	}
	return false
}

// credentialSeries gathers scimrelay_tenant_credential_*_timestamp_seconds:
// by "accepted" or "refused", and tenant, the value.
func credentialSeries(t *testing.T, s *Store) map[string]map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(credentialSeen{s})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, f := range families {
		which := strings.TrimSuffix(strings.TrimPrefix(f.GetName(), "scimrelay_tenant_credential_"), "_timestamp_seconds")
		out[which] = map[string]float64{}
		for _, m := range f.GetMetric() {
			out[which][m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestRefusedCredentialMetricsSayWhichCameLast: the two timestamps the
// refusal alert compares. Every configured tenant has both from 0; each
// way a credential is accepted (a static token, a stored one, the token
// endpoint, an access token, Basic) sets the accepted one, each way a
// credential of the tenant that no longer works is presented (a revoked
// or expired token; a revoked or expired client, at the token endpoint,
// with Basic, or by an access token it had) sets the refused one, and a
// credential the relay does not know (anyone can send one) sets neither.
func TestRefusedCredentialMetricsSayWhichCameLast(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	at := func(which, tenant string) float64 { return credentialSeries(t, s)[which][tenant] }
	for _, tenant := range []string{"acme", "safe", "globex"} {
		if a, r := at("accepted", tenant), at("refused", tenant); a != 0 || r != 0 {
			t.Fatalf("%s before any request: accepted %v, refused %v; want both 0", tenant, a, r)
		}
	}
	secret, _, err := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	revokedSecret, revoked, _ := s.Tokens().Create(ctx, "acme", "leaked", time.Time{})
	if _, _, err := s.Tokens().Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	clSecret, cl, err := s.Clients().Create(ctx, "acme", "okta", c.now().Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	access, err := s.IssueAccessToken(ctx, "acme", cl.ID, clSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	secs := func() float64 { return unixSeconds(c.now()) }
	step := func(what string, do func() error, wantErr bool, which string) {
		t.Helper()
		c.add(time.Minute)
		before := credentialSeries(t, s)
		if err := do(); (err != nil) != wantErr {
			t.Fatalf("%s: %v", what, err)
		}
		after := credentialSeries(t, s)
		for _, w := range []string{"accepted", "refused"} {
			want := before[w]["acme"]
			if w == which {
				want = secs()
			}
			if after[w]["acme"] != want {
				t.Errorf("%s: %s %v, want %v", what, w, after[w]["acme"], want)
			}
			if after[w]["globex"] != 0 {
				t.Errorf("%s: another tenant's %s is %v", what, w, after[w]["globex"])
			}
		}
	}
	step("a static token", func() error { return s.Authenticate(ctx, "acme", "acme-static-token-0123456789") }, false, "accepted")
	step("a revoked token", func() error { return s.Authenticate(ctx, "acme", revokedSecret) }, true, "refused")
	step("an unknown token", func() error { return s.Authenticate(ctx, "acme", "scimrelay_tok_nothing_of_ours") }, true, "")
	step("the revoked token at another tenant", func() error { return s.Authenticate(ctx, "globex", revokedSecret) }, true, "")
	step("a stored token", func() error { return s.Authenticate(ctx, "acme", secret) }, false, "accepted")
	step("the token endpoint", func() error {
		_, err := s.IssueAccessToken(ctx, "acme", cl.ID, clSecret, time.Hour)
		return err
	}, false, "accepted")
	step("an access token", func() error { return s.Authenticate(ctx, "acme", access.Token) }, false, "accepted")
	step("Basic", func() error { return s.AuthenticateBasic(ctx, "acme", cl.ID, clSecret) }, false, "accepted")
	step("a wrong client secret", func() error { return s.AuthenticateBasic(ctx, "acme", cl.ID, "wrong") }, true, "")

	c.add(48 * time.Hour) // the token and the client expired
	step("an expired token", func() error { return s.Authenticate(ctx, "acme", secret) }, true, "refused")
	step("the static token again", func() error { return s.Authenticate(ctx, "acme", "acme-static-token-0123456789") }, false, "accepted")
	step("an expired client at the token endpoint", func() error {
		_, err := s.IssueAccessToken(ctx, "acme", cl.ID, clSecret, time.Hour)
		return err
	}, true, "refused")
	step("an expired client with Basic", func() error { return s.AuthenticateBasic(ctx, "acme", cl.ID, clSecret) }, true, "refused")
	step("an expired access token", func() error { return s.Authenticate(ctx, "acme", access.Token) }, true, "") // the client asks for another

	clSecret, cl, err = s.Clients().Create(ctx, "acme", "okta-2", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if access, err = s.IssueAccessToken(ctx, "acme", cl.ID, clSecret, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Clients().Revoke(ctx, cl.ID); err != nil {
		t.Fatal(err)
	}
	step("a revoked client's access token", func() error { return s.Authenticate(ctx, "acme", access.Token) }, true, "refused")
	step("a revoked client at the token endpoint", func() error {
		_, err := s.IssueAccessToken(ctx, "acme", cl.ID, clSecret, time.Hour)
		return err
	}, true, "refused")
}

// TestRefusedCredentialAlertAfterAClockStepBack: the refusal alert fires
// while refused > accepted. Entra's revoked token is refused; the clock,
// which ran ahead, is stepped back two minutes by NTP (noteUse already
// guards the last use against exactly this); the operator's new token is
// then accepted. The latest credential presented was accepted: the
// accepted timestamp must be the later one.
func TestRefusedCredentialAlertAfterAClockStepBack(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	revokedSecret, revoked, err := s.Tokens().Create(ctx, "acme", "entra", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Tokens().Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	if err := s.Authenticate(ctx, "acme", revokedSecret); err == nil {
		t.Fatal("a revoked token was accepted")
	}
	c.add(-2 * time.Minute) // NTP steps the clock back
	fresh, _, err := s.Tokens().Create(ctx, "acme", "entra-2", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Authenticate(ctx, "acme", fresh); err != nil {
		t.Fatal(err)
	}
	got := credentialSeries(t, s)
	if r, a := got["refused"]["acme"], got["accepted"]["acme"]; r > a {
		t.Errorf("the new token was accepted after the refusal, yet refused %v > accepted %v: ScimrelayRefusedCredentials fires until Entra's next cycle", r, a)
	}
}

// TestRefusedCredentialOfAPurgedTenantNamesNoNewOne: globex's revoked
// token is refused (the alert fires), the operator removes globex and
// purges it; later a tenant of that name is configured again, with no
// credential of its own used yet. Nothing of the new tenant was refused:
// the alert must not fire for it.
func TestRefusedCredentialOfAPurgedTenantNamesNoNewOne(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	secret, tok, err := s.Tokens().Create(ctx, "globex", "entra", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Tokens().Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	if err := s.Authenticate(ctx, "globex", secret); err == nil {
		t.Fatal("a revoked token was accepted")
	}
	if err := s.SetTenants(withoutTenant(c, "globex")); err != nil {
		t.Fatal(err)
	}
	purgeAll(t, s, "globex", nil)
	c.add(time.Hour)
	if err := s.SetTenants(testOptions(c).Tenants); err != nil {
		t.Fatal(err)
	}
	got := credentialSeries(t, s)
	if r, a := got["refused"]["globex"], got["accepted"]["globex"]; r > a {
		t.Errorf("globex configured anew after its purge: refused %v > accepted %v, so ScimrelayRefusedCredentials fires for a tenant nothing was refused of", r, a)
	}
}

// TestClientExpiringAlertEndsOnceItsAdviceIsFollowed is
// TestExpiringAlertEndsOnceItsAdviceIsFollowed for an OAuth client, as
// Entra uses one: it holds an access token the old client was issued (up
// to oauth.token_lifetime) and goes on presenting it after the client was
// rotated and the new client put in; it asks the token endpoint (with the
// new client) only once that access token expires.
func TestClientExpiringAlertEndsOnceItsAdviceIsFollowed(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	oldSecret, old, err := s.Clients().Create(ctx, "acme", "entra", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	firing := func() []string { t.Helper(); return alertFiring(t, s, c) }
	c.add(80 * 24 * time.Hour) // 10 days left: the alert fires, rightly
	// Entra's access token, issued a minute before the rotation.
	at, err := s.IssueAccessToken(ctx, "acme", old.ID, oldSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := firing(); !slices.Equal(got, []string{old.ID}) {
		t.Fatalf("alert series 10 days before the expiry: %v, want %s", got, old.ID)
	}
	c.add(time.Minute)
	// Its advice: client rotate --tenant acme (90 days, an overlap of 24 h).
	newSecret, next, _, err := s.Clients().Rotate(ctx, "acme", "rotated", c.now().Add(90*24*time.Hour), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute) // the new client is in Entra
	if got := firing(); len(got) != 0 {
		t.Fatalf("right after the rotation the alert fires for %v", got)
	}
	// Entra's next SCIM request carries the access token it holds, which
	// is good for the rest of its hour.
	if err := s.Authenticate(ctx, "acme", at.Token); err != nil {
		t.Fatal(err)
	}
	if got := firing(); len(got) != 0 {
		t.Errorf("Entra presents the access token it holds (issued before the rotation), and the alert (advice: rotate) fires again for %v, the client replaced", got)
	}
	c.add(time.Hour) // that access token expired; Entra asks with the new client
	if _, err := s.IssueAccessToken(ctx, "acme", next.ID, newSecret, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := firing(); len(got) != 0 {
		t.Errorf("Entra holds the new client and uses it alone, yet the alert (advice: rotate) fires for %v, the client it replaced (new client %s)", got, next.ID)
	}
	var buf bytes.Buffer
	done, cancel := context.WithCancel(ctx)
	cancel()
	s.WarnExpiringTokens(done, slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	if strings.Contains(buf.String(), old.ID) {
		t.Errorf("the daily warning names the client the rotation replaced, which Entra no longer uses:\n%s", buf.String())
	}
}

// TestClientUsedAfterItsRotationStaysInTheAlert: an identity
// provider that asks the token endpoint with the old client after the
// rotation (the new one was not put in) keeps it in the alert, and so does
// the use of an access token it was issued then.
func TestClientUsedAfterItsRotationStaysInTheAlert(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	oldSecret, old, err := s.Clients().Create(ctx, "acme", "entra", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c.add(80 * 24 * time.Hour)
	if _, _, _, err := s.Clients().Rotate(ctx, "acme", "rotated", c.now().Add(90*24*time.Hour), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	c.add(2 * time.Second)
	at, err := s.IssueAccessToken(ctx, "acme", old.ID, oldSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := expirySeries(t, s)["scimrelay_token_expiry_timestamp_seconds"][old.ID]; !ok {
		t.Fatal("the old client, used at the token endpoint after the rotation, is not in the metric")
	}
	if err := s.flushTokenUse(); err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	if err := s.Authenticate(ctx, "acme", at.Token); err != nil {
		t.Fatal(err)
	}
	list, _ := s.Clients().List(ctx, "acme")
	for _, cl := range list {
		if cl.ID == old.ID && !cl.LastUsed.Equal(c.now()) {
			t.Errorf("an access token issued after the rotation: last used %s, want %s", cl.LastUsed, c.now())
		}
	}
}

// TestReplacedTokenAnotherIdentityProviderStillUsesStaysInTheExpiryMetric:
// a tenant with a token per identity provider (README: token create
// --name entra, --name okta); token rotate replaces both and issues one
// new token. Entra is given the new one; Okta goes on with its old one.
// README: "used since, it is shown again, as the new one is not in the
// identity provider yet". Entra's use of the new token after Okta's use
// of its old one does not take Okta's token out of the alert: a
// successor used after a replaced credential hands it over only where
// the rotation replaced that one alone (the first version of that rule,
// 6066d52, dropped it; found by a review).
func TestReplacedTokenAnotherIdentityProviderStillUsesStaysInTheExpiryMetric(t *testing.T) {
	s, c, _ := openStoreLogging(t)
	_, _, err := s.Tokens().Create(ctx, "acme", "entra", c.now().Add(10*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	oktaSecret, okta, err := s.Tokens().Create(ctx, "acme", "okta", c.now().Add(10*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	newSecret, _, _, err := s.Tokens().Rotate(ctx, "acme", "rotated", c.now().Add(90*24*time.Hour), 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		c.add(10 * time.Minute)
		if err := s.Authenticate(ctx, "acme", oktaSecret); err != nil { // Okta, not given the new one
			t.Fatal(err)
		}
		if !inExpiries(s, okta.ID) {
			t.Fatalf("round %d: okta's replaced token, just used, is not in the expiry metric", round)
		}
		c.add(time.Minute)
		if err := s.Authenticate(ctx, "acme", newSecret); err != nil { // Entra, given the new one
			t.Fatal(err)
		}
		if err := s.flushTokenUse(); err != nil {
			t.Fatal(err)
		}
		if !inExpiries(s, okta.ID) {
			t.Fatalf("round %d: okta's replaced token, which Okta still uses (last a minute ago, after the rotation), left the expiry metric once Entra used the new token", round)
		}
	}
}
