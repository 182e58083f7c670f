// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	. "github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// TestBodiesInFlightAreBoundedPerTenant: the bytes of request bodies one
// tenant's requests have read and not yet answered are bounded
// (Options.MaxBodiesInFlight): a request reading past the bound is
// answered 429 with Retry-After, another tenant's is not, and the bytes
// are given back once the request holding them is answered. One tenant's
// eight 2.4 MB POSTs at once took 527 MiB of the relay's heap (an attack
// round).
func TestBodiesInFlightAreBoundedPerTenant(t *testing.T) {
	mem := scimtest.NewMemory(map[string]string{"acme": tokenAcme, "globex": tokenGlobex})
	h := NewHandler(mem, mem, Options{MaxBodiesInFlight: 1 << 20})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	post := func(tenant, token string, body io.Reader) (*http.Response, error) {
		req, err := http.NewRequest("POST", srv.URL+"/scim/v2/"+tenant+"/Users", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/scim+json")
		return srv.Client().Do(req)
	}
	user := func(name string, title int) string {
		return `{"schemas":["` + UserSchema + `"],"userName":"` + name + `","title":"` + strings.Repeat("t", title) + `"}`
	}
	waitHeld := func(tenant string, want func(int64) bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !want(h.BodiesHeld(tenant)); {
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d bytes of bodies", tenant, h.BodiesHeld(tenant))
			}
			time.Sleep(5 * time.Millisecond) // polling, with a deadline
		}
	}

	// acme's first POST sends 700 KB of its body and waits.
	pr, pw := io.Pipe()
	slow := user("slow", 900<<10)
	answered := make(chan *http.Response, 1)
	go func() {
		res, err := post("acme", tokenAcme, pr)
		if err != nil {
			t.Error(err)
		}
		answered <- res
	}()
	if _, err := io.WriteString(pw, slow[:700<<10]); err != nil {
		t.Fatal(err)
	}
	waitHeld("acme", func(n int64) bool { return n >= 700<<10 })

	res, err := post("acme", tokenAcme, strings.NewReader(user("second", 400<<10)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "request bodies") {
		t.Fatalf("acme's second POST past the bound: %d %s %s", res.StatusCode, res.Header, body)
	}
	// The refused request gives back what it read once it is answered,
	// which its client may see first.
	waitHeld("acme", func(n int64) bool { return n == 700<<10 })
	res, err = post("globex", tokenGlobex, strings.NewReader(user("other", 400<<10)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("globex's POST while acme's bodies are at the bound: %d, want 201", res.StatusCode)
	}

	if _, err := io.WriteString(pw, slow[700<<10:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if res := <-answered; res == nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("acme's first POST: %v, want 201", res)
	}
	waitHeld("acme", func(n int64) bool { return n == 0 })
	res, err = post("acme", tokenAcme, strings.NewReader(user("third", 400<<10)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("acme's POST once its bodies were answered: %d, want 201", res.StatusCode)
	}
}
