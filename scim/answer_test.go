// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"context"
	"encoding/json"
	"testing"
)

// storedUser is an Entra-style user as a store returns it: with id,
// meta and two groups.
func storedUser(t testing.TB) *Resource {
	t.Helper()
	res := fixture(t, UserResourceType, baseUserJSON)
	res.Attrs["meta"] = map[string]any{"resourceType": "User", "created": "2026-11-30T12:00:00Z", "lastModified": "2026-11-30T12:00:00Z", "version": `W/"3"`}
	res.Attrs["groups"] = []any{
		map[string]any{"value": "0198f3c2-0000-7000-8000-000000000001", "display": "Sales", "type": "direct"},
		map[string]any{"value": "0198f3c2-0000-7000-8000-000000000002", "display": "Support", "type": "direct"},
	}
	return res
}

// TestAnswerLinksWithoutChangingTheResource: an answer gives meta.location
// and each group's $ref from the URL the client used, leaves the
// resource it was given as it was, and is the resource as stored apart
// from those links.
func TestAnswerLinksWithoutChangingTheResource(t *testing.T) {
	res := storedUser(t)
	stored := string(res.AppendJSON(nil))
	c := &call{tenant: "acme", rt: UserResourceType, base: "https://relay.example.com/scim/v2/acme"}
	jw := &jsonWriter{}
	if err := (&Handler{}).writeResource(context.Background(), jw, c, res, wholeResource); err != nil {
		t.Fatal(err)
	}
	if got := string(res.AppendJSON(nil)); got != stored {
		t.Fatalf("answering changed the resource:\n%s\nwas\n%s", got, stored)
	}
	var answer, want map[string]any
	if err := json.Unmarshal(jw.buf, &answer); err != nil {
		t.Fatalf("%v: %s", err, jw.buf)
	}
	if err := json.Unmarshal([]byte(stored), &want); err != nil {
		t.Fatal(err)
	}
	want["meta"].(map[string]any)["location"] = c.base + "/Users/" + res.ID()
	for _, g := range want["groups"].([]any) {
		g := g.(map[string]any)
		g["$ref"] = c.base + "/Groups/" + g["value"].(string)
	}
	got, _ := json.Marshal(answer)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Fatalf("answer\n%s\nwant\n%s", got, exp)
	}
}

// BenchmarkAnswerUser writes a user the way a GET answers it.
func BenchmarkAnswerUser(b *testing.B) {
	res := storedUser(b)
	c := &call{tenant: "acme", rt: UserResourceType, base: "https://relay.example.com/scim/v2/acme"}
	proj := wholeResource
	h := &Handler{}
	jw := &jsonWriter{}
	b.ReportAllocs()
	for b.Loop() {
		jw.buf = jw.buf[:0]
		if err := h.writeResource(context.Background(), jw, c, res, proj); err != nil {
			b.Fatal(err)
		}
	}
}
