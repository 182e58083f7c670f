// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// An acknowledgement the connection could not send (natsbus buffers
// nothing while it reconnects, so a publish then fails at once) would
// leave its event unacknowledged until the consumer's AckWait (a minute),
// holding the consumer's ack floor back: a partition handed over in that
// time is reset to the floor, and its next owner, which knows nothing of
// what this worker delivered, sends everything above it again (a chaos
// review: 394 events sent twice after one NATS node's restart and a
// worker's clean stop). So the worker keeps such messages and sends their
// acknowledgements again at every heartbeat and while it hands a
// partition over, until they go.
//
// An acknowledgement the connection took and then lost with it (the node
// stopped before reading it), or one sent while the consumer had no
// leader, fails nowhere, and holds the floor back the same way (chaos
// reviews: 68 events sent twice after a node's loss and a clean stop; 170
// after a consumer's floor stayed behind for 73 s and another worker then
// took the partition from it). So each partition also keeps the
// acknowledgements it sent, the latest maxSentAcks of them (sentAcks),
// and publishes those above the consumer's ack floor again when the
// consumer still waits for some of this worker's acknowledgements: while
// it runs, after a few looks (findLostAcks), as it hands the partition
// over (awaitAcks), and once, without waiting, as it stops hard
// (resendOnHardStop). One that had landed is ignored by the
// server, one that was lost lands now.
// Every acknowledgement kept is one the worker decided to send; what it
// leaves unacknowledged on purpose (a held lane's events, those handed
// over) never enters it. README, Deploying and scaling out.

// maxLostAcks bounds the messages kept: past it an acknowledgement that
// fails is given up (its event is sent again after AckWait, as before).
const maxLostAcks = 10_000

// lostAcks are the messages whose acknowledgement failed, oldest first.
type lostAcks struct {
	mu   sync.Mutex
	msgs []jetstream.Msg
}

// ack acknowledges m, keeping it to be acknowledged again when that fails.
func (w *worker) ack(m jetstream.Msg) {
	err := m.Ack()
	if err == nil {
		return
	}
	w.lostAcks.mu.Lock()
	kept := len(w.lostAcks.msgs) < maxLostAcks
	if kept {
		w.lostAcks.msgs = append(w.lostAcks.msgs, m)
	}
	w.lostAcks.mu.Unlock()
	w.ackFailures.failed(time.Now(), 0, err.Error(), "subject", m.Subject(), "kept", kept)
}

// resendAcks sends again the acknowledgements that failed, in order,
// keeping those from the first that fails again on; it reports how many
// are left.
func (w *worker) resendAcks() int {
	w.lostAcks.mu.Lock()
	msgs := w.lostAcks.msgs
	w.lostAcks.msgs = nil
	w.lostAcks.mu.Unlock()
	if len(msgs) == 0 {
		return 0
	}
	sent := 0
	for _, m := range msgs {
		if m.Ack() != nil {
			break
		}
		sent++
	}
	w.lostAcks.mu.Lock()
	w.lostAcks.msgs = append(msgs[sent:len(msgs):len(msgs)], w.lostAcks.msgs...)
	left := len(w.lostAcks.msgs)
	w.lostAcks.mu.Unlock()
	if sent > 0 {
		w.log.Info("acknowledgements that had failed were sent", "sent", sent, "left", left)
	}
	return left
}

// maxSentAcks bounds the acknowledgements a partition keeps to send again
// (sentAcks). A lost one matters until AckWait (a minute) has the server
// deliver its message again, which this worker then acknowledges as a
// repeat; within that, the acknowledgements sent after it must not have
// pushed it out: 4096 covers about 68 a second a partition, 1,100 events a
// second a sink of 16 partitions, for the whole minute. Past that a lost
// acknowledgement is not found again, and its partition's next owner
// sends again what is above it, as before. At 56 bytes an entry a full
// ring is 224 KiB, 3.5 MiB for a sink's 16 partitions; a partition holds
// only as many as it acknowledged.
const maxSentAcks = 4096

// firstAckResend is how long a hand-over waits for its acknowledgements
// before it sends them again, a wait that doubles at each sending: those
// still on their way land within it, and a consumer held back by a
// message not kept here (a termination, or one pushed out of the ring)
// does not have thousands sent again every few milliseconds.
const firstAckResend = 250 * time.Millisecond

// sentAck is an acknowledgement sent for the message at stream sequence
// seq: its subject is prefix.dc.seq.dseq.ts.pending, the server's
// numbering of the delivery, kept as numbers rather than as the subject
// (about 90 bytes) that the partition's acknowledgements share most of.
// dc is 0 when the subject has another form: prefix is then all of it.
type sentAck struct {
	seq, dc, dseq, pending uint64
	ts                     int64
	prefix                 string
}

// subject is the acknowledgement's subject.
func (a sentAck) subject() string {
	if a.dc == 0 {
		return a.prefix
	}
	b := make([]byte, 0, len(a.prefix)+64)
	b = append(b, a.prefix...)
	for _, n := range []uint64{a.dc, a.seq, a.dseq} {
		b = strconv.AppendUint(append(b, '.'), n, 10)
	}
	b = strconv.AppendInt(append(b, '.'), a.ts, 10)
	b = strconv.AppendUint(append(b, '.'), a.pending, 10)
	return string(b)
}

// sentAcks are the latest acknowledgements a partition sent, or tried to:
// a ring of at most maxSentAcks.
type sentAcks struct {
	mu     sync.Mutex
	ring   []sentAck // grows to maxSentAcks, then next is overwritten
	next   int
	prefix string // the subjects' start last seen, which the entries share
}

// add keeps the acknowledgement of the message at stream sequence seq,
// whose subject is reply.
func (s *sentAcks) add(seq uint64, reply string) {
	if reply == "" {
		return // nothing to publish on (a message JetStream did not send)
	}
	a := sentAck{seq: seq, prefix: reply}
	// The server's subject ends in five numbers: dc.sseq.dseq.ts.pending
	// (after $JS.ACK.<stream>.<consumer>, or the newer form's
	// $JS.ACK.<domain>.<account>.<stream>.<consumer>).
	rest, tail := reply, [5]string{}
	ok := true
	for i := 4; i >= 0 && ok; i-- {
		dot := strings.LastIndexByte(rest, '.')
		ok = dot > 0
		if ok {
			rest, tail[i] = rest[:dot], rest[dot+1:]
		}
	}
	if ok {
		dc, err1 := strconv.ParseUint(tail[0], 10, 64)
		sseq, err2 := strconv.ParseUint(tail[1], 10, 64)
		dseq, err3 := strconv.ParseUint(tail[2], 10, 64)
		ts, err4 := strconv.ParseInt(tail[3], 10, 64)
		pending, err5 := strconv.ParseUint(tail[4], 10, 64)
		if err1 == nil && err2 == nil && err3 == nil && err4 == nil && err5 == nil && dc > 0 && sseq == seq {
			a = sentAck{seq: seq, dc: dc, dseq: dseq, pending: pending, ts: ts, prefix: rest}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.dc > 0 {
		// The shared string, not a piece of reply (which would keep all
		// of it).
		if a.prefix != s.prefix {
			s.prefix = strings.Clone(a.prefix)
		}
		a.prefix = s.prefix
	}
	if len(s.ring) < maxSentAcks {
		s.ring = append(s.ring, a)
		return
	}
	s.ring[s.next] = a
	s.next = (s.next + 1) % maxSentAcks
}

// above returns the acknowledgements kept of messages above stream
// sequence floor.
func (s *sentAcks) above(floor uint64) []sentAck {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sentAck
	for _, a := range s.ring {
		if a.seq > floor {
			out = append(out, a)
		}
	}
	return out
}

// ackPayload is an acknowledgement's body.
var ackPayload = []byte("+ACK")

// resendSentAcks publishes again the partition's acknowledgements of
// messages above the consumer's ack floor, and waits (within ctx) for the
// server to have read them. jetstream.Msg.Ack refuses a message it
// acknowledged already, so they go as the plain publish it makes. It
// returns how many went.
func (p *partition) resendSentAcks(ctx context.Context, floor uint64) int {
	nc := p.w.js.Conn()
	sent := 0
	for _, a := range p.sentAcks.above(floor) {
		if nc.Publish(a.subject(), ackPayload) != nil {
			break // the connection is away: the next sending
		}
		sent++
	}
	if sent > 0 {
		_ = nc.FlushWithContext(ctx) // the consumer's info tells what landed
	}
	return sent
}

// hardStopResend bounds how long a hard stop waits for the acknowledgements
// it sends again to leave the connection (resendOnHardStop).
const hardStopResend = time.Second

// resendOnHardStop publishes once more, as a partition stops hard, the
// acknowledgements it sent of messages above the consumer's ack floor as
// last read (findHandedOver): those sent since, and any lost before. The
// server ignores one that had landed; the next owner, resetting the
// consumer to the floor, sends again what is above it, so each one that
// lands now is an event not sent twice. It waits at most hardStopResend
// for them to leave (a connection that is away takes none), and says at
// Info how many went.
func (p *partition) resendOnHardStop() {
	p.mu.Lock()
	floor := p.ackFloor
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), hardStopResend)
	defer cancel()
	if n := p.resendSentAcks(ctx, floor); n > 0 {
		p.w.log.Info("a partition stopped hard; its acknowledgements above the consumer's ack floor were sent again, so that its next owner does not send those events again",
			"partition", p.n, "sent_again", n, "ack_floor", floor)
	}
}

// unacknowledged returns what the consumer ci waits for, and how much of
// it is explained: kept, taken by this worker and not acknowledged yet
// (on purpose, or on its way), and unseen, sent by the server after the
// last message this worker received. More pending than both is
// acknowledgements this worker sent that did not land.
func (p *partition) unacknowledged(ci *jetstream.ConsumerInfo) (pending, kept, unseen int64) {
	p.mu.Lock()
	last := p.lastDelivery
	p.mu.Unlock()
	pending, kept = int64(ci.NumAckPending), max(int64(p.taken.Load())-int64(p.settled.Load()), 0)
	if ci.Delivered.Consumer > last {
		unseen = int64(ci.Delivered.Consumer - last)
	}
	return pending, kept, unseen
}

// ackLooksForResend is how many looks in a row (findLostAcks), a
// pullExpiry apart, find the consumer waiting for acknowledgements this
// worker sent before they are sent again: those on their way land well
// within two intervals.
const ackLooksForResend = 3

// findLostAcks sends again, while the partition runs, the acknowledgements
// it sent that did not land: one sent while the consumer had no leader (a
// NATS node stopping), or taken by the connection and lost with its node,
// fails nowhere, and would hold the consumer's ack floor back until the
// ack wait, when the server sends its event again and whoever then owns
// the partition (after a reset from the floor, anyone) may deliver it a
// second time (a chaos run: 170 events twice, 73 s after their first
// delivery). It sends them after ackLooksForResend looks that found the
// consumer waiting for more than this worker left unacknowledged, and
// again at twice as many looks each time while it still waits, so that a
// consumer held back by an acknowledgement not kept (sentAcks) is not
// sent thousands every few seconds. Only under this worker's pin.
func (p *partition) findLostAcks(info *jetstream.ConsumerInfo, pin string) {
	pending, kept, unseen := p.unacknowledged(info)
	p.mu.Lock()
	waiting := pin != "" && pin == p.pin && !p.gap && pending > kept+unseen
	if !waiting {
		p.ackLooks, p.ackResendAt = 0, p.w.t.ackLooks
		p.mu.Unlock()
		return
	}
	p.ackLooks++
	resend := p.ackLooks >= p.ackResendAt
	if resend {
		p.ackResendAt *= 2
	}
	p.mu.Unlock()
	if !resend {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
	defer cancel()
	if n := p.resendSentAcks(ctx, info.AckFloor.Stream); n > 0 {
		p.w.log.Info("the partition's consumer still waited for acknowledgements this worker sent (lost on the way to NATS): sent them again",
			"partition", p.n, "unacknowledged", pending, "left_on_purpose", kept, "never_received", unseen, "sent_again", n, "ack_floor", info.AckFloor.Stream)
	}
}

// ack acknowledges a message taken from the consumer, keeping the
// acknowledgement to send again should it not land (sentAcks).
func (p *partition) ack(m jetstream.Msg) {
	p.sentAcks.add(streamSeq(m), m.Reply())
	p.w.ack(m)
	p.settled.Add(1)
}
