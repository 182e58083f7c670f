// SPDX-License-Identifier: Apache-2.0

package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// observed collects what Observe gets: it runs on the server's goroutine
// after the response is written, so the test reads it under the lock and
// waits for the entry it expects.
type observed struct {
	mu    sync.Mutex
	infos []scim.RequestInfo
}

func (o *observed) add(_ context.Context, info *scim.RequestInfo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.infos = append(o.infos, *info)
}

func (o *observed) all() []scim.RequestInfo {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.infos)
}

func newEndpoint(t *testing.T) (*httptest.Server, *relay.Store, *observed) {
	t.Helper()
	s, err := relay.Open(filepath.Join(t.TempDir(), "x.db"), relay.Options{Tenants: []relay.TenantOptions{{Name: "acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	seen := &observed{}
	h := NewHandler(Options{Issuer: s, Observe: seen.add})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, s, seen
}

func post(t *testing.T, u, auth, form string) (int, map[string]string) {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(res.Body).Decode(&body)
	out := map[string]string{}
	for k, v := range body {
		b, _ := json.Marshal(v)
		out[k] = strings.Trim(string(b), `"`)
	}
	return res.StatusCode, out
}

// TestTokenEndpointDetails: RFC 6749 §2.3.1 (Basic credentials are
// form-encoded first), §5.2 (error_description within printable ASCII
// without " and \), the path, and what the provisioning log gets.
func TestTokenEndpointDetails(t *testing.T) {
	srv, s, seen := newEndpoint(t)
	secret, cl, err := s.Clients().Create(context.Background(), "acme", "x", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	basic := func(id, secret string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
	}
	// The id form-encoded ("_" as %5F) is the same id.
	status, body := post(t, srv.URL+"/oauth2/acme/token", basic(strings.ReplaceAll(cl.ID, "_", "%5F"), url.QueryEscape(secret)), "grant_type=client_credentials")
	if status != 200 || body["token_type"] != "Bearer" {
		t.Fatalf("form-encoded Basic credentials: %d %v", status, body)
	}
	// A trailing slash is the same endpoint.
	if status, _ := post(t, srv.URL+"/oauth2/acme/token/", basic(cl.ID, secret), "grant_type=client_credentials"); status != 200 {
		t.Fatalf("trailing slash: %d", status)
	}
	// Descriptions stay within the allowed characters even when they echo input.
	status, body = post(t, srv.URL+"/oauth2/acme/token", basic(cl.ID, secret), `grant_type=`+url.QueryEscape("pass\"wörd\\"))
	if status != 400 || body["error"] != "unsupported_grant_type" {
		t.Fatalf("odd grant type: %d %v", status, body)
	}
	for _, r := range body["error_description"] {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			t.Fatalf("error_description %q has %q", body["error_description"], r)
		}
	}
	for _, p := range []string{"/oauth2/acme", "/oauth2/acme/tokens", "/oauth2/ACME/token", "/oauth2//token", "/oauth2/acme/token/x"} {
		if status, body := post(t, srv.URL+p, "", ""); status != 404 || body["error"] != "invalid_request" {
			t.Errorf("%s: %d %v", p, status, body)
		}
	}
	// A wrong secret is logged with the client id and the reason, never the secret.
	post(t, srv.URL+"/oauth2/acme/token", "", "grant_type=client_credentials&client_id="+cl.ID+"&client_secret=guess-"+secret[:10])
	// Observe runs after the response is written: wait for the request's
	// entry (the only 401 here).
	var last scim.RequestInfo
	eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		infos := seen.all()
		for _, info := range infos {
			if info.Status == http.StatusUnauthorized {
				last = info
				return nil
			}
		}
		return fmt.Errorf("no 401 observed yet; observed %+v", infos)
	})
	if last.Operation != "token" || last.Tenant != "acme" || last.Name != cl.ID || last.Status != 401 ||
		last.Detail != "invalid_client: invalid client credentials" {
		t.Fatalf("log info %+v", last)
	}
	// The secret sent in the id's place (the two swapped) is not logged
	// as the client id.
	before := len(seen.all())
	post(t, srv.URL+"/oauth2/acme/token", "", "grant_type=client_credentials&client_id="+secret+"&client_secret="+cl.ID)
	eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if infos := seen.all(); len(infos) > before {
			last = infos[before]
			return nil
		}
		return errors.New("the swapped request is not observed yet")
	})
	if last.Name != "(not a client id)" || strings.Contains(fmt.Sprintf("%+v", last), secret) {
		t.Fatalf("log info of a request with the secret as its id: %+v", last)
	}
}

// TestEmptyParametersAreOmitted: RFC 6749 §3.2, "Parameters sent without
// a value MUST be treated as if they were omitted from the request", so an
// empty one repeated, or beside a value, is not a parameter given twice; a
// value given twice still is.
func TestEmptyParametersAreOmitted(t *testing.T) {
	srv, s, _ := newEndpoint(t)
	secret, cl, err := s.Clients().Create(context.Background(), "acme", "x", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	creds := "&client_id=" + cl.ID + "&client_secret=" + url.QueryEscape(secret)
	for form, want := range map[string]int{
		"grant_type=client_credentials&scope=&scope=" + creds:                            200,
		"grant_type=&grant_type=client_credentials" + creds:                              200,
		"grant_type=client_credentials&client_id=" + creds:                               200,
		"grant_type=client_credentials&scope=a&scope=" + creds:                           200,
		"grant_type=client_credentials&scope=a&scope=a" + creds:                          400,
		"grant_type=client_credentials&grant_type=client_credentials" + creds:            400,
		"grant_type=&grant_type=" + creds:                                                400,
		"grant_type=client_credentials&client_secret=&client_secret=&client_id=" + cl.ID: 401,
	} {
		status, body := post(t, srv.URL+"/oauth2/acme/token", "", form)
		if status != want {
			t.Errorf("%s: %d %v, want %d", strings.ReplaceAll(form, secret, "SECRET"), status, body, want)
		}
		if status == 400 && !strings.Contains(body["error_description"], "given 2 times") && !strings.Contains(body["error_description"], "grant_type is missing") {
			t.Errorf("%s: %v", strings.ReplaceAll(form, secret, "SECRET"), body)
		}
	}
}

// TestRequestsReadOtherThanSentAreRefused: a request is refused, 400
// invalid_request, when reading it one way could be another: two
// Authorization headers whatever the first says (one left empty before a
// Basic one hid the Basic credentials, and a request that also sent
// client_secret in the body, two methods, RFC 6749 §2.3, got its token);
// a body in a content coding (read as a plain form, a gzipped one was
// refused for its credentials), or with two Content-Type headers (the
// second's was not seen). A form in ISO-8859-1 is taken: what the
// endpoint reads is ASCII.
func TestRequestsReadOtherThanSentAreRefused(t *testing.T) {
	srv, s, _ := newEndpoint(t)
	secret, cl, err := s.Clients().Create(context.Background(), "acme", "x", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	form := "grant_type=client_credentials&client_id=" + cl.ID + "&client_secret=" + url.QueryEscape(secret)
	for name, c := range map[string]struct {
		h    http.Header
		want int
	}{
		"two Authorization headers, the first empty":      {http.Header{"Authorization": {"", "Basic " + base64.StdEncoding.EncodeToString([]byte(cl.ID+":"+secret))}}, 400},
		"Content-Encoding gzip":                           {http.Header{"Content-Encoding": {"gzip"}}, 400},
		"two Content-Type headers, the second ISO-8859-1": {http.Header{"Content-Type": {"application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=ISO-8859-1"}}, 400},
		"charset ISO-8859-1 (Apache HttpClient's)":        {http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=ISO-8859-1"}}, 200},
	} {
		h := c.h
		req, _ := http.NewRequest("POST", srv.URL+"/oauth2/acme/token", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header[k] = v
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		if res.StatusCode != c.want || c.want == 400 && body["error"] != "invalid_request" {
			t.Errorf("%s: %d %v, want %d", name, res.StatusCode, body, c.want)
		}
	}
}
