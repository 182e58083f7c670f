// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scimrelay/scimrelay/relay/events"
)

// The bodies of a subscriber's requests, as the relay checks them before
// it passes them on: what JetStream keeps for a subscriber, and what it
// does for one, is bounded by what gets through here.

const (
	// maxPullExpires is the longest a subscriber's pull may wait: the
	// max_expires of every consumer it creates, and the expiry the relay
	// gives a pull that names none (JetStream would keep it waiting for
	// as long as the client's connection lasts).
	maxPullExpires = 110 * time.Second
	// maxWaitingPulls is how many pulls the consumer keeps waiting at
	// once (JetStream's default, 512, is the most a subscriber may set).
	maxWaitingPulls = 512
	// minPullHeartbeat and maxPullHeartbeat bound a pull's idle_heartbeat,
	// as nats.go does.
	minPullHeartbeat = 500 * time.Millisecond
	maxPullHeartbeat = 30 * time.Second
	// maxFilters is the most filter_subjects of a subscriber's consumer,
	// and maxDescription the most bytes of its description and metadata
	// (each consumer info answer carries them).
	maxFilters     = 64
	maxDescription = 4096
	// minInactive is the shortest inactive_threshold: a consumer removed
	// when idle and made again costs a creation each time.
	minInactive = time.Minute
	// minRedelivery is the shortest ack_wait and backoff step, and
	// maxBackoffSteps the most backoff steps, of a subscriber's consumer.
	minRedelivery   = time.Second
	maxBackoffSteps = 20
	// defaultAckPending and maxAckPending are the default and the most
	// messages a subscriber's consumer keeps unacknowledged.
	defaultAckPending = 1000
	maxAckPending     = 10000
	// maxPullBatch and maxPullBytes bound what one pull may ask for.
	maxPullBatch = 10000
	maxPullBytes = 64 << 20
	// maxDirectBatch and maxDirectBytes bound what one direct get may
	// read: JetStream reads it at once, where the relay's own
	// publishes wait.
	maxDirectBatch = 1000
	maxDirectBytes = 1 << 20
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
	// Consumers made by earlier releases may not bound these.
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

// checkCreate reads a consumer creation as JetStream would and returns it
// re-encoded, or says why a subscriber may not make it.
//
// It is strict where JetStream is lenient: JetStream decodes every JSON
// value of a body in turn (a second one overrides the first) and, failing
// that, decodes again without refusing unknown fields; what it read and
// what a lenient check read could differ. Here a body is one JSON value
// with known fields only, and only what was checked goes on.
//
// A push consumer delivers in the relay's account to a subject its creator
// names, whatever the creator's permissions: named as another consumer's
// pull or reset subject, every delivery acts on that consumer. A
// subscriber cannot receive push deliveries anyway (they stay in the
// relay's account), so pull consumers are all it gets.
func checkCreate(s Subscriber, data []byte) ([]byte, error) {
	var req server.CreateConsumerRequest
	if err := decodeStrict(data, &req); err != nil {
		return nil, fmt.Errorf("reading the consumer creation: %w", err)
	}
	c := &req.Config
	if c.Durable != "" && c.Durable != s.Name || c.Name != "" && c.Name != s.Name {
		return nil, fmt.Errorf("subscriber %s may create only the consumer %s", s.Name, s.Name)
	}
	if req.Stream != events.StreamName {
		return nil, fmt.Errorf("subscriber %s may create consumers only on %s", s.Name, events.StreamName)
	}
	if err := checkConsumer(c, s); err != nil {
		return nil, err
	}
	return json.Marshal(req)
}

// checkConsumer says what of a consumer's configuration a subscriber may
// not have, and sets the bounds it leaves unset. It judges creations, and
// a consumer of the subscriber's name that is already there when the
// subscriber is added (dropWiderConsumer), which may come from a release
// that checked less.
func checkConsumer(c *server.ConsumerConfig, s Subscriber) error {
	for _, push := range []struct {
		set  bool
		what string
	}{
		{c.DeliverSubject != "", "deliver_subject"},
		{c.DeliverGroup != "", "deliver_group"},
		{c.FlowControl, "flow_control"},
		{c.Heartbeat != 0, "idle_heartbeat"},
		{c.RateLimit != 0, "rate_limit_bps"},
		{c.Direct, "direct"},
		{c.Sourcing, "sourcing"},
		{c.SampleFrequency != "", "sample_freq"},
	} {
		if push.set {
			return fmt.Errorf("scimrelay subscribers may create pull consumers only (no %s)", push.what)
		}
	}
	if err := readsWithin(c, s); err != nil {
		return err
	}
	// What the consumer keeps for the subscriber's pulls is bounded: how
	// many may wait, for how long, and how much each may ask for.
	if err := atMost(&c.MaxRequestExpires, maxPullExpires, "max_expires"); err != nil {
		return err
	}
	for _, b := range []struct {
		v    *int
		max  int
		what string
	}{
		{&c.MaxWaiting, maxWaitingPulls, "max_waiting"},
		{&c.MaxRequestBatch, maxPullBatch, "max_batch"},
		{&c.MaxRequestMaxBytes, maxPullBytes, "max_bytes"},
	} {
		if err := atMost(b.v, b.max, b.what); err != nil {
			return err
		}
	}
	if err := redeliveryBounded(c); err != nil {
		return err
	}
	// JetStream compares every pair of filters at each creation and at
	// each start (9,000 filters: 2 s of CPU on one of its API workers).
	if len(c.FilterSubjects) > maxFilters {
		return fmt.Errorf("a scimrelay subscriber's consumer may have at most %d filters", maxFilters)
	}
	// Each filter that does not name its tenant is a walk of the whole
	// store at a creation that starts from the last message per subject
	// or from a time (64 of them: 1.2 s, the relay's publishes waiting).
	// One filter, scimrelay.> for every tenant, is one walk, paced.
	if len(c.FilterSubjects) > 1 {
		for _, f := range c.FilterSubjects {
			if t := strings.Split(f, "."); len(t) < 3 || t[0] != "scimrelay" || t[1] == "*" || t[1] == ">" {
				return fmt.Errorf("with several filters, each must start scimrelay.<tenant>., not %q", f)
			}
		}
	}
	size := len(c.Description)
	for k, v := range c.Metadata {
		size += len(k) + len(v)
	}
	if size > maxDescription {
		return fmt.Errorf("a scimrelay subscriber's consumer's description and metadata may hold at most %d bytes", maxDescription)
	}
	if c.InactiveThreshold != 0 && c.InactiveThreshold < minInactive {
		return fmt.Errorf("inactive_threshold must be at least %v for a scimrelay subscriber", minInactive)
	}
	return onlyKnownSettings(c)
}

// onlyKnownSettings refuses every consumer setting a subscriber's pull
// consumer does not need: each one JetStream offers has its own cost in
// the relay's process, and four attack rounds found one after another
// (push options, backoff, filters, heartbeats). What a subscriber may set
// is listed here; anything else, including a setting a later nats-server
// adds, is refused by its name.
func onlyKnownSettings(c *server.ConsumerConfig) error {
	allowed := server.ConsumerConfig{
		Durable: c.Durable, Name: c.Name, Description: c.Description, Metadata: c.Metadata,
		DeliverPolicy: c.DeliverPolicy, OptStartSeq: c.OptStartSeq, OptStartTime: c.OptStartTime,
		AckPolicy: c.AckPolicy, AckWait: c.AckWait, MaxDeliver: c.MaxDeliver, BackOff: c.BackOff,
		FilterSubject: c.FilterSubject, FilterSubjects: c.FilterSubjects, HeadersOnly: c.HeadersOnly,
		MaxWaiting: c.MaxWaiting, MaxAckPending: c.MaxAckPending,
		MaxRequestBatch: c.MaxRequestBatch, MaxRequestExpires: c.MaxRequestExpires, MaxRequestMaxBytes: c.MaxRequestMaxBytes,
		InactiveThreshold: c.InactiveThreshold,
		ReplayPolicy:      server.ReplayInstant, // replaying at the original pace keeps a timer per message
	}
	if c.Replicas <= 1 {
		allowed.Replicas = c.Replicas // the embedded server keeps one
	}
	if reflect.DeepEqual(allowed, *c) {
		return nil
	}
	got, want := reflect.ValueOf(*c), reflect.ValueOf(allowed)
	for i := range got.NumField() {
		if !reflect.DeepEqual(got.Field(i).Interface(), want.Field(i).Interface()) {
			name, _, _ := strings.Cut(got.Type().Field(i).Tag.Get("json"), ",")
			return fmt.Errorf("a scimrelay subscriber's consumer may not set %s", name)
		}
	}
	return errors.New("a scimrelay subscriber's consumer may not have these settings")
}

// redeliveryBounded says what of a consumer's redelivery settings makes
// JetStream work without end, and bounds what it keeps: a backoff or
// ack_wait of a nanosecond re-arms the consumer's pending timer back to
// back for as long as anything is unacknowledged (one core busy, on
// through restarts, with the subscriber gone), and with max_ack_pending
// -1 each pass walks every pending message. Even with a second between
// passes each walks every pending message: 100,000 pending took a core
// per subscriber (an attack round), hence 10,000. An ack_wait or backoff step
// of 0 is JetStream's default; a max_ack_pending of 0 becomes
// maxAckPending's default.
func redeliveryBounded(c *server.ConsumerConfig) error {
	if c.AckWait != 0 && c.AckWait < minRedelivery {
		return fmt.Errorf("ack_wait must be at least %v for a scimrelay subscriber", minRedelivery)
	}
	if len(c.BackOff) > maxBackoffSteps {
		return fmt.Errorf("backoff may have at most %d steps for a scimrelay subscriber", maxBackoffSteps)
	}
	for _, d := range c.BackOff {
		if d < minRedelivery {
			return fmt.Errorf("each backoff step must be at least %v for a scimrelay subscriber", minRedelivery)
		}
	}
	switch {
	case c.MaxAckPending == 0:
		c.MaxAckPending = defaultAckPending
	case c.MaxAckPending < 0 || c.MaxAckPending > maxAckPending:
		return fmt.Errorf("max_ack_pending must be from 1 to %d for a scimrelay subscriber", maxAckPending)
	}
	return nil
}

// readsWithin says what a consumer reads that the subscriber may not.
func readsWithin(c *server.ConsumerConfig, s Subscriber) error {
	if s.Subjects == "" {
		return nil
	}
	filters := c.FilterSubjects
	if c.FilterSubject != "" {
		filters = append([]string{c.FilterSubject}, filters...)
	}
	if len(filters) == 0 {
		return fmt.Errorf("subscriber %s must filter on %s", s.Name, s.Subjects)
	}
	for _, f := range filters {
		if !subjectWithin(f, s.Subjects) {
			return fmt.Errorf("subscriber %s may read %s only, not %s", s.Name, s.Subjects, f)
		}
	}
	return nil
}

// subjectWithin reports whether every event subject the filter matches
// matches the pattern too. As the subscriber's permissions do, it lets a
// final ">" of the filter stand for a final "*" of the pattern: a pattern
// without ">" has as many tokens as every event subject
// (events.CheckSubjectPattern), so that reads nothing more.
func subjectWithin(filter, pattern string) bool {
	f, p := strings.Split(filter, "."), strings.Split(pattern, ".")
	for i, pt := range p {
		if pt == ">" {
			return i < len(f)
		}
		if pt == "*" && i == len(p)-1 && len(f) == len(p) {
			return true
		}
		if i >= len(f) || f[i] == ">" || pt != "*" && f[i] != pt {
			return false
		}
	}
	return len(f) == len(p)
}

// createRefusal is JetStream's answer to a refused consumer creation.
func createRefusal(err error) []byte {
	b, _ := json.Marshal(server.ApiResponse{
		Type:  server.JSApiConsumerCreateResponseType,
		Error: &server.ApiError{Code: 400, ErrCode: 10999, Description: err.Error()},
	})
	return b
}
