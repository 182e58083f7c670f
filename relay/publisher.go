// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Outbox is what the publisher needs from the store: committed events in
// commit order, removable once JetStream has them.
type Outbox interface {
	ReadOutbox(after uint64, limit int) ([]OutboxRow, error)
	DeleteOutbox(keys []uint64) error
	OutboxReady() <-chan struct{}
}

// PublisherOptions tunes a Publisher; the zero value works.
type PublisherOptions struct {
	// Window is how many events are in flight to JetStream at once.
	Window int
	// AckTimeout bounds the wait for one window's acknowledgements.
	AckTimeout time.Duration
	// MaxBackoff caps the wait between attempts while NATS is away.
	MaxBackoff time.Duration
	// Observe, when set, is called for every event JetStream acknowledged,
	// with the time it was committed (for the publish-lag metric).
	Observe func(committed time.Time)
}

// Publisher drains the outbox to JetStream: in commit order (so in each
// tenant's sequence order), with Nats-Msg-Id set to the event id so that a
// re-publish after a crash is deduplicated, deleting rows only after the
// PubAck. It never blocks a SCIM request: the store commits and signals, and
// the publisher catches up.
type Publisher struct {
	outbox Outbox
	js     jetstream.JetStream
	log    *slog.Logger
	o      PublisherOptions

	healthy atomic.Bool
}

// NewPublisher returns a publisher from outbox to js.
func NewPublisher(outbox Outbox, js jetstream.JetStream, log *slog.Logger, o PublisherOptions) *Publisher {
	if o.Window <= 0 {
		o.Window = 512
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	return &Publisher{outbox: outbox, js: js, log: log, o: o}
}

// Healthy reports whether the last attempt to publish succeeded.
func (p *Publisher) Healthy() bool { return p.healthy.Load() }

// Run publishes until ctx ends. While NATS is away it retries with capped
// exponential backoff, saying so in the log once per outage and when it
// recovers.
func (p *Publisher) Run(ctx context.Context) error {
	p.healthy.Store(true)
	backoff := 100 * time.Millisecond
	failingSince := time.Time{}
	// A periodic wake-up covers a signal lost to a full channel between a
	// drain that found nothing and the next commit.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n, err := p.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			p.healthy.Store(false)
			if failingSince.IsZero() {
				failingSince = time.Now()
				p.log.Warn("publishing events to NATS failed; SCIM keeps answering and events wait in the outbox", "err", err, "retry_in", backoff)
			} else {
				p.log.Debug("publishing events to NATS still failing", "err", err, "retry_in", backoff)
			}
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(backoff*2, p.o.MaxBackoff)
			continue
		}
		if !failingSince.IsZero() {
			p.log.Info("publishing events to NATS again", "outage", time.Since(failingSince).Round(time.Millisecond))
			failingSince = time.Time{}
		}
		p.healthy.Store(true)
		backoff = 100 * time.Millisecond
		if n > 0 {
			continue // more may be waiting
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.outbox.OutboxReady():
		case <-tick.C:
		}
	}
}

// drain publishes what the outbox holds, one window at a time, and returns
// how many events it published.
func (p *Publisher) drain(ctx context.Context) (int, error) {
	total := 0
	for {
		rows, err := p.outbox.ReadOutbox(0, p.o.Window)
		if err != nil {
			return total, fmt.Errorf("reading the outbox: %w", err)
		}
		if len(rows) == 0 {
			return total, nil
		}
		n, err := p.publishWindow(ctx, rows)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// publishWindow sends rows asynchronously and waits for every ack. Rows are
// deleted only once acknowledged. A failure stops the window: later rows are
// not sent, so that after NATS returns events still reach the stream in
// commit order (the ones already acked stay; their re-publish would be
// deduplicated anyway).
func (p *Publisher) publishWindow(ctx context.Context, rows []OutboxRow) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(rows))
	var sendErr error
	for _, row := range rows {
		msg, err := events.ToMsg(row.Event)
		if err != nil {
			// A row that cannot become a message would block the outbox
			// forever; it cannot happen for events the store built, so
			// treat it as the bug it is and stop.
			return 0, fmt.Errorf("encoding outbox row %d (event %s): %w", row.Key, row.Event.ID(), err)
		}
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithExpectStream(events.StreamName))
		if err != nil {
			sendErr = fmt.Errorf("publishing event %s: %w", row.Event.ID(), err)
			break
		}
		futures = append(futures, f)
	}
	deadline := time.NewTimer(p.o.AckTimeout)
	defer deadline.Stop()
	acked := make([]uint64, 0, len(futures))
	var ackErr error
wait:
	for i, f := range futures {
		select {
		case <-f.Ok():
			acked = append(acked, rows[i].Key)
			if p.o.Observe != nil {
				p.o.Observe(rows[i].Event.Time())
			}
		case err := <-f.Err():
			ackErr = fmt.Errorf("publishing event %s: %w", rows[i].Event.ID(), err)
			break wait
		case <-deadline.C:
			ackErr = fmt.Errorf("no acknowledgement from JetStream within %s", p.o.AckTimeout)
			break wait
		case <-ctx.Done():
			ackErr = ctx.Err()
			break wait
		}
	}
	if len(acked) > 0 {
		if err := p.outbox.DeleteOutbox(acked); err != nil {
			return len(acked), fmt.Errorf("deleting published events from the outbox: %w", err)
		}
	}
	if ackErr != nil {
		return len(acked), ackErr
	}
	return len(acked), sendErr
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
