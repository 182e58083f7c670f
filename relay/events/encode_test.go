// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// encodeCases are payloads whose JSON Encode writes by hand: every field,
// and strings that need escaping.
func encodeCases() map[events.Action]events.Data {
	return map[events.Action]events.Data{
		events.UserCreated: {Tenant: "acme", ResourceType: "User", ID: "0198f3c2-7f76-753a-919d-413861904646",
			Resource: json.RawMessage(`{"userName":"ann@x"}`)},
		events.UserUpdated: {Tenant: "acme", ResourceType: "User", ID: "0198f3c2-7f76-753a-919d-413861904646", ExternalID: `quote " and \ <b>&ü` + "\u2028\t",
			Resource: json.RawMessage(`{"userName":"ann@x"}`),
			Changes:  []events.Change{{Path: "name.givenName", Old: json.RawMessage(`"Ann"`), New: json.RawMessage(`"Anna"`)}, {Path: "title", New: json.RawMessage(`"CEO"`)}, {Path: "nickName", Old: json.RawMessage(`"A"`)}}},
		events.GroupMemberAdded: {Tenant: "acme", ResourceType: "Group", ID: "g1",
			Resource: json.RawMessage(`{"displayName":"G"}`),
			Member:   &events.Member{Value: "u1", Display: "Ann \"A\" Lee", Type: "User", UserName: "ann@x", Email: "ann@x", ExternalID: "e1"}},
		events.GroupMemberRemoved: {Tenant: "acme", ResourceType: "Group", ID: "g1",
			Resource: json.RawMessage(`{"displayName":"G"}`),
			Member:   &events.Member{Value: "g2", Type: "Group", DisplayName: "Sub", ExternalID: "e2"}},
	}
}

// TestEncodeMatchesToMsg: the message Encode writes once holds the data
// encoding/json writes for the payload without its HTML escapes, byte for
// byte (&, < and > as they are, as the resource writes them), and carries exactly the headers ToMsg puts on NATS for
// the event it decodes to (ToMsg publishes the rows earlier releases
// stored), which is the event New builds.
func TestEncodeMatchesToMsg(t *testing.T) {
	for a, d := range encodeCases() {
		t.Run(string(a), func(t *testing.T) {
			m := events.Meta{Tenant: "acme", Action: a, ResourceID: d.ID, Time: commitTime, BaseURL: "https://relay.example.com/"}
			dr, err := events.Encode(m, d)
			if err != nil {
				t.Fatal(err)
			}
			dr.SetSequences(1234567, 89)
			stored, err := events.ParseMessage(dr.Row())
			if err != nil {
				t.Fatal(err)
			}
			got, err := stored.NATS()
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false) // &, < and > as the resource writes them
			if err := enc.Encode(d); err != nil {
				t.Fatal(err)
			}
			data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
			if !bytes.Equal(got.Data, data) {
				t.Errorf("data %s\nwant %s", got.Data, data)
			}
			e, err := events.FromMsg(got.Subject, got.Header, got.Data)
			if err != nil {
				t.Fatal(err)
			}
			want, err := events.ToMsg(e)
			if err != nil {
				t.Fatal(err)
			}
			if got.Subject != want.Subject || !bytes.Equal(got.Data, want.Data) {
				t.Errorf("subject %s, data %s\nwant    %s, data %s", got.Subject, got.Data, want.Subject, want.Data)
			}
			if len(got.Header) != len(want.Header) {
				t.Errorf("headers %v, want %v", got.Header, want.Header)
			}
			for k := range want.Header {
				if got.Header.Get(k) != want.Header.Get(k) {
					t.Errorf("header %s = %q, want %q", k, got.Header.Get(k), want.Header.Get(k))
				}
			}
			if e.Source() != "https://relay.example.com/scim/v2/acme" || e.Type() != a.Type() || !e.Time().Equal(commitTime) {
				t.Errorf("source %s, type %s, time %s", e.Source(), e.Type(), e.Time())
			}
			m.Sequence, m.SubjectSeq = 1234567, 89
			built, err := events.New(m, d)
			if err != nil {
				t.Fatal(err)
			}
			built.SetID(dr.ID())
			assertSameEvent(t, built, e)
		})
	}
}

// TestEncodeExtensions: an extension attribute is one more ce- header
// (room for a trace's traceparent); names the relay sets itself, names
// CloudEvents does not allow and values that cannot be a header are refused.
func TestEncodeExtensions(t *testing.T) {
	d := encodeCases()[events.UserCreated]
	m := events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: d.ID, Time: commitTime,
		Extensions: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	dr, err := events.Encode(m, d)
	if err != nil {
		t.Fatal(err)
	}
	dr.SetSequences(1, 1)
	e := decodeDraft(t, dr)
	if got := e.Extensions()["traceparent"]; got != m.Extensions["traceparent"] {
		t.Errorf("traceparent %v", got)
	}
	for name, v := range map[string]string{"sequence": "1", "Trace": "x", "a-b": "x", "ok": "line\r\nbreak"} {
		m.Extensions = map[string]string{name: v}
		if _, err := events.Encode(m, d); err == nil {
			t.Errorf("extension %q=%q accepted", name, v)
		}
	}
}

// decodeDraft reads an encoded event back as a subscriber would.
func decodeDraft(t *testing.T, dr *events.Draft) event.Event {
	t.Helper()
	stored, err := events.ParseMessage(dr.Row())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stored.NATS()
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.FromMsg(msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestSetSequences writes the numbers only the transaction knows into the
// encoded message, any number of times, at full width.
func TestSetSequences(t *testing.T) {
	d := encodeCases()[events.UserCreated]
	dr, err := events.Encode(events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: d.ID, Time: commitTime}, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []uint64{1, 18446744073709551615, 42} {
		dr.SetSequences(n, n+1)
		e := decodeDraft(t, dr)
		if seq, _ := events.Sequence(e); seq != n {
			t.Errorf("sequence %d, want %d", seq, n)
		}
		if seq, _ := events.SubjectSeq(e); seq != n+1 && n+1 != 0 {
			t.Errorf("subjectseq %d, want %d", seq, n+1)
		}
	}
}

// TestParseMessageRejects: a damaged stored message is an error naming
// what is wrong, never a panic or a half message.
func TestParseMessageRejects(t *testing.T) {
	d := encodeCases()[events.UserCreated]
	dr, _ := events.Encode(events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: d.ID, Time: commitTime}, d)
	row := dr.Row()
	for name, b := range map[string][]byte{
		"empty":           nil,
		"structured JSON": []byte(`{"specversion":"1.0"}`),
		"cut subject":     row[:5],
		"cut header":      row[:60],
	} {
		if _, err := events.ParseMessage(b); !errors.Is(err, events.ErrBadMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
	m, err := events.ParseMessage(row)
	if err != nil {
		t.Fatal(err)
	}
	m.Header = []byte("garbage")
	if _, err := m.NATS(); !errors.Is(err, events.ErrBadMessage) {
		t.Errorf("bad header block: %v", err)
	}
	m.Header = []byte("NATS/1.0\r\nce-id: x\r\n\r\n")
	if _, err := m.NATS(); err == nil || !strings.Contains(err.Error(), nats.MsgIdHdr) {
		t.Errorf("no Nats-Msg-Id: %v", err)
	}
	again := events.Message{Subject: m.Subject, Header: []byte("NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n"), Data: m.Data}
	if back, err := events.ParseMessage(again.Append(nil)); err != nil || back.Subject != again.Subject || string(back.Data) != string(again.Data) {
		t.Errorf("Append/ParseMessage: %+v, %v", back, err)
	}
}

// TestEncodedMessageThroughJetStream: a message encoded once is published
// as stored and read back by FromMsg, deduplicated by its id.
func TestEncodedMessageThroughJetStream(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	ctx := context.Background()
	stream, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d := encodeCases()[events.UserUpdated]
	dr, _ := events.Encode(events.Meta{Tenant: "acme", Action: events.UserUpdated, ResourceID: d.ID, Time: commitTime}, d)
	dr.SetSequences(5, 2)
	for range 2 {
		stored, _ := events.ParseMessage(dr.Row())
		msg, err := stored.NATS()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	info, _ := stream.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1 (the second publish is a duplicate)", info.State.Msgs)
	}
	m, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.FromMsg(m.Subject, m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID() != dr.ID() || !strings.HasPrefix(m.Subject, "scimrelay.acme.user.updated."+d.ID+".") {
		t.Errorf("event %s on %s", e.ID(), m.Subject)
	}
}

func BenchmarkEncode(b *testing.B) {
	d := encodeCases()[events.UserUpdated]
	m := events.Meta{Tenant: "acme", Action: events.UserUpdated, ResourceID: d.ID, Time: commitTime}
	b.ReportAllocs()
	for b.Loop() {
		dr, err := events.Encode(m, d)
		if err != nil {
			b.Fatal(err)
		}
		dr.SetSequences(1, 1)
	}
}
