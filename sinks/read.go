// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/scimrelay/scimrelay/relay/events"
)

// errStop ends a readRange early without an error.
var errStop = errors.New("stop reading")

// Reading a range of a stream is done through an ephemeral consumer that
// holds no state on the server once read and says how many messages it
// selects, so that a reader never holds more than one batch and can tell
// "nothing is left" from "JetStream did not answer": an empty fetch while
// messages remain is an error, never taken for the end.
const (
	readWait     = 5 * time.Second // longest wait for a batch JetStream says is there
	readEmptyMax = 3               // empty fetches in a row before giving up
	readInactive = 2 * time.Minute // the consumer goes away if its reader dies
)

// readRange calls f for each message cfg selects from stream, in stream
// order, up to the stream's last message when it starts (messages added
// later, such as dead letters put back by a redrive, are not read), batch
// messages at a time. total, when not nil, is told first how many messages
// the range holds at most. f may return errStop to end early.
func readRange(ctx context.Context, stream jetstream.Stream, cfg jetstream.ConsumerConfig, batch int,
	total func(uint64), f func(m jetstream.Msg, seq uint64) error) error {
	name := stream.CachedInfo().Config.Name
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", name, err)
	}
	until := info.State.LastSeq
	cfg.AckPolicy = jetstream.AckNonePolicy
	cfg.InactiveThreshold = readInactive
	cfg.MemoryStorage, cfg.Replicas = true, 1 // a reader's position is worth no disk
	cons, err := stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", name, err)
	}
	defer events.DeleteReader(stream, cons)
	consumer, pending := cons.CachedInfo().Name, cons.CachedInfo().NumPending
	if total != nil {
		total(pending)
	}
	for empty := 0; pending > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		msgs, err := cons.Fetch(int(min(pending, uint64(batch))), jetstream.FetchMaxWait(readWait))
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", name, err)
		}
		n := 0
		for m := range msgs.Messages() {
			meta, err := m.Metadata()
			if err == nil && (meta.Stream != name || meta.Consumer != consumer) {
				// Not this reader's: a client that may make consumers can
				// have one deliver to its inbox, whose name nats.go draws
				// from values a client allowed _INBOX.> sees.
				continue
			}
			n++
			if err != nil {
				return fmt.Errorf("reading stream %s: %w", name, err)
			}
			if meta.Sequence.Stream > until {
				return nil
			}
			if err := f(m, meta.Sequence.Stream); err != nil {
				if errors.Is(err, errStop) {
					return nil
				}
				return err
			}
			pending = meta.NumPending
		}
		if err := msgs.Error(); err != nil {
			return fmt.Errorf("reading stream %s: %w", name, err)
		}
		if n > 0 {
			empty = 0
			continue
		}
		// Nothing came: messages may have expired or been removed, or
		// JetStream did not answer. The consumer knows which.
		ci, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", name, err)
		}
		if pending = ci.NumPending; pending == 0 {
			return nil
		}
		if empty++; empty >= readEmptyMax {
			return fmt.Errorf("reading stream %s: %d messages wait but none arrived in %s", name, pending, readEmptyMax*readWait)
		}
	}
	return nil
}

// readNext returns up to n of stream's messages on subjects filter, from
// sequence from on, in stream order, in one request (JetStream's batched
// direct get, which needs the stream's allow_direct); none when the stream
// holds no more of them. On an error it returns what came before it. One
// message is a plain direct get: a batch of one took about ten times as
// long (BenchmarkReadBack/batch=0). A batch that ends without its
// end-of-batch marker (the wait ran out, or ctx ended) is an error, never
// the end: the library's iterator ends silently then, and a parked
// resource taken for caught up would be unparked past events it never
// delivered.
func readNext(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, filter string, from uint64, n int) ([]*jetstream.RawStreamMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, readWait)
	defer cancel()
	name := stream.CachedInfo().Config.Name
	if n == 1 {
		m, err := getMsg(ctx, stream, from, jetstream.WithGetMsgSubject(filter))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("reading stream %s: %w", name, err)
		}
		return []*jetstream.RawStreamMsg{m}, nil
	}
	msgs, err := jetstreamext.GetBatch(ctx, js, name, n, jetstreamext.GetBatchSeq(from), jetstreamext.GetBatchSubject(filter))
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", name, err)
	}
	out := make([]*jetstream.RawStreamMsg, 0, n)
	for m, err := range msgs {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			return out, nil
		}
		if err == nil {
			err = asTheServerSays(m)
		}
		if err != nil {
			return out, fmt.Errorf("reading stream %s: %w", name, err)
		}
		out = append(out, m)
	}
	if err := ctx.Err(); err != nil {
		return out, fmt.Errorf("reading stream %s: no end of batch: %w", name, err)
	}
	return out, nil
}

// getMsg is stream.GetMsg, with the sequence, subject and time the server
// said (asTheServerSays).
func getMsg(ctx context.Context, stream jetstream.Stream, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	m, err := stream.GetMsg(ctx, seq, opts...)
	if err != nil || !stream.CachedInfo().Config.AllowDirect { // else the library read them from the server's JSON
		return m, err
	}
	return m, asTheServerSays(m)
}

// asTheServerSays sets a direct get's message's sequence, subject and time
// to what the server said of it. The server adds them as headers after the
// message's own, and nats.go reads the first of each: a message stored
// with headers of those names (a client that may write a stream of the
// account chooses its headers, and can have the event stream store a
// copy) would otherwise pass for one stored earlier, before the relay
// signed (events.Trust), or move a parked resource's reading past its
// events. Such a message keeps its own headers, which events.Published
// refuses.
func asTheServerSays(m *jetstream.RawStreamMsg) error {
	last := func(name string) (string, error) {
		v := m.Header.Values(name)
		if len(v) == 0 {
			return "", fmt.Errorf("a direct get's answer without %s", name)
		}
		return v[len(v)-1], nil
	}
	seq, err := last(jetstream.SequenceHeader)
	if err != nil {
		return err
	}
	if m.Sequence, err = strconv.ParseUint(seq, 10, 64); err != nil {
		return fmt.Errorf("a direct get's answer with %s %q", jetstream.SequenceHeader, seq)
	}
	if m.Subject, err = last(jetstream.SubjectHeader); err != nil {
		return err
	}
	at, err := last(jetstream.TimeStampHeaer)
	if err != nil {
		return err
	}
	if m.Time, err = time.Parse(time.RFC3339Nano, at); err != nil {
		return fmt.Errorf("a direct get's answer with %s %q", jetstream.TimeStampHeaer, at)
	}
	return nil
}
