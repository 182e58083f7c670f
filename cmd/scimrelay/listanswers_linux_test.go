// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
)

// TestListAnswersHeldUnreadAreBoundedPerTenant: a list GET has no body,
// and a client that reads its answers slowly kept each page's answer (up
// to 4 MiB of resources as stored) in the relay until write_timeout: 200
// such GETs of one tenant, one second of the default rate, held 924 MiB
// (an attack round). An answer waiting to be sent counts with the
// tenant's request bodies (16 MiB at once by default): past it, a list
// GET is 429 with Retry-After before anything is sent.
func TestListAnswersHeldUnreadAreBoundedPerTenant(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.WriteTimeout = config.Duration(10 * time.Minute)
	p := startRelay(t, cfg, roleAll)
	for i := range 17 { // a page of about 4.2 MiB
		p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{%s,"userName":"u%02d","title":"%s"}`, userSchema, i, strings.Repeat("t", 250<<10))).want(t, 201)
	}
	statuses := getUnread(t, p, "/Users?count=100", 8)
	// Four answers of 4.2 MiB pass 16 MiB.
	if statuses["HTTP/1.1 200"] > 4 || statuses["HTTP/1.1 429"] < 4 {
		t.Errorf("8 list GETs of 4.2 MiB each, their answers unread: %v; want at most 4 answered, the rest 429", statuses)
	}
}

// TestListAnswersOfGroupsHeldUnreadAreBoundedPerTenant: a page of groups
// with members is sent as it is written (members are read in chunks and
// sent as they come), so the answer was never whole and was never counted:
// 20 such GETs, answers unread, held 100 MiB (a review of the fix above).
// The page itself counts, from its read.
func TestListAnswersOfGroupsHeldUnreadAreBoundedPerTenant(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.WriteTimeout = config.Duration(10 * time.Minute)
	p := startRelay(t, cfg, roleAll)
	member := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{%s,"userName":"m"}`, userSchema)).want(t, 201).body["id"].(string)
	// Groups keep no attribute but their names: 1,000 of about 4 KiB
	// (displayName and externalId at their 2,048-byte bound), each with
	// one member, make a page of about 4 MiB.
	for b := range 5 {
		var ops []string
		for i := range 200 {
			n := fmt.Sprintf("%d-%03d-", b, i)
			ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Groups","bulkId":"g%d","data":{%s,"displayName":"%s","externalId":"%s","members":[{"value":"%s"}]}}`,
				i, groupSchema, n+strings.Repeat("d", 2000), n+strings.Repeat("x", 2000), member))
		}
		r := p.scim("acme", acmeToken, "POST", "/Bulk", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[`+strings.Join(ops, ",")+`]}`)
		if r.status != 200 || strings.Count(string(r.raw), `"status":"201"`) != 200 {
			t.Fatalf("bulk %d: %d %.300s", b, r.status, r.raw)
		}
	}
	statuses := getUnread(t, p, "/Groups?count=1000", 8)
	if statuses["HTTP/1.1 200"] > 4 || statuses["HTTP/1.1 429"] < 4 {
		t.Errorf("8 list GETs of groups of 4 MiB each, their answers unread: %v; want at most 4 answered, the rest 429", statuses)
	}
}

// getUnread sends n GETs of path, each on its own connection that reads
// the status line and nothing more, and returns how many had each status
// line. A 429 must say Retry-After.
func getUnread(t *testing.T, p *relayProc, path string, n int) map[string]int {
	t.Helper()
	host := strings.TrimPrefix(p.scimURL, "http://")
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	statuses := map[string]int{}
	for range n {
		// A small receive buffer: the answer waits in the relay, not in
		// the kernel, as it does for a client across a network.
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		c, err := d.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /scim/v2/acme%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, acmeToken)
		head := make([]byte, 512)
		got, err := io.ReadAtLeast(c, head, len("HTTP/1.1 200"))
		if err != nil {
			t.Fatal(err)
		}
		status := string(head[:len("HTTP/1.1 200")])
		statuses[status]++
		if status == "HTTP/1.1 429" && !strings.Contains(strings.ToLower(string(head[:got])), "retry-after") {
			t.Errorf("a 429 without Retry-After: %q", head[:got])
		}
	}
	return statuses
}
