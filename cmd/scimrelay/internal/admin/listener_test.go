// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestRefusedHostNamesAreBounded: KnownHostsOnly says each refused name
// once, and after maxSaidHosts names says once that it stops: a stream of
// made-up names cannot flood the log. Every refusal is still a 421.
func TestRefusedHostNamesAreBounded(t *testing.T) {
	var logBuf eventstest.Log
	h := KnownHostsOnly(http.NotFoundHandler(), []string{"console.example.com"}, slog.New(slog.NewTextHandler(&logBuf, nil)))
	send := func(host string) int {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for i := range 3 * maxSaidHosts {
		for _, form := range []string{"name-%d.example.com", "NAME-%d.example.com.:8081"} {
			if code := send(fmt.Sprintf(form, i)); code != http.StatusMisdirectedRequest {
				t.Fatalf("Host %s: %d, want 421", fmt.Sprintf(form, i), code)
			}
		}
	}
	if code := send("console.example.com"); code != http.StatusNotFound {
		t.Fatalf("a name in admin.hosts: %d, want it passed on", code)
	}
	log := logBuf.String()
	for name, want := range map[string]int{
		"its host name is not in admin.hosts":                    maxSaidHosts,
		"host=name-0.example.com ":                               1,
		fmt.Sprintf("host=name-%d.example.com ", maxSaidHosts-1): 1,
		fmt.Sprintf("host=name-%d.example.com ", maxSaidHosts):   0,
		"more host names not in admin.hosts refused":             1,
		"console.example.com":                                    0,
	} {
		if n := strings.Count(log, name); n != want {
			t.Errorf("%q in %d lines of the log, want %d:\n%s", name, n, want, log)
		}
	}
}
