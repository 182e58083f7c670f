// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestCheckPull: a pull passes as JetStream reads it, re-encoded, with the
// longest expiry when it names none (JetStream would keep such a pull
// waiting for as long as the client stays connected); a longer expiry,
// a malformed body, unknown fields or two JSON values are refused.
func TestCheckPull(t *testing.T) {
	for _, tt := range []struct {
		body string
		want server.JSApiConsumerGetNextRequest
		err  string
	}{
		{"", server.JSApiConsumerGetNextRequest{Batch: 1, Expires: maxPullExpires}, ""},
		{" 7 ", server.JSApiConsumerGetNextRequest{Batch: 7, Expires: maxPullExpires}, ""},
		{`{"batch":500,"expires":30000000000}`, server.JSApiConsumerGetNextRequest{Batch: 500, Expires: 30 * time.Second}, ""},
		{`{"batch":5}`, server.JSApiConsumerGetNextRequest{Batch: 5, Expires: maxPullExpires}, ""},
		{`{"batch":5,"no_wait":true}`, server.JSApiConsumerGetNextRequest{Batch: 5, NoWait: true}, ""},
		{`{"batch":1,"expires":300000000000}`, server.JSApiConsumerGetNextRequest{}, "at most"},
		{`{"batch":1,"evil":true}`, server.JSApiConsumerGetNextRequest{}, "unknown field"},
		{`{"batch":1} {"batch":2}`, server.JSApiConsumerGetNextRequest{}, "more than one"},
		{`seven`, server.JSApiConsumerGetNextRequest{}, "neither a number"},
		{`{"batch":1,"idle_heartbeat":5000000000}`, server.JSApiConsumerGetNextRequest{Batch: 1, Expires: maxPullExpires, Heartbeat: 5 * time.Second}, ""},
		{`{"batch":1,"expires":110000000000,"idle_heartbeat":1}`, server.JSApiConsumerGetNextRequest{}, "idle_heartbeat must be"},
		{`{"batch":1,"idle_heartbeat":60000000000}`, server.JSApiConsumerGetNextRequest{}, "idle_heartbeat must be"},
		{`{"batch":20000}`, server.JSApiConsumerGetNextRequest{}, "at most 10000 messages"},
		{`{"batch":1,"max_bytes":1073741824}`, server.JSApiConsumerGetNextRequest{}, "at most 10000 messages"},
	} {
		got, err := checkPull([]byte(tt.body))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("pull %q: %v, want an error containing %q", tt.body, err, tt.err)
			}
			continue
		}
		var req server.JSApiConsumerGetNextRequest
		if err != nil || json.Unmarshal(got, &req) != nil || req != tt.want {
			t.Errorf("pull %q: %s (%v), want %+v", tt.body, got, err, tt.want)
		}
	}
}

// TestCheckAck: the acknowledgements clients send pass; +NXT, a pull in
// disguise that escaped the pulls' checks and limits, and anything else do
// not.
func TestCheckAck(t *testing.T) {
	for body, ok := range map[string]bool{
		"": true, "+ACK": true, "-NAK": true, `-NAK {"delay":5000000000}`: true, "+WPI": true,
		"+TERM": true, "+TERM no longer wanted": true,
		`+NXT {"batch":1}`: false, "+NXT": false, "+ACKX": false, "garbage": false,
	} {
		if err := checkAck([]byte(body)); (err == nil) != ok {
			t.Errorf("ack %q: %v, want passed %t", body, err, ok)
		}
	}
}

// TestCheckDirectGet: a direct get of one message passes as it is; one of
// many reads at most maxDirectBatch messages and maxDirectBytes; those that
// JetStream answers by scanning the stream (multi_last, wildcards, times)
// are refused.
func TestCheckDirectGet(t *testing.T) {
	if got, err := checkDirectGet(nil); err != nil || len(got) != 0 {
		t.Fatalf("the last message of a subject: %q, %v", got, err)
	}
	got, err := checkDirectGet([]byte(`{"seq":1,"batch":100}`))
	var req server.JSApiMsgGetRequest
	if err != nil || json.Unmarshal(got, &req) != nil || req.Batch != 100 || req.MaxBytes != maxDirectBytes {
		t.Fatalf("a batch of 100: %s, %v", got, err)
	}
	got, err = checkDirectGet([]byte(`{"seq":5,"next_by_subj":"scimrelay.acme.user.created.u1.3","batch":10}`))
	if err != nil || json.Unmarshal(got, &req) != nil || req.NextFor != "scimrelay.acme.user.created.u1.3" || req.Batch != 10 {
		t.Fatalf("the next messages of one subject: %s, %v", got, err)
	}
	// What JetStream answers by scanning the stream is refused.
	for _, body := range []string{`{"seq":1,"batch":100000}`, `{"seq":1,"batch":10,"max_bytes":16777216}`, `{"seq":1,"evil":1}`,
		`{"multi_last":["scimrelay.>"],"batch":1}`, `{"multi_last":["scimrelay.acme.user.created.u1.3"]}`,
		`{"start_time":"2026-12-01T00:00:00Z","next_by_subj":"scimrelay.acme.user.created.u1.3"}`,
		`{"seq":1,"up_to_time":"2026-12-01T00:00:00Z","batch":5}`,
		`{"seq":1,"next_by_subj":"scimrelay.nobody.>"}`, `{"last_by_subj":"scimrelay.*.user.created.u1.3"}`} {
		if _, err := checkDirectGet([]byte(body)); err == nil {
			t.Errorf("direct get %s passed", body)
		}
	}
	// The subject form asks for the last message of the subject it names.
	for subject, ok := range map[string]bool{
		"$JS.API.DIRECT.GET.SCIMRELAY.scimrelay.acme.user.created.u1.3": true,
		"$JS.API.DIRECT.GET.SCIMRELAY":                                  true,
		"$JS.API.DIRECT.GET.SCIMRELAY.scimrelay.*.>":                    false,
		"$JS.API.DIRECT.GET.SCIMRELAY.scimrelay.acme.user.created.*.3":  false,
	} {
		if _, err := checkRequest(subject, nil); (err == nil) != ok {
			t.Errorf("direct get on %s: %v, want passed %t", subject, err, ok)
		}
	}
}

// TestCreateBoundsPulls: a subscriber's consumer keeps at most
// maxWaitingPulls pulls waiting, each asking for at most maxPullBatch
// messages and maxPullBytes; unset, they are set to these bounds. It has
// at most maxFilters filters (JetStream compares every pair at each
// creation and start: 9,000 took 2 s of CPU) and maxDescription bytes of
// description and metadata.
func TestCreateBoundsPulls(t *testing.T) {
	s := Subscriber{Name: "billing"}
	got, err := checkCreate(s, []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing"}}`))
	var req server.CreateConsumerRequest
	if err != nil || json.Unmarshal(got, &req) != nil {
		t.Fatalf("%s, %v", got, err)
	}
	if c := req.Config; c.MaxWaiting != maxWaitingPulls || c.MaxRequestBatch != maxPullBatch || c.MaxRequestMaxBytes != maxPullBytes || c.MaxRequestExpires != maxPullExpires {
		t.Fatalf("unset bounds became %d, %d, %d, %v", c.MaxWaiting, c.MaxRequestBatch, c.MaxRequestMaxBytes, c.MaxRequestExpires)
	}
	filters := `"filter_subjects":["scimrelay.globex.>"` + strings.Repeat(`,"x"`, maxFilters) + `]`
	for _, field := range []string{`"max_waiting":1073741824`, `"max_batch":1000000`, `"max_bytes":1073741824`, `"max_expires":300000000000`,
		filters, `"description":"` + strings.Repeat("d", maxDescription+1) + `"`, `"metadata":{"k":"` + strings.Repeat("m", maxDescription) + `"}`} {
		if _, err := checkCreate(s, []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing",`+field+`}}`)); err == nil || !strings.Contains(err.Error(), "at most") {
			t.Errorf("a creation with %s: %v", field, err)
		}
	}
}

// TestCreateBoundsRedelivery: a subscriber's consumer redelivers no
// faster than once a second and keeps at most maxAckPending messages
// unacknowledged. A backoff of 1 ns kept a core busy for as long as a
// message stayed unacknowledged, through restarts, with the subscriber
// gone; ack_wait 1 ns with max_ack_pending -1 walked every pending
// message each millisecond.
func TestCreateBoundsRedelivery(t *testing.T) {
	s := Subscriber{Name: "billing"}
	create := func(cfg string) (server.ConsumerConfig, error) {
		got, err := checkCreate(s, []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing"`+cfg+`}}`))
		var req server.CreateConsumerRequest
		if err == nil {
			err = json.Unmarshal(got, &req)
		}
		return req.Config, err
	}
	if c, err := create(``); err != nil || c.MaxAckPending != defaultAckPending {
		t.Fatalf("max_ack_pending unset became %d (%v), want %d", c.MaxAckPending, err, defaultAckPending)
	}
	if c, err := create(`,"ack_wait":30000000000,"backoff":[1000000000,5000000000],"max_deliver":5,"max_ack_pending":5000`); err != nil || c.MaxAckPending != 5000 {
		t.Fatalf("bounded settings: %+v, %v", c, err)
	}
	for _, cfg := range []string{`,"backoff":[1],"max_deliver":-1`, `,"ack_wait":1`, `,"max_ack_pending":-1`, `,"max_ack_pending":1000000`,
		`,"backoff":[` + strings.Repeat(`1000000000,`, 20) + `1000000000],"max_deliver":-1`} {
		if _, err := create(cfg); err == nil || !strings.Contains(err.Error(), "scimrelay subscriber") {
			t.Errorf("a creation with %s: %v", cfg, err)
		}
	}
}

// TestCreateOnlyKnownSettings: a subscriber's consumer may set what a pull
// consumer needs, and nothing else, each refused by its name: every
// setting JetStream offers has a cost in the relay's process, and a
// setting a later nats-server adds is refused too.
func TestCreateOnlyKnownSettings(t *testing.T) {
	s := Subscriber{Name: "billing"}
	ok := `,"description":"audit","metadata":{"team":"billing"},"deliver_policy":"by_start_sequence","opt_start_seq":5,"ack_policy":"explicit","ack_wait":30000000000,` +
		`"max_deliver":5,"backoff":[1000000000,2000000000],"filter_subject":"scimrelay.acme.>","headers_only":true,"max_waiting":100,"max_ack_pending":500,` +
		`"max_batch":100,"max_expires":30000000000,"max_bytes":1048576,"inactive_threshold":3600000000000,"replay_policy":"instant","num_replicas":1`
	if _, err := checkCreate(s, []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing"`+ok+`}}`)); err != nil {
		t.Fatalf("a pull consumer's settings: %v", err)
	}
	for field, setting := range map[string]string{
		"replay_policy":      `"replay_policy":"original"`,
		"mem_storage":        `"mem_storage":true`,
		"pause_until":        `"pause_until":"2999-01-01T00:00:00Z"`,
		"priority_groups":    `"priority_groups":["a"],"priority_policy":"overflow"`,
		"num_replicas":       `"num_replicas":3`,
		"inactive_threshold": `"inactive_threshold":1`,
	} {
		_, err := checkCreate(s, []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing",`+setting+`}}`))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("a creation with %s: %v, want it refused naming %s", setting, err, field)
		}
	}
}

// TestCheckStreamReads: a message get through the API is held to what a
// direct get may ask (no wildcard, multi_last or time: JetStream answers
// those by walking the store, under its lock, where the relay's publishes
// wait), and a stream info may not ask for the stream's subjects (every
// subject counted: 4 MB and 1.6 s an answer at 100,000 subjects) or its
// deleted messages.
func TestCheckStreamReads(t *testing.T) {
	for _, tt := range []struct {
		subject, body string
		ok            bool
	}{
		{"$JS.API.STREAM.MSG.GET.SCIMRELAY", `{"seq":1}`, true},
		{"$JS.API.STREAM.MSG.GET.SCIMRELAY", `{"last_by_subj":"scimrelay.acme.user.created.u1.3"}`, true},
		{"$JS.API.STREAM.MSG.GET.SCIMRELAY", `{"last_by_subj":"*.*.*.*.*.nobody"}`, false},
		{"$JS.API.STREAM.MSG.GET.SCIMRELAY", `{"seq":1,"next_by_subj":"*.*.*.*.*.nobody"}`, false},
		{"$JS.API.STREAM.MSG.GET.SCIMRELAY", `{"start_time":"2000-01-01T00:00:00Z","next_by_subj":"scimrelay.acme.user.created.u1.3"}`, false},
		{"$JS.API.STREAM.INFO.SCIMRELAY", ``, true},
		{"$JS.API.STREAM.INFO.SCIMRELAY", `{}`, true},
		{"$JS.API.STREAM.INFO.SCIMRELAY", `{"subjects_filter":">"}`, false},
		{"$JS.API.STREAM.INFO.SCIMRELAY", `{"deleted_details":true}`, false},
		{"$JS.API.STREAM.INFO.SCIMRELAY", `{"evil":1}`, false},
	} {
		if _, err := checkRequest(tt.subject, []byte(tt.body)); (err == nil) != tt.ok {
			t.Errorf("%s %s: %v, want passed %t", tt.subject, tt.body, err, tt.ok)
		}
	}
}

// TestCreateFiltersNameTheirTenant: several filters each name their
// tenant. Each filter that does not is a walk of the whole store at a
// creation starting from the last message per subject or from a time:
// 64 of them took 1.2 s, the relay's publishes waiting behind it.
func TestCreateFiltersNameTheirTenant(t *testing.T) {
	s := Subscriber{Name: "billing"}
	for filters, ok := range map[string]bool{
		`"filter_subject":"scimrelay.>"`:                                   true,
		`"filter_subjects":["scimrelay.acme.>","scimrelay.globex.user.>"]`: true,
		`"filter_subjects":["*.*.*.*.*.a","*.*.*.*.*.b"]`:                  false,
		`"filter_subjects":["scimrelay.acme.>","scimrelay.*.user.>"]`:      false,
		`"filter_subjects":["scimrelay.acme.>","scimrelay.>"]`:             false,
	} {
		_, err := checkCreate(s, []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing","deliver_policy":"last_per_subject",`+filters+`}}`))
		if (err == nil) != ok {
			t.Errorf("a creation with %s: %v, want passed %t", filters, err, ok)
		}
	}
}
