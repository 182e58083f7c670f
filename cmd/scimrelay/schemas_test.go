// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"testing"

	"github.com/scimrelay/scimrelay/relay/events"
)

// TestAdminServesSchemas: the admin API serves the event contract, byte for
// byte the files in relay/events/schema, behind the admin token.
func TestAdminServesSchemas(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	get := func(path, token string) (int, string, []byte) {
		req, _ := http.NewRequest("GET", p.adminURL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header.Get("Content-Type"), b
	}
	status, _, body := get("/admin/v1/schemas", adminSecret)
	var names []string
	if status != 200 || json.Unmarshal(body, &names) != nil || len(names) != len(events.Catalog)+3 {
		t.Fatalf("list: %d %s", status, body)
	}
	for _, name := range names {
		want, _ := fs.ReadFile(events.Schemas(), name)
		status, ct, got := get("/admin/v1/schemas/"+name, adminSecret)
		if status != 200 || string(got) != string(want) || ct == "" {
			t.Fatalf("%s: %d %s", name, status, ct)
		}
	}
	if status, _, _ := get("/admin/v1/schemas/nope.json", adminSecret); status != 404 {
		t.Fatalf("unknown schema: %d", status)
	}
	if status, _, _ := get("/admin/v1/schemas/user.created.json", ""); status != 401 {
		t.Fatalf("without the admin token: %d", status)
	}
}
