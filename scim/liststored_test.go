// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	. "github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// storingBackend answers every list of users it may with stored resources,
// as the relay does for an exact equality: each stored as AppendJSON
// writes it, except users whose userName starts with "old-", stored with
// their members in name order, as another writer might have: the handler
// must decode those.
type storingBackend struct {
	Backend
	mu    sync.Mutex
	asked []bool // Query.Stored of each List
}

// takeAsked returns Query.Stored of each List since the last call.
func (b *storingBackend) takeAsked() []bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	asked := b.asked
	b.asked = nil
	return asked
}

func (b *storingBackend) List(ctx context.Context, tenant string, rt *ResourceType, q Query) (Page, error) {
	b.mu.Lock()
	b.asked = append(b.asked, q.Stored)
	b.mu.Unlock()
	page, err := b.Backend.List(ctx, tenant, rt, q)
	if err != nil || !q.Stored || rt != UserResourceType {
		return page, err
	}
	out := Page{Total: page.Total, Stored: []StoredResource{}}
	for _, r := range page.Resources {
		groups, _ := r.Attrs["groups"].([]any)
		delete(r.Attrs, "groups")
		data := r.AppendJSON(nil)
		if strings.HasPrefix(r.String("userName"), "old-") {
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			data, _ = json.Marshal(m) // names sorted: id after emails
		}
		out.Stored = append(out.Stored, StoredResource{Type: rt, ID: r.ID(), JSON: data, Groups: groups})
	}
	return out, nil
}

// TestListAnswersStoredUsersAsGetDoes: the handler lets a backend answer a
// list with stored resources when it writes them whole, and writes each as
// GET /Users/<id> does, copied or, when its JSON is in another form,
// decoded; with attributes it asks for decoded ones.
func TestListAnswersStoredUsersAsGetDoes(t *testing.T) {
	mem := scimtest.NewMemory(map[string]string{"acme": tokenAcme})
	b := &storingBackend{Backend: mem}
	srv := httptest.NewServer(NewHandler(b, mem, Options{ValidTenant: func(string) bool { return true }}))
	t.Cleanup(srv.Close)
	ts := &testServer{t: t, srv: srv}
	var ids []string
	for _, name := range []string{"ann@example.com", "old-bob@example.com"} {
		res := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"`+name+`","emails":[{"value":"`+name+`","type":"work"}],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Sales"}}`)
		if res.status != 201 {
			t.Fatalf("%d %s", res.status, res.body)
		}
		ids = append(ids, res.json["id"].(string))
	}
	if res := ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Sales","members":[{"value":"`+ids[0]+`"},{"value":"`+ids[1]+`"}]}`); res.status != 201 {
		t.Fatalf("%d %s", res.status, res.body)
	}
	for i, name := range []string{"ann@example.com", "old-bob@example.com"} {
		b.takeAsked()
		list := ts.do("GET", "/Users?filter="+url.QueryEscape(`userName eq "`+name+`"`), "")
		var page struct {
			Resources []json.RawMessage `json:"Resources"`
		}
		if err := json.Unmarshal(list.body, &page); err != nil || len(page.Resources) != 1 {
			t.Fatalf("%v: %s", err, list.body)
		}
		get := ts.do("GET", "/Users/"+ids[i], "")
		if string(page.Resources[0]) != string(get.body) {
			t.Errorf("%s listed\n%s\nGET gives\n%s", name, page.Resources[0], get.body)
		}
		if asked := b.takeAsked(); len(asked) != 1 || !asked[0] {
			t.Errorf("a list writing users whole asked for stored ones: %v", asked)
		}
	}
	b.takeAsked()
	list := ts.do("GET", "/Users?attributes=userName&filter="+url.QueryEscape(`userName eq "ann@example.com"`), "")
	if asked := b.takeAsked(); len(asked) != 1 || asked[0] {
		t.Errorf("a projected list asked for stored users: %v", asked)
	}
	if res := list.json["Resources"].([]any)[0].(map[string]any); len(res) != 3 || res["userName"] != "ann@example.com" {
		t.Errorf("projected: %v", res)
	}
}
