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

// resetMarker is the metadata key of a consumer whose reset to its
// acknowledgement floor is owed (see ensureConsumer): it is set in the
// update that changes the filter and cleared once the reset is done, so
// that a reset that failed is done at the next ensureConsumer, whatever
// the filter then.
const resetMarker = "scimrelay_reset"

// ensureConsumer makes the consumer of s, or adopts the one of its name
// already there (made by the subscriber under earlier releases, or before
// its subjects changed): its position is kept and its settings become the
// relay's, filter included; a changed filter resets it to its ack floor,
// and a paused one is resumed. Where it started (from the first event,
// new ones, a sequence or a time), and how many pulls may wait when
// within the relay's bound, JetStream does not update, and they do not
// matter. A consumer JetStream refuses to update to the rest (a push
// consumer, another ack or replay policy, memory storage, more than 512
// pulls waiting: cannotUpdate) is deleted and made anew, and so is one
// the update would leave other than the relay's: an ephemeral one, which
// deletes itself once idle whatever its settings, and one started at the
// last event of each subject, whose list of those, made under its old
// filter, the update keeps (one started at the last event goes too: only
// the starts above are known to keep nothing of the old filter). Any
// other failure of the update leaves the consumer, and its position, as
// it is, and is returned. Where the stream is not there yet nothing is
// made: EnsureConsumers does it once it is.
//
// Each request to JetStream has its own consumerTimeout, so that one slow
// answer does not leave the next without time.
func (e *Embedded) ensureConsumer(s Subscriber) error {
	want := consumerConfig(s)
	var cons jetstream.Consumer
	err := withTimeout(func(ctx context.Context) (err error) {
		cons, err = e.js.Consumer(ctx, events.StreamName, s.Name)
		return err
	})
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return e.createConsumer(s)
	case errors.Is(err, jetstream.ErrNotPullConsumer):
		return e.remakeConsumer(s, err)
	case err != nil:
		return fmt.Errorf("looking up its consumer: %w", err)
	}
	have := cons.CachedInfo().Config
	switch {
	case have.Durable == "":
		return e.remakeConsumer(s, errors.New("it is ephemeral: it would delete itself once idle"))
	case !slices.Contains([]jetstream.DeliverPolicy{jetstream.DeliverAllPolicy, jetstream.DeliverNewPolicy, jetstream.DeliverByStartSequencePolicy, jetstream.DeliverByStartTimePolicy}, have.DeliverPolicy):
		return e.remakeConsumer(s, fmt.Errorf("its deliver policy is %s, and only all, new, by_start_sequence and by_start_time are kept", have.DeliverPolicy))
	}
	want.DeliverPolicy, want.OptStartSeq, want.OptStartTime = have.DeliverPolicy, have.OptStartSeq, have.OptStartTime
	if have.MaxWaiting > 0 && have.MaxWaiting <= maxWaitingPulls {
		want.MaxWaiting = have.MaxWaiting
	}
	// JetStream keeps what the consumer delivered under its old filter and
	// had not had acknowledged, and redelivers it after ack_wait without
	// looking at the new one: to the subscriber's new key, events its
	// --subjects no longer allow. A reset to the acknowledgement floor
	// forgets them (and delivers once more what was acknowledged above
	// the floor, out of order, and the new filter matches). The update
	// that changes the filter also marks the reset as owed, so that a
	// reset that fails after it is not skipped for good because the
	// filter, next time, is already the wanted one.
	owed := have.Metadata[resetMarker] != "" ||
		!slices.Equal(filtersOf(append([]string{have.FilterSubject}, have.FilterSubjects...)...), filtersOf(s.Subjects))
	if owed {
		want.Metadata = map[string]string{resetMarker: "pending"}
	}
	if err := e.updateConsumer(want); cannotUpdate(err) {
		return e.remakeConsumer(s, err)
	} else if err != nil {
		return fmt.Errorf("updating its consumer to the relay's settings: %w", err)
	}
	if owed {
		if err := withTimeout(func(ctx context.Context) error {
			_, err := e.js.ResetConsumer(ctx, events.StreamName, s.Name)
			return err
		}); err != nil {
			return fmt.Errorf("resetting its consumer to its acknowledgement floor after its filter changed: %w", err)
		}
		want.Metadata = nil
		if err := e.updateConsumer(want); err != nil {
			return fmt.Errorf("clearing its consumer's mark of a reset owed, once reset: %w", err)
		}
	}
	// Neither a creation nor an update changes pause_until.
	if have.PauseUntil != nil {
		if err := withTimeout(func(ctx context.Context) error {
			_, err := e.js.ResumeConsumer(ctx, events.StreamName, s.Name)
			return err
		}); err != nil {
			return fmt.Errorf("resuming its consumer, paused until %v: %w", *have.PauseUntil, err)
		}
	}
	return nil
}

// updateConsumer updates the subscriber's consumer to cfg.
func (e *Embedded) updateConsumer(cfg jetstream.ConsumerConfig) error {
	return withTimeout(func(ctx context.Context) error {
		_, err := e.js.UpdateConsumer(ctx, events.StreamName, cfg)
		return err
	})
}

// withTimeout calls f with a context of consumerTimeout.
func withTimeout(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), consumerTimeout)
	defer cancel()
	return f(ctx)
}

// cannotUpdate reports whether err is JetStream refusing to update a
// setting only a creation sets. nats-server (checkNewConsumerConfig,
// wrapped in NewJSConsumerCreateError) answers those with err_code 10012
// and the refusal as description: "ack policy can not be updated", "max
// waiting can not be updated", "can not update push consumer to pull
// based". 10012 is generic (a store failing to write the new settings
// gets it too), so the description decides; every other error, a
// transient one above all, must not cost the consumer its position.
func cannotUpdate(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeConsumerCreate {
		return false
	}
	d := apiErr.Description
	return strings.HasSuffix(d, " can not be updated") ||
		d == "can not update push consumer to pull based" || d == "can not update pull consumer to push based"
}

// remakeConsumer deletes the consumer of s, which cannot take the relay's
// settings (why), and makes it anew.
func (e *Embedded) remakeConsumer(s Subscriber, why error) error {
	e.log.Warn("embedded NATS: a subscriber's consumer cannot take the relay's settings; it is deleted and made anew, from where --from says",
		"subscriber", s.Name, "err", why)
	if err := withTimeout(func(ctx context.Context) error {
		return e.js.DeleteConsumer(ctx, events.StreamName, s.Name)
	}); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("deleting its consumer, which cannot take the relay's settings (%v): %w", why, err)
	}
	return e.createConsumer(s)
}

// createConsumer makes the consumer of s with the relay's settings.
func (e *Embedded) createConsumer(s Subscriber) error {
	if err := withTimeout(func(ctx context.Context) error {
		_, err := e.js.CreateConsumer(ctx, events.StreamName, consumerConfig(s))
		return err
	}); err != nil {
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
	var kept []Subscriber
	for name, p := range e.passers {
		if err := e.ensureConsumer(p.sub); err != nil {
			// Refused, as SetSubscribers refuses it: its requests go with
			// its passer, its connections with its key.
			errs = append(errs, e.notAdmitted(name, err))
			p.close()
			delete(e.passers, name)
			continue
		}
		kept = append(kept, p.sub)
	}
	if len(errs) == 0 {
		return nil
	}
	users, err := e.usersOf(kept)
	if err != nil {
		return err
	}
	for _, id := range e.auth.set(users) {
		_ = e.srv.DisconnectClientByID(id)
	}
	return errors.Join(errs...)
}

// maxCreateBody is the largest creation request answered; a consumer's
// configuration is a few hundred bytes.
const maxCreateBody = 64 << 10

// creation reports whether a subscriber's request to subject is a
// creation of its consumer, which the relay answers itself (answerCreate):
// its permissions let through only its own consumer's.
func creation(subject string) bool {
	return strings.HasPrefix(subject, jsAPI+"CONSUMER.CREATE.") || strings.HasPrefix(subject, jsAPI+"CONSUMER.DURABLE.CREATE.")
}

// answerCreate answers a consumer creation the subscriber sent to subject
// (nats.go CreateOrUpdateConsumer, nats.js consumers.add, as the README
// of earlier releases showed) without creating anything: when the filters
// it asks for are its consumer's, with the consumer's info, as JetStream
// answers a creation; otherwise with an error saying how the filter is
// changed. Every other setting it asks for is ignored. It comes, as the
// subscriber's other requests, through pass, which checked its reply; one
// without a reply is dropped.
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
	asked := append([]string{c.FilterSubject}, c.FilterSubjects...)
	if f, ok := strings.CutPrefix(subject, jsAPI+"CONSUMER.CREATE."+events.StreamName+"."+s.Name+"."); ok {
		asked = append(asked, f)
	}
	if !slices.Equal(filtersOf(asked...), filtersOf(s.Subjects)) {
		filter := s.Subjects
		if filter == "" {
			filter = "none (every event)"
		}
		answer(400, filterMismatchCode, "the relay manages this consumer: its filter is %s; change it with scimrelay subscriber add %s --replace --subjects ... (which gives it a new key)", filter, s.Name)
		return
	}
	res, err := p.ask(p.ctx, jsAPI+"CONSUMER.INFO."+events.StreamName+"."+s.Name, nil)
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

// filtersOf is a consumer's filter given as subjects (an empty one is
// none), as a sorted list.
func filtersOf(subjects ...string) []string {
	f := slices.DeleteFunc(slices.Clone(subjects), func(s string) bool { return s == "" })
	slices.Sort(f)
	return slices.Compact(f)
}

// The err_code of the relay's refusals of a creation: 10999 is ours, not
// a NATS code; a creation asking for another filter gets JetStream's
// "consumer create request did not match filtered subject".
const (
	refusedCode        = 10999
	filterMismatchCode = 10131
)
