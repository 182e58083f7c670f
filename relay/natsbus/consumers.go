// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Each subscriber reads through one durable pull consumer on SCIMRELAY,
// named as the subscriber, which the relay makes and keeps with its own
// settings (ensureConsumer). Subscribers may pull from it, acknowledge and
// read its info; they create and delete nothing. Six attack rounds on the
// earlier design, where a subscriber created its consumer through a check
// of the relay's, each found another setting with a cost of its own in
// the relay's process.

// Where a new consumer starts: every event the stream still holds, or the
// events stored from the moment it is made.
const (
	FromAll = "all"
	FromNew = "new"
)

// The managed consumer's settings that are not bounds of bodies.go.
const (
	consumerAckWait = 30 * time.Second
	// consumerTimeout bounds each of the relay's requests about a
	// subscriber's consumer.
	consumerTimeout = 5 * time.Second
)

// consumerConfig is the consumer the relay keeps for s.
func consumerConfig(s Subscriber) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:            s.Name,
		Description:        "scimrelay subscriber " + s.Name + " (kept by the relay: scimrelay subscriber add)",
		DeliverPolicy:      jetstream.DeliverAllPolicy,
		AckPolicy:          jetstream.AckExplicitPolicy,
		AckWait:            consumerAckWait,
		MaxDeliver:         -1,
		MaxAckPending:      defaultAckPending,
		MaxWaiting:         maxWaitingPulls,
		MaxRequestBatch:    maxPullBatch,
		MaxRequestMaxBytes: maxPullBytes,
		MaxRequestExpires:  maxPullExpires,
		ReplayPolicy:       jetstream.ReplayInstantPolicy,
		FilterSubject:      s.Subjects,
	}
	if s.From == FromNew {
		c.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	return c
}

// ensureConsumer makes the consumer of s, or adopts the one of its name
// already there (made by the subscriber under earlier releases, or before
// its subjects changed): its position is kept and its settings become the
// relay's, filter included. Where it started, and how many pulls may wait
// when within the relay's bound, JetStream does not update, and they do
// not matter; a consumer JetStream refuses to update to the rest (a push
// consumer, another ack or replay policy) is deleted and made anew. Where
// the stream is not there yet nothing is made: EnsureConsumers does it
// once it is.
func (e *Embedded) ensureConsumer(s Subscriber) error {
	ctx, cancel := context.WithTimeout(context.Background(), consumerTimeout)
	defer cancel()
	want := consumerConfig(s)
	cons, err := e.js.Consumer(ctx, events.StreamName, s.Name)
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if _, err := e.js.CreateConsumer(ctx, events.StreamName, want); err != nil {
			return fmt.Errorf("creating its consumer: %w", err)
		}
		return nil
	case errors.Is(err, jetstream.ErrNotPullConsumer):
		return e.remakeConsumer(ctx, s, err)
	case err != nil:
		return fmt.Errorf("looking up its consumer: %w", err)
	}
	have := cons.CachedInfo().Config
	want.DeliverPolicy, want.OptStartSeq, want.OptStartTime = have.DeliverPolicy, have.OptStartSeq, have.OptStartTime
	if have.MaxWaiting > 0 && have.MaxWaiting <= maxWaitingPulls {
		want.MaxWaiting = have.MaxWaiting
	}
	_, err = e.js.UpdateConsumer(ctx, events.StreamName, want)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &apiErr):
		return e.remakeConsumer(ctx, s, err)
	default:
		return fmt.Errorf("updating its consumer to the relay's settings: %w", err)
	}
}

// remakeConsumer deletes the consumer of s, which cannot take the relay's
// settings (why), and makes it anew.
func (e *Embedded) remakeConsumer(ctx context.Context, s Subscriber, why error) error {
	e.log.Warn("embedded NATS: a subscriber's consumer cannot take the relay's settings; it is deleted and made anew, from where --from says",
		"subscriber", s.Name, "err", why)
	if err := e.js.DeleteConsumer(ctx, events.StreamName, s.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("deleting its consumer, which cannot take the relay's settings (%v): %w", why, err)
	}
	if _, err := e.js.CreateConsumer(ctx, events.StreamName, consumerConfig(s)); err != nil {
		return fmt.Errorf("creating its consumer: %w", err)
	}
	return nil
}

// EnsureConsumers makes or adopts the consumer of every admitted
// subscriber (see SetSubscribers). The relay calls it once the SCIMRELAY
// stream is there: at the first start the stream comes after the server.
func (e *Embedded) EnsureConsumers() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for name, p := range e.passers {
		if err := e.ensureConsumer(p.sub); err != nil {
			errs = append(errs, fmt.Errorf("subscriber %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

const (
	// createProxyPrefix is where a subscriber's consumer creations arrive
	// in the relay's account, followed by its account's name (which the
	// import sets, and the sender cannot).
	createProxyPrefix = "$SCIMRELAY.CREATE."
	// maxCreateBody is the largest creation request answered; a
	// consumer's configuration is a few hundred bytes.
	maxCreateBody = 64 << 10
	// createTimeout bounds how long a creation's answer waits for the
	// subscribers' place in JetStream's API queue; JetStream then has
	// apiTimeout, and the route 2 s more.
	createTimeout = 3 * time.Second
	createRoute   = createTimeout + apiTimeout + 2*time.Second
)

// answerCreate answers a consumer creation the subscriber sent to subject
// (nats.go CreateOrUpdateConsumer, nats.js consumers.add, as the README
// of earlier releases showed) without creating anything: when the filters
// it asks for are its consumer's, with the consumer's info, as JetStream
// answers a creation; otherwise with an error saying how the filter is
// changed. Every other setting it asks for is ignored.
func (p *passer) answerCreate(subject string, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	answer := func(code, errCode int, format string, args ...any) {
		refuseCreate(m, code, errCode, fmt.Sprintf(format, args...))
	}
	s := p.sub
	if len(m.Data) > maxCreateBody {
		answer(400, refusedCode, "a consumer creation may be at most %d bytes", maxCreateBody)
		return
	}
	var req struct {
		Stream string `json:"stream_name"`
		Config struct {
			Durable        string   `json:"durable_name"`
			Name           string   `json:"name"`
			FilterSubject  string   `json:"filter_subject"`
			FilterSubjects []string `json:"filter_subjects"`
		} `json:"config"`
	}
	if err := json.Unmarshal(m.Data, &req); err != nil {
		answer(400, refusedCode, "reading the consumer creation: %v", err)
		return
	}
	c := req.Config
	if c.Durable != "" && c.Durable != s.Name || c.Name != "" && c.Name != s.Name || req.Stream != events.StreamName {
		answer(400, refusedCode, "subscriber %s may use only the consumer %s on %s", s.Name, s.Name, events.StreamName)
		return
	}
	// The subject of a creation with one filter ends with it:
	// $JS.API.CONSUMER.CREATE.SCIMRELAY.<name>.<filter>.
	asked := c.FilterSubjects
	if c.FilterSubject != "" {
		asked = append([]string{c.FilterSubject}, asked...)
	}
	if f, ok := strings.CutPrefix(subject, jsAPI+"CONSUMER.CREATE."+events.StreamName+"."+s.Name+"."); ok {
		asked = append(asked, f)
	}
	slices.Sort(asked)
	asked = slices.Compact(asked)
	if !slices.Equal(asked, filtersOf(s)) {
		filter := s.Subjects
		if filter == "" {
			filter = "none (every event)"
		}
		answer(400, filterMismatchCode, "the relay manages this consumer: its filter is %s; change it with scimrelay subscriber add %s --subjects ...", filter, s.Name)
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, createTimeout)
	defer cancel()
	res, err := p.ask(ctx, jsAPI+"CONSUMER.INFO."+events.StreamName+"."+s.Name, nil)
	if err != nil {
		answer(503, refusedCode, "JetStream did not answer for the consumer %s: %v", s.Name, err)
		return
	}
	var info server.JSApiConsumerInfoResponse
	if err := json.Unmarshal(res.Data, &info); err != nil {
		answer(500, refusedCode, "reading JetStream's answer for the consumer %s: %v", s.Name, err)
		return
	}
	info.Type = server.JSApiConsumerCreateResponseType
	b, err := json.Marshal(server.JSApiConsumerCreateResponse{ApiResponse: info.ApiResponse, ConsumerInfo: info.ConsumerInfo})
	if err != nil {
		answer(500, refusedCode, "encoding the consumer %s: %v", s.Name, err)
		return
	}
	_ = m.Respond(b)
}

// refuseCreate answers a consumer creation with JetStream's error
// response, which nats.go and nats.js return as an error with description.
func refuseCreate(m *nats.Msg, code, errCode int, description string) {
	b, _ := json.Marshal(server.ApiResponse{
		Type:  server.JSApiConsumerCreateResponseType,
		Error: &server.ApiError{Code: code, ErrCode: uint16(errCode), Description: description},
	})
	_ = m.Respond(b)
}

// filtersOf is the filter of the consumer of s, as a sorted list.
func filtersOf(s Subscriber) []string {
	if s.Subjects == "" {
		return nil
	}
	return []string{s.Subjects}
}

// The err_code of the relay's refusals of a creation: 10999 is ours, not
// a NATS code; a creation asking for another filter gets JetStream's
// "consumer create request did not match filtered subject".
const (
	refusedCode        = 10999
	filterMismatchCode = 10131
)
