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
		// A reason of 1 KiB passes; 8 MiB acknowledgements were copies the
		// relay made for each.
		"+TERM " + strings.Repeat("x", 1018): true, "+TERM " + strings.Repeat("x", 1019): false,
		"+ACK " + strings.Repeat("x", 8<<20): false,
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
