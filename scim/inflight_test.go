// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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

// TestAnswersWaitingForTheirClientAreBounded: a GET has no body, and an
// answer written and waiting for a client that reads slowly counts with
// its tenant's bodies until it is sent: past the bound the next GET of a
// large answer is 429 with Retry-After before anything is sent, and the
// bytes are given back once the answer is sent. A user in 30,000 groups
// answers 4 MiB, more than the kernel takes for a connection (attack
// rounds: 200 unread list GETs held 924 MiB).
func TestAnswersWaitingForTheirClientAreBounded(t *testing.T) {
	mem := scimtest.NewMemory(map[string]string{"acme": tokenAcme})
	h := NewHandler(mem, mem, Options{MaxBodiesInFlight: 1 << 20})
	sent := make(chan struct{})
	// A client reading slowly: the flagged request's answer is written
	// to the connection only once sent is closed.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Slow-Reader") != "" {
			w = slowReader{w, sent}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	var once sync.Once
	send := func() { once.Do(func() { close(sent) }) }
	t.Cleanup(send) // before srv.Close, which waits for the handler
	do := func(method, path, body string, slow bool) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/scim/v2/acme"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokenAcme)
		req.Header.Set("Content-Type", "application/scim+json")
		if slow {
			req.Header.Set("X-Test-Slow-Reader", "1")
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Error(err)
			return nil, nil
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, b
	}
	res, b := do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"big","title":"`+strings.Repeat("t", 900<<10)+`"}`, false)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %.200s", res.StatusCode, b)
	}
	var created struct{ ID string }
	if err := json.Unmarshal(b, &created); err != nil {
		t.Fatal(err)
	}
	id := created.ID

	answered := make(chan int, 1)
	go func() {
		res, b := do("GET", "/Users/"+id, "", true)
		if res != nil && len(b) < 900<<10 {
			t.Errorf("the slow reader's answer: %d bytes", len(b))
		}
		if res != nil {
			answered <- res.StatusCode
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); h.BodiesHeld("acme") < 900<<10; {
		if time.Now().After(deadline) {
			t.Fatalf("an answer waiting for its client holds %d bytes", h.BodiesHeld("acme"))
		}
		time.Sleep(5 * time.Millisecond) // polling, with a deadline
	}
	res, b = do("GET", "/Users/"+id, "", false)
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Fatalf("a GET while another answer waits at the bound: %d %s %.200s", res.StatusCode, res.Header, b)
	}
	send()
	if status := <-answered; status != http.StatusOK {
		t.Fatalf("the slow reader's GET: %d", status)
	}
	for deadline := time.Now().Add(20 * time.Second); h.BodiesHeld("acme") != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("answers sent, still held: %d bytes", h.BodiesHeld("acme"))
		}
		time.Sleep(5 * time.Millisecond) // polling, with a deadline
	}
	if res, b := do("GET", "/Users/"+id, "", false); res.StatusCode != http.StatusOK {
		t.Fatalf("a GET once the answer was sent: %d %.200s", res.StatusCode, b)
	}
}

// slowReader is a connection whose client reads nothing until sent is
// closed.
type slowReader struct {
	http.ResponseWriter
	sent <-chan struct{}
}

func (s slowReader) Write(p []byte) (int, error) {
	<-s.sent
	return s.ResponseWriter.Write(p)
}
