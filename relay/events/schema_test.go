// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"gopkg.in/yaml.v3"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestSchemasDescribeEveryEvent builds each event type with every optional
// field set and checks it against the schemas, which refuse members they do
// not name.
func TestSchemasDescribeEveryEvent(t *testing.T) {
	for _, a := range events.Catalog {
		e := fullEvent(t, a, "https://relay.example.com")
		eventstest.ValidateEvent(t, e)
		eventstest.ValidateEvent(t, fullEvent(t, a, ""))
		msg, err := events.ToMsg(e)
		if err != nil {
			t.Fatal(err)
		}
		eventstest.ValidateNATSHeaders(t, msg.Header)
	}
}

// TestSchemasRefuse: the schemas are strict where the relay controls the
// shape: unknown members, a member of the wrong kind, changes where none
// belong, a group with its members.
func TestSchemasRefuse(t *testing.T) {
	c := eventstest.Schemas(t)
	good := func(a events.Action) map[string]any {
		var d map[string]any
		if err := json.Unmarshal(fullEvent(t, a, "").Data(), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	tests := []struct {
		name string
		a    events.Action
		edit func(d map[string]any)
	}{
		{"an unknown field", events.UserCreated, func(d map[string]any) { d["extra"] = 1 }},
		{"changes on a create", events.UserCreated, func(d map[string]any) { d["changes"] = []any{map[string]any{"path": "x"}} }},
		{"no changes on an update", events.UserUpdated, func(d map[string]any) { delete(d, "changes") }},
		{"no member on a member event", events.GroupMemberAdded, func(d map[string]any) { delete(d, "member") }},
		{"an unknown member field", events.GroupMemberAdded, func(d map[string]any) { d["member"].(map[string]any)["phone"] = "1" }},
		{"a user member without userName", events.GroupMemberAdded, func(d map[string]any) { delete(d["member"].(map[string]any), "userName") }},
		{"a group member with an email", events.GroupMemberRemoved, func(d map[string]any) { d["member"].(map[string]any)["email"] = "x@y" }},
		{"a group with members", events.GroupCreated, func(d map[string]any) { d["resource"].(map[string]any)["members"] = []any{} }},
		{"a user as a group's resource", events.GroupUpdated, func(d map[string]any) { d["resourceType"] = "User" }},
		{"a bad tenant", events.UserDeleted, func(d map[string]any) { d["tenant"] = "Acme!" }},
	}
	for _, tt := range tests {
		d := good(tt.a)
		tt.edit(d)
		b, _ := json.Marshal(d)
		if err := c.CheckData(tt.a, b); err == nil {
			t.Errorf("%s: accepted %s", tt.name, b)
		}
	}
}

// fullEvent is an event of type a as the relay builds it, with every
// optional field set.
func fullEvent(t *testing.T, a events.Action, baseURL string) event.Event {
	t.Helper()
	id := "0198f3c2-5b1e-7c4d-9a2b-3c4d5e6f7a8b"
	meta := `"meta":{"resourceType":"` + a.ResourceType() + `","created":"2026-11-23T09:00:00Z","lastModified":"2026-11-23T09:00:00Z","version":"W/\"2\""}`
	resource := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"` + id +
		`","externalId":"e1","userName":"ann@x.com","active":false,"name":{"givenName":"Ann"},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"R&D"},` + meta + `}`
	if a.Kind() == "group" {
		resource = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"` + id + `","externalId":"g1","displayName":"Admins",` + meta + `}`
	}
	d := events.Data{Tenant: "acme", ResourceType: a.ResourceType(), ID: id, ExternalID: "e1", Resource: json.RawMessage(resource)}
	switch a {
	case events.UserUpdated, events.UserDeactivated, events.UserReactivated, events.GroupUpdated:
		d.Changes = []events.Change{{Path: "name.givenName", Old: json.RawMessage(`"Ann"`), New: json.RawMessage(`"Anna"`)}, {Path: "title", New: json.RawMessage(`"CTO"`)}, {Path: "nickName", Old: json.RawMessage(`"A"`)}}
	case events.GroupMemberAdded:
		d.Member = &events.Member{Value: "0198f3c2-0000-7000-8000-000000000001", Display: "Ann", Type: "User", UserName: "ann@x.com", Email: "ann@x.com", ExternalID: "e1"}
	case events.GroupMemberRemoved:
		d.Member = &events.Member{Value: "0198f3c2-0000-7000-8000-000000000002", Display: "Ops", Type: "Group", DisplayName: "Ops", ExternalID: "g2"}
	}
	e, err := events.New(events.Meta{Tenant: "acme", Action: a, ResourceID: id, Sequence: 7, SubjectSeq: 2, Time: commitTime, BaseURL: baseURL,
		Extensions: map[string]string{events.ExtTraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", events.ExtTraceState: "vendor=x"}}, d)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestSchemaNamesEveryField fails when a field is added to the payload types
// without being added to the schemas (a field left empty in every test
// would otherwise slip through validation).
func TestSchemaNamesEveryField(t *testing.T) {
	var common struct {
		Defs map[string]struct {
			Properties map[string]any `json:"properties"`
		} `json:"$defs"`
	}
	readJSON(t, "common.json", &common)
	var data struct {
		Properties map[string]any `json:"properties"`
	}
	props := map[string]bool{}
	for _, a := range events.Catalog {
		readJSON(t, events.DataSchema(a), &data)
		for p := range data.Properties {
			props[p] = true
		}
	}
	for _, tt := range []struct {
		typ    reflect.Type
		fields map[string]any
		name   string
	}{
		{reflect.TypeOf(events.Data{}), anyMap(props), "the data schemas"},
		{reflect.TypeOf(events.Member{}), common.Defs["member"].Properties, "common.json#/$defs/member"},
		{reflect.TypeOf(events.Change{}), common.Defs["change"].Properties, "common.json#/$defs/change"},
	} {
		var names []string
		for i := 0; i < tt.typ.NumField(); i++ {
			name, _, _ := strings.Cut(tt.typ.Field(i).Tag.Get("json"), ",")
			names = append(names, name)
			if _, ok := tt.fields[name]; !ok {
				t.Errorf("%s.%s (json %q) is not in %s", tt.typ.Name(), tt.typ.Field(i).Name, name, tt.name)
			}
		}
		for f := range tt.fields {
			if !slices.Contains(names, f) {
				t.Errorf("%s names %q, which %s does not have", tt.name, f, tt.typ.Name())
			}
		}
	}
}

func anyMap(m map[string]bool) map[string]any {
	out := map[string]any{}
	for k := range m {
		out[k] = true
	}
	return out
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := fs.ReadFile(events.Schemas(), name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// TestAsyncAPIMatchesCatalog keeps the AsyncAPI document in step with the
// subjects the relay publishes on and the headers it sets.
func TestAsyncAPIMatchesCatalog(t *testing.T) {
	b, err := fs.ReadFile(events.Schemas(), "asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AsyncAPI string `yaml:"asyncapi"`
		Channels map[string]struct {
			Address  *string                      `yaml:"address"`
			Messages map[string]map[string]string `yaml:"messages"`
		} `yaml:"channels"`
		Components struct {
			Messages map[string]struct {
				Name    string            `yaml:"name"`
				Payload map[string]string `yaml:"payload"`
			} `yaml:"messages"`
			Schemas map[string]struct {
				Properties map[string]any `yaml:"properties"`
				Required   []string       `yaml:"required"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Fatalf("asyncapi %q", doc.AsyncAPI)
	}
	for _, a := range events.Catalog {
		ch, ok := doc.Channels[string(a)]
		if !ok {
			t.Errorf("no channel for %s", a)
			continue
		}
		if want := events.Subject("{tenant}", a, "{resourceId}") + ".{partition}"; ch.Address == nil || *ch.Address != want {
			t.Errorf("channel %s: address %v, want %s (events.Subject)", a, ch.Address, want)
		}
		for _, name := range []string{string(a), "webhook." + string(a)} {
			m, ok := doc.Components.Messages[name]
			if !ok || m.Name != a.Type() || m.Payload["$ref"] != events.DataSchema(a) {
				t.Errorf("message %s: %+v", name, m)
			}
		}
	}
	if len(doc.Channels) != len(events.Catalog)+1 {
		t.Errorf("%d channels: the catalog's %d and the webhook", len(doc.Channels), len(events.Catalog))
	}
	// Every header ToMsg sets is described, and every described one is set.
	msg, err := events.ToMsg(fullEvent(t, events.UserCreated, ""))
	if err != nil {
		t.Fatal(err)
	}
	described := doc.Components.Schemas["ceHeaders"].Properties
	for h := range msg.Header {
		if _, ok := described[h]; !ok && h != "Nats-Msg-Id" {
			t.Errorf("header %s is sent but not in asyncapi.yaml ceHeaders", h)
		}
	}
	for h := range described {
		if msg.Header.Get(h) == "" {
			t.Errorf("asyncapi.yaml describes header %s, which is not sent", h)
		}
	}
}

// TestSchemaCopiesInDocs keeps docs/events identical to relay/events/schema,
// the one source: edit the files there, then copy them over.
func TestSchemaCopiesInDocs(t *testing.T) {
	names, err := fs.Glob(events.Schemas(), "*")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		want, _ := fs.ReadFile(events.Schemas(), name)
		got, err := os.ReadFile(filepath.Join("../../docs/events", name))
		if err != nil || string(got) != string(want) {
			t.Errorf("docs/events/%s differs from relay/events/schema/%s (%v); run: cp relay/events/schema/* docs/events/", name, name, err)
		}
	}
	copies, _ := filepath.Glob("../../docs/events/*")
	for _, c := range copies {
		if base := filepath.Base(c); base != "README.md" && !slices.Contains(names, base) {
			t.Errorf("docs/events/%s has no source in relay/events/schema", base)
		}
	}
}
