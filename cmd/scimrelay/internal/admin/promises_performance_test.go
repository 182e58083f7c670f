// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestProfilesTheREADMENames: the Performance section's profiles come
// from "GET /debug/pprof/profile on the admin listener" and its scheduler
// trace from "/debug/pprof/trace", both with the admin token only (as
// Operating says of /debug/pprof/): a CPU profile (gzipped protobuf) and
// an execution trace, and 401 without the token.
func TestProfilesTheREADMENames(t *testing.T) {
	srv := httptest.NewServer(NewHandler(Options{Token: adminToken}))
	defer srv.Close()
	f := &fixture{t: t, url: srv.URL}
	for _, p := range []struct {
		path  string
		magic []byte
	}{
		{"/debug/pprof/profile?seconds=1", []byte{0x1f, 0x8b}},
		{"/debug/pprof/trace?seconds=0.05", []byte("go 1.")},
	} {
		f.requestAs("", "GET", p.path, "").wantError(t, http.StatusUnauthorized, "admin token")
		f.requestAs("wrong-token-0123456789abcdef", "GET", p.path, "").wantError(t, http.StatusUnauthorized, "admin token")
		if a := f.request("GET", p.path, ""); a.status != http.StatusOK || !bytes.HasPrefix(a.body, p.magic) {
			t.Errorf("GET %s: %d, %d bytes starting %q; want %q…", p.path, a.status, len(a.body), a.body[:min(len(a.body), 16)], p.magic)
		}
	}
}
