// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"net/http"
	"strings"
	"testing"

	. "github.com/scimrelay/scimrelay/scim"
)

// TestPublicURLOrTheRequestsHost holds relay.yaml's public_url comment,
// "empty = taken from each request's Host": without a base URL, a
// resource's Location and meta.location follow the Host the client used
// (and X-Forwarded-Proto from the proxy in front); with one, a forged Host
// or X-Forwarded-Proto changes nothing.
func TestPublicURLOrTheRequestsHost(t *testing.T) {
	create := func(ts *testServer, host, proto string) string {
		t.Helper()
		req, err := http.NewRequest("POST", ts.srv.URL+"/scim/v2/acme/Users", strings.NewReader(`{"schemas":["`+UserSchema+`"],"userName":"`+host+proto+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+tokenAcme)
		req.Header.Set("Content-Type", ContentType)
		if proto != "" {
			req.Header.Set("X-Forwarded-Proto", proto)
		}
		r := ts.send(req).want(t, http.StatusCreated)
		if loc := r.header.Get("Location"); loc != r.str("meta.location") || !strings.HasSuffix(loc, "/Users/"+r.str("id")) {
			t.Fatalf("Location %q, meta.location %q", loc, r.str("meta.location"))
		}
		return strings.TrimSuffix(r.header.Get("Location"), "/Users/"+r.str("id"))
	}
	fromHost := newTestServer(t, Options{})
	for _, c := range []struct{ host, proto, want string }{
		{"relay.example.com", "", "http://relay.example.com/scim/v2/acme"},
		{"relay.example.com:8443", "https", "https://relay.example.com:8443/scim/v2/acme"},
		{"10.0.0.7:8080", "gopher", "http://10.0.0.7:8080/scim/v2/acme"}, // not a scheme it takes
	} {
		if got := create(fromHost, c.host, c.proto); got != c.want {
			t.Errorf("no public_url, Host %s, X-Forwarded-Proto %q: base %s, want %s", c.host, c.proto, got, c.want)
		}
	}
	fixed := newTestServer(t, Options{BaseURL: "https://relay.example.com/"})
	for _, host := range []string{"evil.example", "relay.example.com.evil.example:443"} {
		if got := create(fixed, host, "http"); got != "https://relay.example.com/scim/v2/acme" {
			t.Errorf("public_url set, forged Host %s: base %s", host, got)
		}
	}
}
