// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// The bodies of a subscriber's requests, as the relay checks them before
// it passes them on: what JetStream keeps for a subscriber, and what it
// does for one, is bounded by what gets through here.

const (
	// maxPullExpires is the longest a subscriber's pull may wait: the
	// max_expires of its consumer, and the expiry the relay gives a pull
	// that names none (JetStream would keep it waiting for as long as the
	// client's connection lasts).
	maxPullExpires = 110 * time.Second
	// maxWaitingPulls is how many pulls its consumer keeps waiting at
	// once (JetStream's default).
	maxWaitingPulls = 512
	// minPullHeartbeat and maxPullHeartbeat bound a pull's idle_heartbeat,
	// as nats.go does.
	minPullHeartbeat = 500 * time.Millisecond
	maxPullHeartbeat = 30 * time.Second
	// defaultAckPending is how many messages a subscriber's consumer
	// keeps unacknowledged: JetStream walks every pending message at each
	// pass of its redelivery timer (100,000 took a core per subscriber).
	defaultAckPending = 1000
	// maxPullBatch and maxPullBytes bound what one pull may ask for, and
	// its consumer allows.
	maxPullBatch = 10000
	maxPullBytes = 64 << 20
	// maxDirectBatch and maxDirectBytes bound what one direct get may
	// read: JetStream reads it at once, where the relay's own
	// publishes wait.
	maxDirectBatch = 1000
	maxDirectBytes = 1 << 20
	// maxAckBody bounds an acknowledgement: "-NAK {"delay": …}" or a
	// +TERM's reason are a few dozen bytes, and a message of MaxPayload
	// would cost the relay its copy for each (a review sent 8 MiB ones).
	maxAckBody = 1 << 10
)

// atMost gives *v the bound max when it is not set, and says so when it is
// set beyond it.
func atMost[T int | time.Duration](v *T, max T, what string) error {
	switch {
	case *v <= 0:
		*v = max
	case *v > max:
		return fmt.Errorf("%s may be at most %v for a scimrelay subscriber", what, max)
	}
	return nil
}

// decodeStrict decodes one JSON value of known fields into v. JetStream
// decodes leniently (every value of a body in turn, unknown fields
// allowed); what it read and what a lenient check read could differ, so
// the relay checks strictly and passes on only its own encoding.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more than one JSON value")
	}
	return nil
}

// checkRequest checks the body of a subscriber's request to subject and
// returns what to pass on, or says why it is refused.
func checkRequest(subject string, data []byte) ([]byte, error) {
	switch {
	case strings.HasPrefix(subject, jsAPI+"CONSUMER.MSG.NEXT."):
		return checkPull(data)
	case strings.HasPrefix(subject, "$JS.ACK."):
		return data, checkAck(data)
	case strings.HasPrefix(subject, jsAPI+"STREAM.MSG.GET."):
		return checkDirectGet(data) // the same request, answered through the API
	case strings.HasPrefix(subject, jsAPI+"STREAM.INFO."):
		return checkStreamInfo(data)
	case strings.HasPrefix(subject, jsAPI+"DIRECT.GET."):
		// DIRECT.GET.<stream>.<subject> asks for the last message of that
		// subject, which may be a wildcard: a scan, as in a body.
		if tail := strings.Split(strings.TrimPrefix(subject, jsAPI+"DIRECT.GET."), ".")[1:]; slices.ContainsFunc(tail, func(t string) bool { return t == "*" || t == ">" }) {
			return nil, errors.New("a scimrelay subscriber's direct get names one subject, no wildcard")
		}
		return checkDirectGet(data)
	}
	return data, nil
}

// checkPull reads a pull as JetStream does (empty: one message; a number:
// that many; else a JSON request) and returns it re-encoded, with the
// longest expiry when it names none and does not ask for no waiting.
func checkPull(data []byte) ([]byte, error) {
	req := server.JSApiConsumerGetNextRequest{Batch: 1}
	switch t := bytes.TrimSpace(data); {
	case len(t) == 0:
	case t[0] == '{':
		if err := decodeStrict(t, &req); err != nil {
			return nil, fmt.Errorf("reading the pull request: %w", err)
		}
	default:
		n, err := strconv.Atoi(string(t))
		if err != nil {
			return nil, errors.New("reading the pull request: neither a number nor a JSON object")
		}
		req.Batch = n
	}
	if !req.NoWait {
		if err := atMost(&req.Expires, maxPullExpires, "a pull's expires"); err != nil {
			return nil, err
		}
	}
	// Consumers made by earlier releases may not have bounded these, and
	// are adopted as they stand until the relay updates them.
	if req.Batch > maxPullBatch || req.MaxBytes > maxPullBytes {
		return nil, fmt.Errorf("a pull may ask for at most %d messages and %d bytes", maxPullBatch, maxPullBytes)
	}
	// JetStream sends a waiting pull a heartbeat each time its heartbeat
	// passes, checking every millisecond: 512 pulls with a heartbeat of
	// 1 ns made hundreds of thousands of messages a second for 110 s.
	// nats.go allows 500 ms to 30 s.
	if req.Heartbeat != 0 && (req.Heartbeat < minPullHeartbeat || req.Heartbeat > maxPullHeartbeat) {
		return nil, fmt.Errorf("a pull's idle_heartbeat must be from %v to %v", minPullHeartbeat, maxPullHeartbeat)
	}
	return json.Marshal(req)
}

// checkAck accepts the acknowledgements a client sends (empty or +ACK,
// -NAK with an optional delay, +WPI, +TERM with an optional reason) and
// refuses the rest: +NXT is a pull in disguise, which would escape the
// checks and limits of pulls.
func checkAck(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if len(data) > maxAckBody {
		return fmt.Errorf("an acknowledgement may be at most %d bytes", maxAckBody)
	}
	for _, kind := range []string{"+ACK", "-NAK", "+WPI", "+TERM"} {
		if rest, ok := bytes.CutPrefix(data, []byte(kind)); ok && (len(rest) == 0 || rest[0] == ' ') {
			return nil
		}
	}
	return errors.New("an acknowledgement must be +ACK, -NAK, +WPI or +TERM")
}

// checkStreamInfo refuses a stream info request that asks for the
// stream's subjects (JetStream counts every subject under the store's
// lock: 4 MB answers, 1.6 s each, at 100,000 subjects) or its deleted
// messages; the stream's state and configuration are what a subscriber
// asks it for.
func checkStreamInfo(data []byte) ([]byte, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return data, nil
	}
	var req server.JSApiStreamInfoRequest
	if err := decodeStrict(data, &req); err != nil {
		return nil, fmt.Errorf("reading the stream info request: %w", err)
	}
	if req.SubjectsFilter != "" || req.DeletedDetails {
		return nil, errors.New("a scimrelay subscriber's stream info may not ask for subjects or deleted messages")
	}
	return json.Marshal(req)
}

// checkDirectGet reads a direct get as JetStream does (an empty body, for
// the last message of the subject in its subject, or a JSON request) and
// returns it re-encoded, reading at most maxDirectBatch messages and
// maxDirectBytes. The gets JetStream answers by scanning are refused:
// the last message of every subject a wildcard matches (multi_last, a
// wildcard in last_by_subj or next_by_subj) and a start or end time. It
// answers a direct get at once, on the stream, where the relay's own
// publishes wait: an attack round's 1,000 a second of such gets took the
// relay's publishes from 0.3 ms to 20–44 ms. A subscriber reads the
// stream through its consumer; direct gets are for a message it knows.
func checkDirectGet(data []byte) ([]byte, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return data, nil
	}
	var req server.JSApiMsgGetRequest
	if err := decodeStrict(data, &req); err != nil {
		return nil, fmt.Errorf("reading the direct get: %w", err)
	}
	switch {
	case len(req.MultiLastFor) > 0:
		return nil, errors.New("a scimrelay subscriber's direct get may not ask for multi_last")
	case req.StartTime != nil || req.UpToTime != nil:
		return nil, errors.New("a scimrelay subscriber's direct get may not ask by time")
	case strings.ContainsAny(req.LastFor+req.NextFor, "*>"):
		return nil, errors.New("a scimrelay subscriber's direct get names one subject, no wildcard")
	}
	if req.Batch > 0 {
		if err := atMost(&req.Batch, maxDirectBatch, "a direct get's batch"); err != nil {
			return nil, err
		}
		if err := atMost(&req.MaxBytes, maxDirectBytes, "a direct get's max_bytes"); err != nil {
			return nil, err
		}
	}
	return json.Marshal(req)
}
