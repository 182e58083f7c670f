// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// The console pages the 2026-12-04 review found saying less, or other,
// than the admin API and the CLI.

// TestConsoleLogShowsSummaryCounts: the provisioning log keeps successful
// reads, and refusals past a minute's first ten, as one summary entry of
// a minute with their count, which the overview counts. The log's row,
// the entry's page and scimrelay log say how many requests a summary
// stands for (they showed it as one request).
func TestConsoleLogShowsSummaryCounts(t *testing.T) {
	p, b := consoleRelay(t, nil)
	cfg := cliConfig(t, p, adminSecret)
	p.srv.reqLog.Record(relay.LogEntry{Time: time.Now(), Tenant: "acme", Operation: "list", Resource: "User", Status: 401, Unauthenticated: true,
		Detail: "invalid bearer token", RequestID: "r12", Method: "GET", Path: "/scim/v2/acme/Users", Count: 12, Latency: time.Millisecond, LatencyMax: 7 * time.Millisecond})
	var row string
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		body := b.get("/ui/log?tenant=acme&status=4xx&since=1h").body
		i := strings.Index(body, `<tr>`+"\n"+`    <td><a href="/ui/log/`)
		if i < 0 {
			return errors.New("the summary is not listed yet")
		}
		row = body[i : i+strings.Index(body[i:], "</tr>")]
		return nil
	})
	if !strings.Contains(row, "12 requests") {
		t.Errorf("the log's row of a summary of 12 requests does not say so:\n%s", row)
	}
	key := regexp.MustCompile(`href="/ui/log/([0-9a-f]+)"`).FindStringSubmatch(row)[1]
	b.get("/ui/log/"+key).want(t, http.StatusOK, "12 requests in a minute's summary", "7ms the longest")
	if _, out, _ := cli(t, "log", "--tenant", "acme", "--config", cfg); !strings.Contains(out, "list (12 requests)") {
		t.Errorf("scimrelay log does not say the summary's count:\n%s", out)
	}
}

// TestConsoleRecentAttemptsOfABusySink: a sink's page shows "the latest of
// the last 10 minutes", also on a sink that made more than 5,000 attempts
// in them (an Entra initial cycle of a few thousand users): it showed the
// 5,000th from the window's start, never the attempt just made.
func TestConsoleRecentAttemptsOfABusySink(t *testing.T) {
	hook := newFlakyHook(t)
	p, b := consoleRelay(t, func(c *config.Config) { withSink(c, "crm", hook.URL, nil) })
	// Bulks of 100: one of 1,000 took longer than limits.write_timeout's
	// 60 s under -race on a loaded machine, and the relay cut its answer.
	const users, perBulk = 6000, 100
	for n := range users / perBulk {
		var ops []string
		for i := range perBulk {
			ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Users","bulkId":"u%d","data":{%s,"userName":"u%d-%d"}}`, i, userSchema, n, i))
		}
		p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(0, ops...)).want(t, 200)
	}
	latest := p.scim("acme", acmeToken, "POST", "/Users", `{`+userSchema+`,"userName":"the-latest"}`).want(t, 201).str("id")
	eventstest.CheckFor(t, 120*time.Second, 200*time.Millisecond, func() error {
		if n := hook.delivered(); n < users+1 {
			return fmt.Errorf("%d of %d delivered", n, users+1)
		}
		return nil
	})
	// The latest attempt is that of the last event the receiver took,
	// not necessarily the-latest's: the worker delivers the stream's
	// partitions side by side, and a partition's backlog can outlast
	// the-latest's by more than the 25 attempts the page shows. The
	// receiver has the event a moment before the worker has its answer
	// and records the attempt: poll the page (which reads the thousands of
	// attempts of the last minute) until it is there.
	last := hook.lastTaken()
	if !strings.HasPrefix(last, "Users/") {
		t.Fatalf("the last delivery taken has ce-subject %q", last)
	}
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		body := b.get("/ui/sinks/crm").want(t, http.StatusOK).body
		i := strings.Index(body, `id="recent"`)
		if i < 0 {
			return fmt.Errorf("the sink's page has no Recent attempts:\n%s", body)
		}
		if recent := body[i:]; !strings.Contains(recent, last) {
			return fmt.Errorf("Recent attempts does not show the attempt that delivered %s, the latest (the-latest is Users/%s):\n%s", last, latest, recent[:min(len(recent), 2000)])
		}
		return nil
	})
}

// TestConsoleRedriveJobAccountsForEveryDeadLetter: a redrive that keeps a
// dead letter in the queue behind an earlier one of its resource that
// failed again says so, as dlq redrive does, and its "done" says dead
// letters were left (its page said "done", in green, "0 delivered, 1 still
// failing" of 2).
func TestConsoleRedriveJobAccountsForEveryDeadLetter(t *testing.T) {
	hook := newFlakyHook(t)
	p, b := consoleRelay(t, func(c *config.Config) {
		withSink(c, "crm", hook.URL, func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(50 * time.Millisecond)} })
	})
	hook.fail(http.StatusGone)
	uid := p.scim("acme", acmeToken, "POST", "/Users", `{`+userSchema+`,"userName":"ann"}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"Ann"}]}`).want(t, 200)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(b.get("/ui/sinks/crm").body, "Redrive all 2") {
			return errors.New("the two dead letters are not there yet")
		}
		return nil
	})
	// The receiver still refuses: the first fails again, the second is
	// held behind it.
	job := b.post("/ui/sinks/crm/redrive", url.Values{"all": {"1"}}).redirect(t, "/ui/jobs/")
	section := jobSection(t, b, job)
	if !strings.Contains(section, "1 still failing") || !strings.Contains(section, "1 kept in the queue behind an earlier one of their resource that failed again") ||
		!strings.Contains(section, `badge warn">done</span> <span class="muted">with dead letters left in the queue`) {
		t.Errorf("the page of a redrive that held a dead letter:\n%s", section)
	}
}

// TestConsoleRedriveOfOneDeadLetter: Redrive on one dead letter's row
// redrives that one, and its page counts it against 1, not against the
// queue (it said "1 of 3 dead letters", as if it stopped short).
func TestConsoleRedriveOfOneDeadLetter(t *testing.T) {
	hook := newFlakyHook(t)
	p, b := consoleRelay(t, func(c *config.Config) { withSink(c, "crm", hook.URL, nil) })
	hook.fail(http.StatusGone)
	for _, name := range []string{"ann", "bob", "cat"} {
		p.scim("acme", acmeToken, "POST", "/Users", `{`+userSchema+`,"userName":"`+name+`"}`).want(t, 201)
	}
	var sink string
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if sink = b.get("/ui/sinks/crm").body; !strings.Contains(sink, "Redrive all 3") {
			return errors.New("the three dead letters are not there yet")
		}
		return nil
	})
	hook.fail(0)
	id := regexp.MustCompile(`name="id" value="([^"]+)"`).FindStringSubmatch(sink)
	job := b.post("/ui/sinks/crm/redrive", url.Values{"id": {id[1]}}).redirect(t, "/ui/jobs/")
	section := jobSection(t, b, job)
	if !strings.Contains(section, "1 of 1 dead letters: <strong>1 delivered</strong>") || !strings.Contains(section, `badge ok">done`) {
		t.Errorf("the page of a redrive of one dead letter of 3:\n%s", section)
	}
}

// TestConsoleRevokeOfARevokedToken: revoking a token revoked already (from
// the CLI, another tab) says so and when, as token revoke does; it said it
// was revoked now and "stops working at once".
func TestConsoleRevokeOfARevokedToken(t *testing.T) {
	p, b := consoleRelay(t, nil)
	_, tok, err := p.srv.store.Tokens().Create(context.Background(), "acme", "old-entra", time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	confirm := "/ui/tenants/acme/tokens/" + tok.ID + "/revoke"
	b.get(confirm).want(t, http.StatusOK, "It stops working at once")
	if _, _, err := p.srv.store.Tokens().Revoke(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	b.get(confirm).want(t, http.StatusOK, "It was revoked already, at ")
	b.post(confirm, nil).redirect(t, "/ui/tenants/acme")
	body := b.get("/ui/tenants/acme").want(t, http.StatusOK).body
	notice := regexp.MustCompile(`<p class="notice" role="status">(.*?)</p>`).FindStringSubmatch(body)
	if notice == nil || !strings.Contains(notice[1], "Token "+tok.ID+" (old-entra) was revoked already, at ") || strings.Contains(notice[1], "stops working") {
		t.Errorf("revoking a token revoked earlier says %q", notice)
	}
}

// TestConsoleRemovedSinkIsNotLinked: a request's page lists its deliveries
// to a sink removed since (its dead letters are kept, listed on the sinks
// page) without a link to the sink's page, which a sink no longer
// configured does not have (it linked to a 404).
func TestConsoleRemovedSinkIsNotLinked(t *testing.T) {
	hook := newFlakyHook(t)
	hook.fail(http.StatusGone)
	p, b := consoleRelay(t, func(c *config.Config) { withSink(c, "old-crm", hook.URL, nil) })
	p.scim("acme", acmeToken, "POST", "/Users", `{`+userSchema+`,"userName":"ann"}`).want(t, 201)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(b.get("/ui/sinks/old-crm").body, "Redrive all 1") {
			return errors.New("not dead-lettered yet")
		}
		return nil
	})
	key := regexp.MustCompile(`href="/ui/log/([0-9a-f]{32})"`).FindStringSubmatch(b.get("/ui/log?tenant=acme&operation=create").body)
	if key == nil {
		t.Fatal("the create is not in the log")
	}
	// The request's page lists its deliveries from the attempts log, which
	// the worker writes after the dead letter, without waiting for NATS.
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if res := b.get("/ui/log/" + key[1]); res.status != http.StatusOK || !strings.Contains(res.body, `Sink <a href="/ui/sinks/old-crm">old-crm</a>`) {
			return fmt.Errorf("the request's page (%d) does not list its delivery to old-crm yet:\n%s", res.status, res.body)
		}
		return nil
	})

	cfg := p.srv.cfg
	p.stop()
	cfg.Sinks = nil // removed: its dead letters stay
	p = startRelay(t, cfg, roleAll)
	b.base = p.adminURL
	b.signIn(adminSecret).redirect(t, "/ui/")
	detail := b.get("/ui/log/"+key[1]).want(t, http.StatusOK, "dead_lettered", "Sink old-crm <span class=\"muted\">(no longer configured").body
	for _, m := range regexp.MustCompile(`href="(/ui/sinks/[^"]+)"`).FindAllStringSubmatch(detail, -1) {
		if res := b.get(m[1]); res.status != http.StatusOK {
			t.Errorf("the request's page links to %s, which answers %d", m[1], res.status)
		}
	}
}

// jobSection waits for the job whose page is at job to end, and returns
// the page's section about it.
func jobSection(t *testing.T, b *browser, job string) string {
	t.Helper()
	var body string
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if body = b.get(job).body; !strings.Contains(body, `data-state="done"`) {
			return errors.New("the job has not ended")
		}
		return nil
	})
	section := body[strings.Index(body, `<section id="job"`):]
	return section[:strings.Index(section, "</section>")]
}
