// SPDX-License-Identifier: Apache-2.0

package eventstest

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Contract holds the event contract's schemas, compiled once per test binary.
type Contract struct {
	envelope, natsHeaders, webhookHeaders *jsonschema.Schema
	data                                  map[events.Action]*jsonschema.Schema
}

var (
	contractOnce sync.Once
	compiled     *Contract
	compileErr   error
)

// Schemas compiles the schemas in relay/events/schema: every test that
// reads an event checks it against them, so that an event the schemas do
// not describe (a field added to the payload, a header renamed) fails the
// suite.
func Schemas(t testing.TB) *Contract {
	t.Helper()
	contractOnce.Do(func() { compiled, compileErr = compileContract() })
	if compileErr != nil {
		t.Fatalf("compiling the event schemas: %v", compileErr)
	}
	return compiled
}

func compileContract() (*Contract, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	files := events.Schemas()
	names, err := fs.Glob(files, "*")
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, err
		}
		var doc any
		if strings.HasSuffix(name, ".yaml") {
			if err := yaml.Unmarshal(b, &doc); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		} else if doc, err = jsonschema.UnmarshalJSON(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if err := c.AddResource(events.SchemaBase+name, doc); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	out := &Contract{data: map[events.Action]*jsonschema.Schema{}}
	if out.envelope, err = c.Compile(events.SchemaBase + "event.json"); err != nil {
		return nil, err
	}
	for _, a := range events.Catalog {
		if out.data[a], err = c.Compile(events.SchemaBase + events.DataSchema(a)); err != nil {
			return nil, err
		}
	}
	if out.natsHeaders, err = c.Compile(events.SchemaBase + "asyncapi.yaml#/components/schemas/natsHeaders"); err != nil {
		return nil, err
	}
	if out.webhookHeaders, err = c.Compile(events.SchemaBase + "asyncapi.yaml#/components/schemas/webhookHeaders"); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckEvent checks an event against the contract: its attributes
// (event.json) and its data (the schema of its type).
func (c *Contract) CheckEvent(e event.Event) error {
	b, err := events.MarshalStructured(e)
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if err := c.envelope.Validate(doc); err != nil {
		return fmt.Errorf("event %s does not match relay/events/schema/event.json:\n%v\n%s", e.ID(), err, b)
	}
	a, err := events.ActionOf(e)
	if err != nil {
		return err
	}
	return c.CheckData(a, e.Data())
}

// CheckData checks an event's data against the schema of its action.
func (c *Contract) CheckData(a events.Action, data []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s data is not JSON: %w", a, err)
	}
	if err := c.data[a].Validate(doc); err != nil {
		return fmt.Errorf("%s data does not match relay/events/schema/%s:\n%v\n%s", a, events.DataSchema(a), err, data)
	}
	return nil
}

// CheckNATSHeaders checks a message's headers against the AsyncAPI
// document's natsHeaders.
func (c *Contract) CheckNATSHeaders(h nats.Header) error {
	doc := map[string]any{}
	for k, v := range h {
		if len(v) > 0 {
			doc[k] = v[0]
		}
	}
	if err := c.natsHeaders.Validate(doc); err != nil {
		return fmt.Errorf("NATS headers do not match asyncapi.yaml natsHeaders: %v\n%v", err, doc)
	}
	return nil
}

// CheckWebhookHeaders checks a binary-mode delivery's headers against the
// AsyncAPI document's webhookHeaders.
func (c *Contract) CheckWebhookHeaders(h http.Header) error {
	doc := map[string]any{}
	for k, v := range h {
		if len(v) > 0 {
			doc[strings.ToLower(k)] = v[0]
		}
	}
	if err := c.webhookHeaders.Validate(doc); err != nil {
		return fmt.Errorf("webhook headers do not match asyncapi.yaml webhookHeaders: %v\n%v", err, doc)
	}
	return nil
}

// ValidateEvent fails the test when e does not match the contract.
func ValidateEvent(t testing.TB, e event.Event) {
	t.Helper()
	if err := Schemas(t).CheckEvent(e); err != nil {
		t.Fatal(err)
	}
}

// ValidateNATSHeaders fails the test when a message's headers do not match the contract.
func ValidateNATSHeaders(t testing.TB, h nats.Header) {
	t.Helper()
	if err := Schemas(t).CheckNATSHeaders(h); err != nil {
		t.Fatal(err)
	}
}

// Event builds an event of type a about resource id as the relay would: a
// resource with the attributes the schemas require, so that receivers in
// tests can check what they get against the contract.
func Event(t testing.TB, tenant string, a events.Action, id string, seq, subjectSeq uint64) event.Event {
	t.Helper()
	meta := fmt.Sprintf(`"meta":{"resourceType":%q,"created":"2026-11-23T09:00:00Z","lastModified":"2026-11-23T09:00:00Z","version":"W/\"%d\""}`, a.ResourceType(), subjectSeq)
	resource := fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":%q,"userName":"user-%s",%s}`, id, id, meta)
	if a.Kind() == "group" {
		resource = fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":%q,"displayName":"group-%s",%s}`, id, id, meta)
	}
	d := events.Data{Tenant: tenant, ResourceType: a.ResourceType(), ID: id, Resource: []byte(resource)}
	switch a {
	case events.UserUpdated, events.UserDeactivated, events.UserReactivated, events.GroupUpdated:
		d.Changes = []events.Change{{Path: "title", New: []byte(`"x"`)}}
	case events.GroupMemberAdded, events.GroupMemberRemoved:
		d.Member = &events.Member{Value: "member-of-" + id, Display: "ann", Type: "User", UserName: "ann"}
	}
	e, err := events.New(events.Meta{Tenant: tenant, Action: a, ResourceID: id, Sequence: seq, SubjectSeq: subjectSeq, Time: time.Now()}, d)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
