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
