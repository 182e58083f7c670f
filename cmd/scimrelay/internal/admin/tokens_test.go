// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestCredentialNames: a token's or an OAuth client's name, on create and
// rotate, has 1 to 100 printable characters: control characters (ESC,
// NUL, a newline), format characters (a bidi override, a zero-width
// space) and longer names are refused with 400 naming name, and nothing
// is issued.
func TestCredentialNames(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/admin/v1/tokens", "/admin/v1/tokens/rotate", "/admin/v1/clients", "/admin/v1/clients/rotate"} {
		for _, name := range []string{"a\nb", "nul\x00", "\x1b[31mred", "tab\there", "del\x7f", "bidi\u202etxt.exe", "zero\u200bwidth", "line\u2028sep", strings.Repeat("n", 101), strings.Repeat("é", 101), strings.Repeat("A", 900_000)} {
			body, _ := json.Marshal(TokenRequest{Tenant: "acme", Name: name})
			f.request("POST", path, string(body)).wantError(t, http.StatusBadRequest, "name: ")
		}
	}
	for _, kind := range []Credentials{f.store.Tokens(), f.store.Clients()} {
		if list, _ := kind.List(context.Background(), ""); len(list) != 0 {
			t.Fatalf("refused names issued credentials: %+v", list)
		}
	}
	for i, name := range []string{"entra", "Okta – prod (EU)", "名前", strings.Repeat("é", 100), "a b"} {
		path := []string{"/admin/v1/tokens", "/admin/v1/clients"}[i%2]
		var res TokenResponse
		f.request("POST", path, fmt.Sprintf(`{"tenant":"acme","name":%q}`, name)).want(t, http.StatusCreated, &res)
		if res.Token.Name != name {
			t.Fatalf("name %q stored as %q", name, res.Token.Name)
		}
	}
}

// TestRepeatedNamesAreRefused: a body that gives a name twice in one
// object, in any case and at any depth, is refused with 400 naming it,
// and nothing is issued (encoding/json would take the last: a token for
// the second tenant named).
func TestRepeatedNamesAreRefused(t *testing.T) {
	f := newFixture(t)
	for body, name := range map[string]string{
		`{"tenant":"nope","tenant":"acme","name":"dupkey"}`:  `"tenant"`,
		`{"tenant":"acme","name":"a","Name":"b"}`:            `"Name"`,
		`{"tenant":"acme","name":"a","NAME":"b"}`:            `"NAME"`,
		`{"tenant":"acme","expires":"1d","expires":"never"}`: `"expires"`,
	} {
		for _, path := range []string{"/admin/v1/tokens", "/admin/v1/clients/rotate"} {
			f.request("POST", path, body).wantError(t, http.StatusBadRequest, "the name "+name+" is given twice")
		}
	}
	f.request("POST", "/admin/v1/sinks/crm/replay", `{"since":"1h","since":"1000h"}`).wantError(t, http.StatusBadRequest, `the name "since" is given twice`)
	for _, kind := range []Credentials{f.store.Tokens(), f.store.Clients()} {
		if list, _ := kind.List(context.Background(), ""); len(list) != 0 {
			t.Fatalf("bodies with a name given twice issued credentials: %+v", list)
		}
	}
	// A value that reads as a name is not one.
	f.request("POST", "/admin/v1/tokens", `{"name":"tenant","tenant":"acme"}`).want(t, http.StatusCreated, nil)

	for data, want := range map[string]string{
		`{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`:  "",
		`{"a":"a","b":["a","a"]}`:                    "",
		`{"a":1,"b":{"c":2,"c":3}}`:                  "c",
		`[{"x":1},{"y":{"z":[{"k":1,"\u212a":2}]}}]`: "\u212a", // the Kelvin sign folds to k
		`{"a":1}{"a":2}`:                             "",
		`{"a":1,"a"`:                                 "a",
		`{"a":`:                                      "",
	} {
		if got := repeatedName([]byte(data)); got != want {
			t.Errorf("repeatedName(%s) = %q, want %q", data, got, want)
		}
	}
}

// TestBodyErrorsSayWhatIsWrong: a body the admin API refuses is answered
// in the API's words, naming the field at fault and what the endpoint
// takes, never with encoding/json's Go types or a bare EOF.
func TestBodyErrorsSayWhatIsWrong(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ path, body, want string }{
		{"/admin/v1/tokens", ``, "request body: the body is empty: send a JSON object (fields: tenant, name, expires, overlap)"},
		{"/admin/v1/tokens", " \n", "request body: the body is empty"},
		{"/admin/v1/tokens", `[]`, "request body: the body must be a JSON object (fields: tenant, name, expires, overlap)"},
		{"/admin/v1/tokens", `[{"tenant":"acme"}]`, "the body must be a JSON object"},
		{"/admin/v1/tokens", `"acme"`, "the body must be a JSON object"},
		{"/admin/v1/tokens", `null`, "the body must be a JSON object"},
		{"/admin/v1/tokens", `{"tenant":1}`, "request body: tenant: want a string, got a number"},
		{"/admin/v1/tokens", `{"tenant":["acme"]}`, "request body: tenant: want a string, got an array"},
		{"/admin/v1/tokens", `{"tenant":"acme"`, "request body: not valid JSON: it ends before its value does"},
		{"/admin/v1/tokens", `{tenant:"acme"}`, "request body: not valid JSON near byte 2: invalid character 't'"},
		{"/admin/v1/tokens", `{"tenant":"acme","tenants":["x"]}`, `request body: unknown field "tenants" (fields: tenant, name, expires, overlap)`},
		{"/admin/v1/sinks/crm/dlq/redrive", `{"all":"yes"}`, "request body: all: want true or false, got a string"},
		{"/admin/v1/subscribers", `{"name":"billing","subjects":["scimrelay.>"]}`, "request body: subjects: want a string, got an array"},
		{"/admin/v1/subscribers", `{"name":"billing","replace":1}`, "request body: replace: want true or false, got a number"},
	} {
		e := f.request("POST", c.path, c.body).wantError(t, http.StatusBadRequest, c.want)
		for _, internal := range []string{"Go value", "Go struct", "json:", "EOF", "admin.", "http:"} {
			if strings.Contains(e.Error, internal) {
				t.Errorf("POST %s %.40q: %q says %q", c.path, c.body, e.Error, internal)
			}
		}
	}
	// Too large is 413, as on the SCIM listener (until 2026-12-07, 400).
	f.request("POST", "/admin/v1/tokens", `{"tenant":"`+strings.Repeat("a", 2<<20)+`"}`).
		wantError(t, http.StatusRequestEntityTooLarge, "request body: larger than 1048576 bytes (1 MiB)")
}

// TestCreatingACredentialForAnUnknownTenantNamesTheParameter: a token or
// client created or rotated for a tenant that is not configured is 404
// naming the parameter, as on every endpoint that takes a tenant (README,
// Operating); before, these answered in the store's words, "no tenant".
func TestCreatingACredentialForAnUnknownTenantNamesTheParameter(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/admin/v1/tokens", "/admin/v1/tokens/rotate", "/admin/v1/clients", "/admin/v1/clients/rotate"} {
		f.request("POST", path, `{"tenant":"initech","name":"x"}`, "Content-Type", "application/json").
			wantError(t, http.StatusNotFound, `tenant: no such tenant "initech": it is not configured (tenants: acme)`)
	}
}

// TestCreateRefusesOverlap: overlap applies to a rotation; a create given
// one (even one that is no duration) is refused naming overlap (until
// 2026-12-07 it issued a credential as if none had been given).
func TestCreateRefusesOverlap(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/admin/v1/tokens", "/admin/v1/clients"} {
		for _, body := range []string{`{"tenant":"acme","overlap":"1h"}`, `{"tenant":"acme","overlap":"yesterday"}`} {
			f.request("POST", path, body).wantError(t, http.StatusBadRequest, "overlap: applies to a rotation")
		}
	}
}

// TestTooLongDurationsSayWhy: a duration past the century ParseDuration
// takes is refused naming the field and saying why (as overlap does), not
// "want a duration such as 90d", which the caller gave.
func TestTooLongDurationsSayWhy(t *testing.T) {
	f := newFixture(t)
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","expires":"100000d"}`).wantError(t, http.StatusBadRequest, "longer than a century")
	f.request("POST", "/admin/v1/tokens/rotate", `{"tenant":"acme","overlap":"100000d"}`).wantError(t, http.StatusBadRequest, "overlap: duration \"100000d\" is longer than a century")
	f.request("POST", "/admin/v1/sinks/crm/replay", `{"since":"100000d"}`).wantError(t, http.StatusBadRequest, "longer than a century")
}

// TestQueriesTheEndpointDoesNotReadAreRefused: a listing given a query
// parameter it does not read (misspelt: ?tenat=acme) answered as if none
// had been given, every tenant's tokens; one given twice took the first.
// Each is 400 naming it (until 2026-12-07, ignored); the parameters an
// endpoint reads are taken, and the profiles take net/http/pprof's.
func TestQueriesTheEndpointDoesNotReadAreRefused(t *testing.T) {
	f := newFixture(t)
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","name":"a"}`).want(t, http.StatusCreated, nil)
	for _, c := range []struct{ path, says string }{
		{"/admin/v1/tokens?tenat=acme", `GET /admin/v1/tokens takes the query parameters tenant, got "tenat"`},
		{"/admin/v1/clients?tenat=acme", `takes the query parameters tenant, got "tenat"`},
		{"/admin/v1/tokens?tenant=acme&tenant=globex", "tenant is given 2 times; give it once"},
		{"/admin/v1/tenants?tenant=acme", `GET /admin/v1/tenants takes no query parameters, got "tenant"`},
		{"/admin/v1/log?tenant=acme&limt=5", `got "limt"`},
		{"/admin/v1/deliveries?sink=crm&tenant=acme&stauts=5xx", `got "stauts"`},
		{"/admin/v1/events?tenant=acme&follow=false&from=1", `got "from"`},
		{"/admin/v1/sinks/crm/dlq?limit=1&offset=5", `got "offset"`},
		{"/admin/v1/stats?window=1h", `got "window"`},
		{"/admin/v1/tokens?tenant=%zz", "the query is not valid"},
	} {
		f.request("GET", c.path, "").wantError(t, http.StatusBadRequest, c.says)
	}
	f.request("GET", "/admin/v1/tokens?tenant=acme", "").want(t, http.StatusOK, nil)
	f.request("GET", "/admin/v1/stats?since=1h", "").want(t, http.StatusOK, nil)
	f.request("GET", "/admin/v1/sinks/crm/dlq?limit=1", "").want(t, http.StatusOK, nil)
	f.request("GET", "/debug/pprof/goroutine?debug=1", "").want(t, http.StatusOK, nil)
}
