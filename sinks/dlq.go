// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// The dead-letter queue is a JetStream stream, SCIMRELAY_DLQ, with one
// subject per sink (scimrelay-dlq.<sink>). A dead letter is the event as it
// was (CloudEvents binary mode) plus headers saying why it is there. Being in
// JetStream, it is shared by every worker and the admin API of any role.
const (
	dlqStream       = "SCIMRELAY_DLQ"
	dlqSubjectRoot  = "scimrelay-dlq."
	dlqRetention    = 30 * 24 * time.Hour
	hdrDLQStatus    = "Scimrelay-Dlq-Status"
	hdrDLQError     = "Scimrelay-Dlq-Error"
	hdrDLQClass     = "Scimrelay-Dlq-Error-Class"
	hdrDLQAttempts  = "Scimrelay-Dlq-Attempts"
	hdrDLQTime      = "Scimrelay-Dlq-Time"
	hdrDLQSubject   = "Scimrelay-Dlq-Subject"    // the event's NATS subject
	hdrDLQStreamSeq = "Scimrelay-Dlq-Stream-Seq" // the event's sequence in the event stream
	maxErrorInQueue = 1024
)

// DeadLetter is an event a sink gave up on.
type DeadLetter struct {
	ID      string `json:"id"` // the event id, also what redrive takes
	Type    string `json:"type"`
	Subject string `json:"subject"`
	Tenant  string `json:"tenant"`
	Status  int    `json:"status"` // last HTTP status, 0 when none
	Error   string `json:"error"`
	// ErrorClass says in a word why the last attempt got no answer, when
	// it has no status (Attempt.ErrorClass); empty for one dead-lettered
	// before 2026-12-04.
	ErrorClass string    `json:"error_class,omitempty"`
	Attempts   int       `json:"attempts"`
	Time       time.Time `json:"time"` // when it was dead-lettered
	EventTime  time.Time `json:"event_time"`
	seq        uint64    // in the dead-letter stream
	queue      string    // the sink whose queue holds it
	from       origin    // where its event came from
}

// origin is what a dead letter keeps of where its event came from, for a
// redrive to check that the relay published it: the relay's signature
// (events.SignatureHeader; "" when the event was not signed), and its
// sequence in the event stream (0 when not known).
type origin struct {
	sig string
	seq uint64
}

type deadLetters struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	// trust says which dead letters hold an event the relay published:
	// the workers write the queue, and may write anything there.
	trust *events.Trust
}

func ensureDLQ(ctx context.Context, js jetstream.JetStream, replicas int, trust *events.Trust) (*deadLetters, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        dlqStream,
		Description: "scimrelay dead letters, one subject per sink",
		Subjects:    []string{dlqSubjectRoot + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      dlqRetention,
		Duplicates:  10 * time.Minute,
		Replicas:    max(replicas, 1),
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", dlqStream, err)
	}
	return &deadLetters{js: js, stream: st, trust: trust}, nil
}

// put dead-letters an event for a sink. It reports whether the queue
// already had it: one dead letter per sink and event and attempt count,
// even if a worker crashes between putting it and acknowledging the event,
// or the event comes again after a lost acknowledgement.
// from is where the event came from, which the dead letter keeps for a
// redrive to check.
func (d *deadLetters) put(ctx context.Context, sink string, e *event.Event, from origin, res Result, attempts int) (already bool, err error) {
	return d.putAs(ctx, sink, e, from, res, attempts, deadLetterID(sink, e.ID(), attempts))
}

// deadLetterID is the message id of a sink's dead letter of the message
// with id msgID (an event's id, which the relay also gives its message):
// the queue drops a second copy of a dead letter by it. The sink is part
// of it because the queue is one stream for every sink, and drops copies
// across its subjects: without it, of the sinks giving up on one message,
// only the first would keep a dead letter.
func deadLetterID(sink, msgID string, attempts int) string {
	return sink + "." + msgID + "." + strconv.Itoa(attempts)
}

// putAs is put with the message id id, by which JetStream drops a copy.
func (d *deadLetters) putAs(ctx context.Context, sink string, e *event.Event, from origin, res Result, attempts int, id string) (already bool, err error) {
	ack, err := d.putAck(ctx, sink, e, from, res, attempts, id)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

// putAck is putAs, returning the queue's acknowledgement.
func (d *deadLetters) putAck(ctx context.Context, sink string, e *event.Event, from origin, res Result, attempts int, id string) (*jetstream.PubAck, error) {
	return d.publish(ctx, sink, e, DeadLetter{Status: res.Status, Error: errText(res.Err), ErrorClass: errorClass(res), Attempts: attempts, Time: time.Now(), from: from}, id)
}

// moveToEnd puts a dead letter again at the end of the queue, as it was
// (status, error, attempts, time), and removes it from where it was.
func (d *deadLetters) moveToEnd(ctx context.Context, sink string, dl DeadLetter, e *event.Event) error {
	// Its own id: the dead letter's would be dropped as a copy of itself.
	id := deadLetterID(sink, e.ID(), dl.Attempts) + ".moved-from." + strconv.FormatUint(dl.seq, 10)
	put := func(id string) (*jetstream.PubAck, error) { return d.publish(ctx, sink, e, dl, id) }
	ack, err := put(id)
	if err != nil {
		return err
	}
	return d.replaced(ctx, dl, ack, put, id)
}

// replaced removes dl, which a redrive has just put again (ack: the
// queue's acknowledgement of that put, with the message id id; put puts
// it once more). Another relay may have raced it (a tenant's purge, whose
// wait is for its own relay's jobs; a redrive of the same dead letter,
// whose put has the same id, so that the second is dropped as a copy).
// The queue holds a replacement of dl at every moment dl is gone, until
// whoever finds dl gone takes back its own: a purge that finds dl gone
// reads on, and must find there whatever will stay.
//   - the put was dropped as a copy: the one the acknowledgement names is
//     the other redrive's, which that one takes back on finding dl gone, so
//     it is put again under an id of this redrive's alone, before dl is
//     removed (after, a purge that found dl gone could read the queue in
//     between and miss it; and a removal whose answer was lost would leave
//     none; with an id every dropped redrive shares, a third redrive would
//     take a second's for its own: TestThreeRedrivesKeepTheDeadLetter);
//   - the removal succeeds: this redrive's put stays, and the other's, if
//     it was dropped as a copy, is taken back;
//   - dl is gone already: this redrive's put is taken back (a purge said
//     it deleted the dead letter; another redrive's removal keeps its
//     own), and errDeadLetterGone says so.
func (d *deadLetters) replaced(ctx context.Context, dl DeadLetter, ack *jetstream.PubAck, put func(id string) (*jetstream.PubAck, error), id string) error {
	var other uint64 // the other redrive's put, when this one's was dropped
	if ack.Duplicate {
		own, err := put(id + ".kept." + uuid.NewString())
		if err != nil {
			return fmt.Errorf("putting again a dead letter another redrive may take back: %w", err)
		}
		other, ack = ack.Sequence, own
	}
	err := d.remove(ctx, dl)
	switch {
	case err == nil && other != 0:
		return d.takeBack(ctx, other)
	case err == nil:
		return nil
	case !deletedAlready(err):
		return err
	}
	if err := d.takeBack(ctx, ack.Sequence); err != nil {
		return err
	}
	return errDeadLetterGone
}

// takeBack deletes the dead letter at seq, gone already being as good.
func (d *deadLetters) takeBack(ctx context.Context, seq uint64) error {
	if err := d.stream.DeleteMsg(ctx, seq); err != nil && !deletedAlready(err) {
		return fmt.Errorf("taking back a dead letter put again: %w", err)
	}
	return nil
}

// deletedAlready reports whether err, of a deletion of a message, says
// the message was not there (JetStream answers "no message found", as a
// failed deletion; a worker may not read the queue's messages one by one
// to tell).
func deletedAlready(err error) bool {
	if !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		return false
	}
	// "no message found" below the stream's first sequence; a sequence
	// deleted inside a block that holds others answers JSSequenceNotFoundErr
	// (err_code 10043, "sequence N not found"), which nats.go gives as text.
	msg := err.Error()
	return strings.Contains(msg, "no message found") || strings.Contains(msg, "err_code=10043")
}

// errDeadLetterGone: the dead letter a redrive put again was deleted
// meanwhile (a tenant's purge, another process's redrive), and so was the
// one put in its place.
var errDeadLetterGone = errors.New("the dead letter was deleted meanwhile")

// publish adds e to a sink's queue with what dl says of its deliveries.
func (d *deadLetters) publish(ctx context.Context, sink string, e *event.Event, dl DeadLetter, id string) (*jetstream.PubAck, error) {
	msg, err := events.ToMsg(*e)
	if err != nil {
		return nil, err
	}
	msg.Header.Set(hdrDLQSubject, msg.Subject)
	msg.Subject = dlqSubjectRoot + sink
	if dl.from.sig != "" {
		// It verifies over the event as ToMsg encodes it again: the
		// headers the signature covers are the event's attributes.
		msg.Header.Set(events.SignatureHeader, dl.from.sig)
	}
	if dl.from.seq != 0 {
		msg.Header.Set(hdrDLQStreamSeq, strconv.FormatUint(dl.from.seq, 10))
	}
	msg.Header.Set(hdrDLQStatus, strconv.Itoa(dl.Status))
	msg.Header.Set(hdrDLQError, truncate(dl.Error, maxErrorInQueue))
	if dl.ErrorClass != "" {
		msg.Header.Set(hdrDLQClass, dl.ErrorClass)
	}
	msg.Header.Set(hdrDLQAttempts, strconv.Itoa(dl.Attempts))
	msg.Header.Set(hdrDLQTime, dl.Time.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(nats.MsgIdHdr, id)
	ack, err := d.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("dead-lettering event %s: %w", e.ID(), err)
	}
	return ack, nil
}

// putRaw dead-letters a message that is not a valid event, as it came,
// but for the headers of NATS's own (Nats-*): they say how JetStream is to
// store a publish (its id, an expected stream or last sequence, a rollup,
// a time to live) or where the message was, and copied they would make
// the queue drop the dead letter as another sink's, or refuse it. Its
// message id is deadLetterID(sink, the message's own id, 0); a message
// without one gets none, and a copy of its dead letter is not told apart.
// It reports whether the queue already had it.
func (d *deadLetters) putRaw(ctx context.Context, sink string, m jetstream.Msg, cause error) (already bool, err error) {
	msg := nats.NewMsg(dlqSubjectRoot + sink)
	for k, v := range m.Headers() {
		if !strings.HasPrefix(strings.ToLower(k), "nats-") {
			msg.Header[k] = v
		}
	}
	if id := m.Headers().Get(nats.MsgIdHdr); id != "" {
		msg.Header.Set(nats.MsgIdHdr, deadLetterID(sink, id, 0))
	}
	msg.Header.Set(hdrDLQSubject, m.Subject())
	msg.Header.Set(hdrDLQError, truncate(cause.Error(), maxErrorInQueue))
	msg.Header.Set(hdrDLQAttempts, "0")
	msg.Header.Set(hdrDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
	msg.Data = m.Data()
	ack, err := d.js.PublishMsg(ctx, msg)
	if err != nil {
		return false, fmt.Errorf("dead-lettering a message on %s: %w", m.Subject(), err)
	}
	return ack.Duplicate, nil
}

// toDeadLetter reads a dead letter and, when it holds a valid event the
// relay published (d.trust), the event; stored is when the queue stored it.
func (d *deadLetters) toDeadLetter(ctx context.Context, m jetstream.Msg, seq uint64, stored time.Time) (DeadLetter, *event.Event) {
	h := m.Headers()
	dl := DeadLetter{Subject: h.Get(hdrDLQSubject), Error: h.Get(hdrDLQError), ErrorClass: h.Get(hdrDLQClass), seq: seq, from: origin{sig: h.Get(events.SignatureHeader)}}
	dl.from.seq, _ = strconv.ParseUint(h.Get(hdrDLQStreamSeq), 10, 64)
	dl.Status, _ = strconv.Atoi(h.Get(hdrDLQStatus))
	dl.Attempts, _ = strconv.Atoi(h.Get(hdrDLQAttempts))
	dl.Time, _ = time.Parse(time.RFC3339Nano, h.Get(hdrDLQTime))
	e, err := events.FromMsg(h.Get(hdrDLQSubject), h, m.Data())
	if err != nil {
		return dl, nil
	}
	dl.ID, dl.Type, dl.Tenant, dl.EventTime, dl.Subject = e.ID(), e.Type(), events.Tenant(e), e.Time(), e.Subject()
	if err := d.trust.VerifyDeadLetter(stored, h, m.Data()); err != nil {
		// An unsigned one whose event the stream holds where it came
		// from, stored before the relay began to sign, was taken as the
		// relay's (the events waiting when a front end that signs first
		// started, or a replay of earlier ones); so is a signed one whose
		// key was retired before the queue stored it, when the stream
		// holds its event where it came from, stored before the
		// retirement (scimrelay keys rotate events while it waited).
		unsigned := dl.from.sig == "" && d.trust.StoredUnsigned(ctx, dl.from.seq, h, m.Data())
		retired := dl.from.sig != "" && errors.Is(err, events.ErrUnknownKey) && d.trust.StoredPublished(ctx, dl.from.seq, h, m.Data())
		if !unsigned && !retired {
			// Listed, and never delivered: its error says why.
			dl.Error = "not redriven, " + err.Error() + "; the error it was dead-lettered with: " + dl.Error
			return dl, nil
		}
	}
	return dl, &e
}

// each calls f for each of a sink's dead letters (sink ">": of every
// queue, in the order they were stored) after the one at sequence after
// (0: from the first), oldest first, up to the last one there was when it
// started; total is told how many that is at most.
func (d *deadLetters) each(ctx context.Context, sink string, after uint64, batch int, total func(uint64), f func(DeadLetter, *event.Event) error) error {
	if after == math.MaxUint64 {
		return nil // nothing follows the last sequence there can be (after+1 would be 0: from the first)
	}
	cfg := jetstream.ConsumerConfig{FilterSubject: dlqSubjectRoot + sink, DeliverPolicy: jetstream.DeliverAllPolicy}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	return readRange(ctx, d.stream, cfg, batch, total, func(m jetstream.Msg, seq uint64) error {
		var stored time.Time
		if meta, err := m.Metadata(); err == nil {
			stored = meta.Timestamp
		}
		dl, e := d.toDeadLetter(ctx, m, seq, stored)
		dl.queue = strings.TrimPrefix(m.Subject(), dlqSubjectRoot)
		return f(dl, e)
	})
}

// remove deletes a dead letter once it has been delivered.
func (d *deadLetters) remove(ctx context.Context, dl DeadLetter) error {
	return d.stream.DeleteMsg(ctx, dl.seq)
}

// counts returns how many dead letters each queue holds, by sink name,
// configured or not; a queue that is empty is left out.
func (d *deadLetters) counts(ctx context.Context) (map[string]uint64, error) {
	info, err := d.stream.Info(ctx, jetstream.WithSubjectFilter(dlqSubjectRoot+">"))
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(info.State.Subjects))
	for subject, n := range info.State.Subjects {
		out[strings.TrimPrefix(subject, dlqSubjectRoot)] = n
	}
	return out, nil
}

// count returns how many dead letters a sink has.
func (d *deadLetters) count(ctx context.Context, sink string) (uint64, error) {
	info, err := d.stream.Info(ctx, jetstream.WithSubjectFilter(dlqSubjectRoot+sink))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[dlqSubjectRoot+sink], nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// truncate shortens a text for a record or a header: to its first n bytes
// and "..." when it is longer, cut before a character the n bytes would
// split, so that it stays UTF-8. It is scim.Truncate, which sinks may not
// import.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}
