// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

var commitTime = time.Date(2026, 11, 23, 9, 30, 0, 123456789, time.UTC)

func newEvent(t testing.TB, a events.Action, seq, subjectSeq uint64) event.Event {
	t.Helper()
	rt := a.ResourceType()
	d := events.Data{Tenant: "acme", ResourceType: rt, ID: "2819c223-7f76-453a-919d-413861904646",
		ExternalID: "58342554", Resource: json.RawMessage(`{"userName":"ann@x"}`)}
	if a == events.UserUpdated {
		d.Changes = []events.Change{{Path: "name.givenName", Old: json.RawMessage(`"Ann"`), New: json.RawMessage(`"Anna"`)}}
	}
	if a == events.GroupMemberAdded {
		d.Member = &events.Member{Value: "u1", Display: "Ann", Type: "User"}
	}
	e, err := events.New(events.Meta{Tenant: "acme", Action: a, ResourceID: d.ID, Sequence: seq, SubjectSeq: subjectSeq, Time: commitTime}, d)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func TestNewAttributes(t *testing.T) {
	e := newEvent(t, events.UserUpdated, 42, 3)
	if e.Type() != "io.scimrelay.user.updated" || e.Source() != "/scim/v2/acme" || e.Subject() != "Users/2819c223-7f76-453a-919d-413861904646" {
		t.Errorf("attributes: type %s source %s subject %s", e.Type(), e.Source(), e.Subject())
	}
	if !e.Time().Equal(commitTime) || e.DataContentType() != "application/json" || e.SpecVersion() != "1.0" {
		t.Errorf("time %s content type %s spec %s", e.Time(), e.DataContentType(), e.SpecVersion())
	}
	if len(e.ID()) != 36 || e.ID()[14] != '7' {
		t.Errorf("id %s is not a UUIDv7", e.ID())
	}
	if got := e.Extensions()["sequence"]; got != "00000000000000000042" {
		t.Errorf("sequence %v, want 20 zero-padded digits", got)
	}
	if n, err := events.SubjectSeq(e); err != nil || n != 3 {
		t.Errorf("SubjectSeq = %d, %v", n, err)
	}
	if events.Tenant(e) != "acme" {
		t.Errorf("tenant %q", events.Tenant(e))
	}
	d, err := events.DataOf(e)
	if err != nil || d.Changes[0].Path != "name.givenName" || string(d.Changes[0].New) != `"Anna"` {
		t.Errorf("data %+v, %v", d, err)
	}
	g := newEvent(t, events.GroupMemberAdded, 1, 1)
	if g.Subject() != "Groups/2819c223-7f76-453a-919d-413861904646" || !strings.Contains(string(g.Data()), `"member":{"value":"u1","display":"Ann","type":"User"}`) {
		t.Errorf("member event: %s %s", g.Subject(), g.Data())
	}
}

func TestSequenceOrderIsLexical(t *testing.T) {
	a := newEvent(t, events.UserCreated, 9, 1).Extensions()["sequence"].(string)
	b := newEvent(t, events.UserCreated, 10, 1).Extensions()["sequence"].(string)
	c := newEvent(t, events.UserCreated, 18446744073709551615, 1).Extensions()["sequence"].(string)
	if !(a < b && b < c) || len(c) != 20 {
		t.Errorf("sequence strings do not sort numerically: %s %s %s", a, b, c)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	good := events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: "u1", Sequence: 1, SubjectSeq: 1, Time: commitTime}
	data := events.Data{Tenant: "acme", ResourceType: "User", ID: "u1", Resource: json.RawMessage(`{}`)}
	tests := []struct {
		name   string
		edit   func(*events.Meta, *events.Data)
		detail string
	}{
		{"bad tenant", func(m *events.Meta, d *events.Data) { m.Tenant, d.Tenant = "Acme Corp", "Acme Corp" }, "not a valid tenant"},
		{"unknown action", func(m *events.Meta, _ *events.Data) { m.Action = "user.exploded" }, "not in the catalog"},
		{"no id", func(m *events.Meta, d *events.Data) { m.ResourceID, d.ID = "", "" }, "resource id is empty"},
		{"id not a subject token", func(m *events.Meta, d *events.Data) { m.ResourceID, d.ID = "u.1", "u.1" }, "travels in NATS subjects"},
		{"zero sequence", func(m *events.Meta, _ *events.Data) { m.Sequence = 0 }, "start at 1"},
		{"no time", func(m *events.Meta, _ *events.Data) { m.Time = time.Time{} }, "time is not set"},
		{"kind mismatch", func(_ *events.Meta, d *events.Data) { d.ResourceType = "Group" }, "does not match"},
		{"data for another resource", func(_ *events.Meta, d *events.Data) { d.ID = "u2" }, "must match"},
		{"extension sets the tenant", func(m *events.Meta, _ *events.Data) { m.Extensions = map[string]string{"tenant": "other"} }, "sets itself"},
		{"extension sets the sequence", func(m *events.Meta, _ *events.Data) { m.Extensions = map[string]string{"sequence": "9"} }, "sets itself"},
		{"extension with a line break", func(m *events.Meta, _ *events.Data) { m.Extensions = map[string]string{"x": "a\nb"} }, "line breaks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, d := good, data
			tt.edit(&m, &d)
			_, err := events.New(m, d)
			if err == nil || !strings.Contains(err.Error(), tt.detail) {
				t.Fatalf("got %v, want an error containing %q", err, tt.detail)
			}
		})
	}
}

func TestPatterns(t *testing.T) {
	tests := []struct {
		pattern string
		match   []events.Action
		err     bool
	}{
		{pattern: "*", match: events.Catalog},
		{pattern: "user.*", match: []events.Action{events.UserCreated, events.UserUpdated, events.UserDeactivated, events.UserReactivated, events.UserDeleted}},
		{pattern: "io.scimrelay.group.*", match: []events.Action{events.GroupCreated, events.GroupUpdated, events.GroupDeleted, events.GroupMemberAdded, events.GroupMemberRemoved}},
		{pattern: "group.member_added", match: []events.Action{events.GroupMemberAdded}},
		{pattern: "user.exploded", err: true},
		{pattern: "users.*", err: true},
		{pattern: "user", err: true},
		{pattern: "", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p, err := events.ParsePattern(tt.pattern)
			if tt.err {
				if err == nil {
					t.Fatalf("ParsePattern(%q) accepted it", tt.pattern)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []events.Action
			for _, a := range events.Catalog {
				if p.Match(a) {
					got = append(got, a)
				}
			}
			if strings.Join(actions(got), ",") != strings.Join(actions(tt.match), ",") {
				t.Errorf("%s matches %v, want %v", tt.pattern, got, tt.match)
			}
		})
	}
	users, err1 := events.ParsePattern("user.*")
	added, err2 := events.ParsePattern("group.member_added")
	ps := events.Patterns{users, added}
	if err1 != nil || err2 != nil || !ps.Match(events.UserDeleted) || !ps.Match(events.GroupMemberAdded) || ps.Match(events.GroupCreated) {
		t.Errorf("Patterns.Match is wrong: %v %v", err1, err2)
	}
	if !(events.Patterns{}).Match(events.GroupDeleted) {
		t.Error("empty Patterns must match everything")
	}
}

func actions(list []events.Action) []string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = string(a)
	}
	return out
}

func TestBinaryModeHeaders(t *testing.T) {
	e := newEvent(t, events.UserUpdated, 7, 2)
	msg, err := events.ToMsg(e)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          e.ID(),
		"ce-source":      "/scim/v2/acme",
		"ce-type":        "io.scimrelay.user.updated",
		"ce-subject":     e.Subject(),
		"ce-time":        "2026-11-23T09:30:00.123456789Z",
		"ce-tenant":      "acme",
		"ce-sequence":    "00000000000000000007",
		"ce-subjectseq":  "00000000000000000002",
		"content-type":   "application/json",
		"Nats-Msg-Id":    e.ID(),
	}
	for k, v := range want {
		if got := msg.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if msg.Subject != "scimrelay.acme.user.updated.2819c223-7f76-453a-919d-413861904646" || string(msg.Data) != string(e.Data()) {
		t.Errorf("subject %s data %s", msg.Subject, msg.Data)
	}
}

// TestRoundTripThroughJetStream publishes through a real JetStream stream
// and reads the event back, in binary and structured mode.
func TestRoundTripThroughJetStream(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	ctx := context.Background()
	stream, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sent := []event.Event{newEvent(t, events.UserCreated, 1, 1), newEvent(t, events.UserUpdated, 2, 2), newEvent(t, events.GroupMemberAdded, 3, 1)}
	for _, e := range sent {
		msg, err := events.ToMsg(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	// A re-publish of the first event within the window is dropped.
	again, _ := events.ToMsg(sent[0])
	ack, err := js.PublishMsg(ctx, again)
	if err != nil || !ack.Duplicate {
		t.Fatalf("re-publish: ack %+v err %v; want a duplicate", ack, err)
	}
	info, err := stream.Info(ctx)
	if err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream holds %d messages (%v), want 3", info.State.Msgs, err)
	}
	for i, want := range sent {
		m, err := stream.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		got, err := events.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		assertSameEvent(t, got, want)
	}
	// Structured mode reads back to the same event.
	b, err := events.MarshalStructured(sent[1])
	if err != nil || strings.Contains(string(b), "\n") {
		t.Fatalf("MarshalStructured: %v, %q", err, b)
	}
	got, err := events.FromMsg("x", nats.Header{"Content-Type": []string{"application/cloudevents+json; charset=utf-8"}}, b)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, got, sent[1])
}

func assertSameEvent(t *testing.T, got, want event.Event) {
	t.Helper()
	if got.ID() != want.ID() || got.Type() != want.Type() || got.Source() != want.Source() || got.Subject() != want.Subject() ||
		!got.Time().Equal(want.Time()) || got.DataContentType() != want.DataContentType() {
		t.Errorf("context differs:\ngot  %s\nwant %s", got.Context, want.Context)
	}
	for _, ext := range []string{"tenant", "sequence", "subjectseq"} {
		if got.Extensions()[ext] != want.Extensions()[ext] {
			t.Errorf("extension %s: %v, want %v", ext, got.Extensions()[ext], want.Extensions()[ext])
		}
	}
	if string(got.Data()) != string(want.Data()) {
		t.Errorf("data %s, want %s", got.Data(), want.Data())
	}
}

func TestFromMsgRejects(t *testing.T) {
	tests := []struct {
		name   string
		h      nats.Header
		data   string
		detail string
	}{
		{"no specversion", nats.Header{}, `{}`, "not a CloudEvent"},
		{"missing id", nats.Header{"ce-specversion": {"1.0"}, "ce-source": {"/x"}, "ce-type": {"t"}}, ``, "id"},
		{"bad time", nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/x"}, "ce-type": {"t"}, "ce-time": {"yesterday"}}, ``, "RFC 3339"},
		{"bad structured", nats.Header{"content-type": {"application/cloudevents+json"}}, `{"specversion":`, "decoding structured"},
		{"unknown spec version", nats.Header{"ce-specversion": {"9.9"}, "ce-id": {"1"}, "ce-source": {"/x"}, "ce-type": {"t"}}, ``, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.FromMsg("s", tt.h, []byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.detail) {
				t.Fatalf("got %v, want an error containing %q", err, tt.detail)
			}
		})
	}
}

func TestEnsureStreamIsIdempotentAndUpdates(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, log); err != nil {
		t.Fatal(err)
	}
	st, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: 2 * time.Hour, Duplicates: time.Minute}, log)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.Config.MaxAge != 2*time.Hour || info.Config.Subjects[0] != "scimrelay.*.*.*.*" || info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("stream config after update: %+v (%v)", info.Config, err)
	}
	// A configuration JetStream refuses fails at once instead of retrying forever.
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := events.EnsureStream(short, js, events.StreamOptions{MaxAge: time.Minute, Duplicates: time.Hour}, log); err == nil || short.Err() != nil {
		t.Fatalf("duplicate window above max age: err %v, ctx %v; want an immediate error", err, short.Err())
	}
}

// TestEventStreamTakesMoreThanAThousandConsumers: the event stream, on a
// server with nats-server's defaults (an external NATS as one runs it, or
// the embedded one), takes more consumers than the server's default of
// 1,000 a stream: it holds one per subscriber, sixteen per sink and one
// per tail, replay or redrive under way. A relay of a thousand tenants,
// each given a subscriber scoped to it, refused the 985th with a 500, and
// a sink added after that could not be set up.
func TestEventStreamTakesMoreThanAThousandConsumers(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	if _, err := events.EnsureStream(t.Context(), js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	const n = 1010
	for i := range n {
		if _, err := js.CreateOrUpdateConsumer(t.Context(), events.StreamName, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("sub%05d", i), FilterSubject: fmt.Sprintf("scimrelay.cust%05d.>", i), AckPolicy: jetstream.AckExplicitPolicy,
		}); err != nil {
			t.Fatalf("consumer %d of %d on the event stream: %v", i+1, n, err)
		}
	}
}

// TestMinStreamAgeIsJetStreams: the floor Check holds nats.stream.max_age,
// nats.stream.duplicates and provisioning_log.retention to is the one the
// server holds streams to: at MinStreamAge a stream is made, below it the
// server refuses the stream (and Check refuses the option first).
func TestMinStreamAgeIsJetStreams(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	at := events.StreamOptions{MaxAge: events.MinStreamAge, Duplicates: events.MinStreamAge}
	if err := at.Check(); err != nil {
		t.Fatalf("Check refuses %s: %v", events.MinStreamAge, err)
	}
	if _, err := events.EnsureStream(ctx, js, at, log); err != nil {
		t.Fatalf("JetStream refuses a stream of %s: %v", events.MinStreamAge, err)
	}
	for _, below := range []events.StreamOptions{
		{MaxAge: events.MinStreamAge - time.Millisecond, Duplicates: events.MinStreamAge - time.Millisecond},
		{MaxAge: time.Hour, Duplicates: events.MinStreamAge - time.Millisecond},
	} {
		if err := below.Check(); err == nil || !strings.Contains(err.Error(), "must be at least 100ms") {
			t.Errorf("Check of %+v: %v; want must be at least 100ms", below, err)
		}
		if _, err := events.EnsureStream(ctx, js, below, log); err == nil {
			t.Errorf("JetStream took %+v; the floor is lower than MinStreamAge", below)
		}
	}
}

func TestClusterStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	servers := eventstest.RunCluster(t, 3)
	_, js := eventstest.Connect(t, eventstest.ClusterURLs(servers))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := events.EnsureStream(ctx, js, events.StreamOptions{Replicas: 3, MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := events.ToMsg(newEvent(t, events.UserCreated, 1, 1))
	// A new R3 stream may answer "no response" until its leader is elected;
	// the message id makes a retried publish count once.
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := js.PublishMsg(ctx, msg)
		return err
	})
	info, err := st.Info(ctx)
	if err != nil || info.Config.Replicas != 3 || info.State.Msgs != 1 || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("R3 stream: %+v %+v (%v)", info.Config, info.Cluster, err)
	}
}

func FuzzFromMsg(f *testing.F) {
	e := newEvent(f, events.UserUpdated, 1, 1)
	msg, _ := events.ToMsg(e)
	structured, _ := events.MarshalStructured(e)
	f.Add("ce-specversion", "1.0", "ce-time", msg.Header.Get("ce-time"), "application/json", msg.Data)
	f.Add("ce-id", "x", "ce-sequence", "1", "application/cloudevents+json", structured)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, ct string, data []byte) {
		h := nats.Header{}
		for k, v := range msg.Header {
			h[k] = v
		}
		h.Set(k1, v1)
		h.Set(k2, v2)
		h.Set("content-type", ct)
		got, err := events.FromMsg("s", h, data)
		if err == nil {
			if err := got.Validate(); err != nil {
				t.Fatalf("FromMsg returned an invalid event: %v", err)
			}
		}
	})
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		newEvent(b, events.UserUpdated, 1, 1)
	}
}

func BenchmarkToMsg(b *testing.B) {
	e := newEvent(b, events.UserUpdated, 1, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.ToMsg(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFromMsg(b *testing.B) {
	msg, _ := events.ToMsg(newEvent(b, events.UserUpdated, 1, 1))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.FromMsg(msg.Subject, msg.Header, msg.Data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEventStreamOnAnAccountWithAConsumerLimit: an external NATS whose
// account limits its consumers (max_consumers in the account's jetstream
// block, a hosted NATS's plan) to fewer than the stream asks for
// (100,000), which nats-server refuses a stream for. README: "the stream
// says none and the account's limit holds": the front end starts, the
// stream the last release made (no bound) being there already.
func TestEventStreamOnAnAccountWithAConsumerLimit(t *testing.T) {
	s := eventstest.RunServer(t)
	if err := s.GlobalAccount().UpdateJetStreamLimits(map[string]server.JetStreamAccountLimits{
		"": {MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: 1000},
	}); err != nil {
		t.Fatal(err)
	}
	_, js := eventstest.Connect(t, eventstest.URL(s))
	old := events.StreamConfig(events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute})
	old.MaxConsumers = 0 // as the last release made it
	if _, err := js.CreateStream(t.Context(), old); err != nil {
		t.Fatalf("the last release's stream: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("the front end's start on an account limited to 1,000 consumers: %v", err)
	}
}

// TestNATSHeadersAreWrittenAsTheyAre: README, Subscribing on NATS: "two
// differences from the binding's binary mode as the CloudEvents
// specification's main branch now writes it": datacontenttype is
// content-type, not ce-datacontenttype, and ce- values are written as
// they are, not percent-encoded (a public_url with escapes in its path
// gives a ce-source holding %). Subscribers written against earlier
// releases read them so: a change to either must fail here.
func TestNATSHeadersAreWrittenAsTheyAre(t *testing.T) {
	e := newEvent(t, events.UserCreated, 1, 1)
	source := "https://relay.example.com/%C3%BCber/scim/v2/acme"
	e.SetSource(source)
	msg, err := events.ToMsg(e)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Values("ce-source"); len(got) != 1 || got[0] != source {
		t.Errorf("ce-source %q, want %q as it is", got, source)
	}
	if got := msg.Header.Get("content-type"); got != "application/json" {
		t.Errorf("content-type %q, want application/json", got)
	}
	for name := range msg.Header {
		if strings.EqualFold(name, "ce-datacontenttype") {
			t.Errorf("a %s header: datacontenttype is content-type", name)
		}
	}
	back, err := events.FromMsg(msg.Subject, msg.Header, msg.Data)
	if err != nil || back.Source() != source {
		t.Errorf("read back: source %q (%v), want %q", back.Source(), err, source)
	}
}
