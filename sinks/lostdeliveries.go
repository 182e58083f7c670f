// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// A message the consumer delivered can be lost on its way to this worker:
// the NATS node the worker is connected to stops, or the consumer's leader
// changes, while events flow. The server counts it as delivered and sends
// it again only after the ack wait (a minute), and a later event of its
// resource taken meanwhile would go out before it. So a partition follows
// the consumer's delivery numbers (followDeliveryLocked): on a number
// skipped it takes nothing more, lets its lanes finish what they took and
// takes the partition again from the consumer's ack floor; and when
// nothing follows the lost message, a look at the consumer every
// pullExpiry finds it (findLostTail). README, Deploying and scaling out.

// errDeliveryGap ends consume when a message the consumer delivered never
// reached this worker (followDeliveryLocked).
var errDeliveryGap = errors.New("a message delivered by the consumer never reached this worker")

// followDeliveryLocked counts a message of delivery sequence d and
// reports whether enqueue takes it: not once a delivery was skipped (see
// nextDelivery). On the message that shows the gap it returns the
// delivery expected, for the warning; nothing else does.
//
// Only a number past the one expected is a gap. A lower one is the
// consumer numbering afresh (a reset, or a new leader whose replicated
// state is behind what the old one sent, which then sends again): it is
// followed from there. The pin does not matter: a new consumer leader
// pins anew (the client's next pull is refused, "pin ID mismatch", and
// pinned again), and a message the old leader sent then is lost all the
// same (TestScaleOutEarly). The first message after the partition was
// taken is checked against the consumer's count read then (after a
// reset, the reset's answer).
//
// A false gap (a delivery that did reach a puller: one of a worker of an
// earlier release, which takes no claim, in a rolling upgrade) costs a
// pause: the lanes finish what they took, the pin is released and taken
// again, and the consumer is reset to its ack floor; what this worker
// delivered since is known to its marks and acknowledged, not sent again.
func (p *partition) followDeliveryLocked(d uint64) (take bool, expected uint64) {
	if p.gap {
		return false, 0
	}
	if next := p.nextDelivery; next > 0 && d > next {
		p.gap = true
		return false, next
	}
	p.nextDelivery = d + 1
	return true, 0
}

// tailLooksForGap is how many looks in a row (findLostTail), a pullExpiry
// apart, find the consumer counting more deliveries to this worker than
// came, with nothing coming between, before the missing ones are taken as
// lost: two whole intervals, so that a message still on its way or
// waiting in the client while enqueue is slow is not.
const tailLooksForGap = 3

// findLostTail finds messages delivered to this worker and lost in
// transit when no later one comes to show the gap (followDeliveryLocked):
// the consumer, pinned to this worker (the pin of the messages it last
// took), counts deliveries past those received, and none comes for two
// pullExpiry intervals. JetStream would send them again only after the
// ack wait; the partition is taken again from its ack floor instead, as
// for a gap. A false finding costs what a false gap does.
//
// A pin this worker received nothing under is not taken for its own: it
// may be a worker's of an earlier release (no claim), which must not be
// released under it. A lost message under such a pin, one a new consumer
// leader gave the worker's pull with that very message, is found once the
// pin has expired (pinnedTTL, no pull renewing it): a consumer pinned to
// nobody that counts deliveries past those received holds them in no
// worker's hands, which is what acquire takes for a previous owner's loss
// (waitForPin resets such a consumer). About 20 s instead of the ack
// wait's minute (a chaos run: 53-60 s late).
func (p *partition) findLostTail(info *jetstream.ConsumerInfo, pin string) {
	p.mu.Lock()
	next := p.nextDelivery
	ahead := (pin == "" || pin == p.pin) && !p.gap && next > 0 && info.Delivered.Consumer >= next && !p.receiving.Load()
	switch {
	case !ahead:
		p.tailLooks = 0
	case p.tailLooks > 0 && p.tailExpected == next:
		p.tailLooks++
	default:
		p.tailLooks, p.tailExpected = 1, next
	}
	lost := p.tailLooks >= tailLooksForGap
	if lost {
		p.gap, p.tailLooks, p.gapPin = true, 0, pin
	}
	p.mu.Unlock()
	if !lost {
		return
	}
	p.w.log.Warn("messages the partition's consumer delivered never reached this worker (NATS lost them in transit); taking the partition again from its ack floor once the events taken are delivered",
		"partition", p.n, "consumer", p.name, "expected_delivery", next, "delivered", info.Delivered.Consumer)
	p.endConsume(errDeliveryGap)
}
