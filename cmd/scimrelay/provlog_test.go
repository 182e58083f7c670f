// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestProvisioningLogNamesTheResource holds README's provisioning log
// promises: every SCIM request is recorded with "userName or displayName,
// a user's email", and `scimrelay log --user` finds a user's requests by
// any of them. Before, a refused PATCH and a DELETE had neither (log
// --user found only ann's create), nor had a user whose one email is
// neither primary nor typed work; and a client that hung up while sending
// its body was recorded as a 400 the relay refused, not 499 ("client
// closed request", as README says of a client that hangs up).
func TestProvisioningLogNamesTheResource(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.ReadTimeout = config.Duration(500 * time.Millisecond)
	p := startRelay(t, cfg, roleAll)
	ann := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann@acme.com","emails":[{"value":"ann@acme.com","primary":true}]}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob@acme.com"}`).want(t, 201)
	// Entra renames ann to a userName taken: refused, and the operator
	// looks for why with --user ann.
	p.scim("acme", acmeToken, "PATCH", "/Users/"+ann, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"userName","value":"bob@acme.com"}]}`).want(t, 409)
	p.scim("acme", acmeToken, "DELETE", "/Users/"+ann, "").want(t, 204)
	group := p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Sales"}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "DELETE", "/Groups/"+group, "").want(t, 204)
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u1001","emails":[{"value":"cy@acme.com"}]}`).want(t, 201)
	eve := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"eve@acme.com"}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "DELETE", "/Users/"+eve, "", "If-Match", `W/"nope"`).want(t, 412)
	logEntries(t, p, relay.LogQuery{Tenant: "acme"}, 9)
	for _, c := range []struct{ user, want string }{
		{"ann@acme.com", "[create 201 patch 409 delete 204]"},
		{"Sales", "[create 201 delete 204]"},
		{"cy@acme.com", "[create 201]"},
		{"eve@acme.com", "[create 201 delete 412]"},
	} {
		var ops []string
		for _, e := range logEntries(t, p, relay.LogQuery{Tenant: "acme", User: c.user}, -1) {
			ops = append(ops, fmt.Sprint(e.Operation, " ", e.Status))
		}
		if fmt.Sprint(ops) != c.want {
			t.Errorf("log --user %s found %v, want %s", c.user, ops, c.want)
		}
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.scimURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"dee@acme.com"}`
	fmt.Fprintf(conn, "POST /scim/v2/acme/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/scim+json\r\nContent-Length: %d\r\n\r\n%s",
		acmeToken, len(body)+100, body)
	conn.Close() // hangs up with 100 bytes of its body unsent
	all := logEntries(t, p, relay.LogQuery{Tenant: "acme"}, 10)
	if e := all[len(all)-1]; e.Status != 499 {
		t.Errorf("a client that hung up while sending its body recorded as %d %s %q, want 499", e.Status, e.ScimType, e.Detail)
	}

	// A client still there whose body does not come within read_timeout
	// did not hang up: it is answered (400, saying so), and so recorded.
	conn, err = net.Dial("tcp", strings.TrimPrefix(p.scimURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /scim/v2/acme/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/scim+json\r\nContent-Length: %d\r\n\r\n%s",
		acmeToken, len(body)+100, body)
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a client still connected: %v", err)
	}
	res.Body.Close()
	all = logEntries(t, p, relay.LogQuery{Tenant: "acme"}, 11)
	if e := all[len(all)-1]; res.StatusCode != http.StatusBadRequest || e.Status != http.StatusBadRequest || !strings.Contains(e.Detail, "read timeout") {
		t.Errorf("a body slower than read_timeout: answered %d, recorded %d %q; want 400 saying so", res.StatusCode, e.Status, e.Detail)
	}
}

// logEntries returns the provisioning log's entries q selects, once there
// are n (any number when n is negative).
func logEntries(t *testing.T, p *relayProc, q relay.LogQuery, n int) []relay.LogEntry {
	t.Helper()
	var got []relay.LogEntry
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var err error
		if got, err = p.srv.reqLog.Query(context.Background(), q); err != nil {
			return err
		}
		if n >= 0 && len(got) != n {
			return fmt.Errorf("%d log entries, want %d", len(got), n)
		}
		return nil
	})
	return got
}

// TestBulkWhoseClientHangsUpIsNoError: README, Logs: "what is expected
// is not an error: … a client that hung up before its answer (Debug;
// recorded with status 499)". A Bulk whose client hangs up while it runs
// is such a client: it stops there, the operations done before stay, and
// nothing is logged at Error. Before, each operation left was answered
// 500 and logged at Error (990 lines for one Bulk of 1,000), writing the
// answer failed at Error too, and the request was recorded 200 with
// "internal error" (from a helper's hunt of concurrent writes).
func TestBulkWhoseClientHangsUpIsNoError(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	p, out := startRelayLogging(t, cfg)
	var ops []string
	for i := range 1000 {
		ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Users","bulkId":"b%d","data":{%s,"userName":"gone%04d"}}`, i, userSchema, i))
	}
	body := fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[%s]}`, strings.Join(ops, ","))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", p.scimURL+"/scim/v2/acme/Bulk", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	req.Header.Set("Content-Type", "application/scim+json")
	sent := make(chan error, 1)
	go func() { _, err := sendRequest(req); sent <- err }()
	// The client hangs up once the Bulk is under way.
	eventstest.CheckFor(t, 20*time.Second, time.Millisecond, func() error {
		r := p.scim("acme", acmeToken, "GET", "/Users?"+q(`userName eq "gone0010"`), "")
		if n, _ := r.body["totalResults"].(float64); n != 1 {
			return fmt.Errorf("the Bulk has not made gone0010 yet")
		}
		return nil
	})
	cancel()
	<-sent
	// The Bulk ends: its entry is in the provisioning log.
	entry := bulkLogEntry(t, p)
	if made, _ := p.scim("acme", acmeToken, "GET", "/Users?count=0", "").body["totalResults"].(float64); made < 11 || made == 1000 {
		t.Errorf("%v users made by the Bulk whose client hung up after its 11th; want those before the hang-up, not all 1,000", made)
	}
	if st, _ := entry["status"].(float64); st != 499 {
		t.Errorf("the Bulk whose client hung up is recorded %v (%v), want 499 (README, Provisioning log)", entry["status"], entry["detail"])
	}
	var errs []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			errs = append(errs, line)
		}
	}
	if len(errs) > 0 {
		t.Errorf("a Bulk whose client hung up logged %d lines at ERROR, the first: %s", len(errs), errs[0])
	}
}

// TestBulkOutlivingTheWriteTimeoutIsNoClientGone: a Bulk that runs past
// limits.write_timeout has its answer cut by the relay (the client, still
// waiting, gets no answer while every operation was performed). That is
// not "a client that hung up" (README, Provisioning log: 499; Logs: Debug):
// the operator must see it, at Error, as a request whose answer was not
// delivered. net/http cancels the request's context after any failed
// write, this one too: a first version of the hang-up's handling read
// that as the client gone (from a review).
func TestBulkOutlivingTheWriteTimeoutIsNoClientGone(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.WriteTimeout = config.Duration(100 * time.Millisecond)
	p, out := startRelayLogging(t, cfg)
	var ops []string
	for i := range 300 {
		ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Users","bulkId":"b%d","data":{%s,"userName":"slow%04d"}}`, i, userSchema, i))
	}
	body := fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[%s]}`, strings.Join(ops, ","))
	req, _ := http.NewRequest("POST", p.scimURL+"/scim/v2/acme/Bulk", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	req.Header.Set("Content-Type", "application/scim+json")
	start := time.Now()
	r, err := sendRequest(req) // the client waits for its answer: it never hangs up
	took := time.Since(start)
	if err == nil && r.status == 200 {
		t.Skipf("the Bulk was answered within the write timeout (%v): precondition not met", took)
	}
	t.Logf("client: %v (after %v; it waited)", err, took)
	entry := bulkLogEntry(t, p)
	t.Logf("recorded %v %v %v", entry["status"], entry["scim_type"], entry["detail"])
	made, _ := p.scim("acme", acmeToken, "GET", "/Users?count=0", "").body["totalResults"].(float64)
	if st, _ := entry["status"].(float64); st == 499 {
		t.Errorf("a Bulk whose answer the write timeout cut (%v users made, the client waiting) is recorded 499 %q: the client did not hang up", made, entry["detail"])
	}
	if !strings.Contains(out.String(), `"level":"ERROR"`) {
		t.Errorf("a Bulk whose answer the write timeout cut logged nothing at ERROR: the operator cannot tell the relay's limit from a client gone")
	}
}

// bulkLogEntry waits for acme's Bulk request in the provisioning log and
// returns its entry.
func bulkLogEntry(t *testing.T, p *relayProc) map[string]any {
	t.Helper()
	var entry map[string]any
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		var list []map[string]any
		if err := json.Unmarshal(adminRequest(t, p, "GET", "/admin/v1/log?tenant=acme&since=1h", adminSecret, "").want(t, 200).raw, &list); err != nil {
			return err
		}
		for _, e := range list {
			if e["path"] == "/scim/v2/acme/Bulk" {
				entry = e
				return nil
			}
		}
		return fmt.Errorf("the Bulk is not in the provisioning log yet")
	})
	return entry
}
