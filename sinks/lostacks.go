// SPDX-License-Identifier: Apache-2.0

package sinks

import (
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
// partition over, until they go. An acknowledgement the connection took
// and then lost with it (the node stopped before reading it) is not seen
// here, and still has those events sent again (README, Deploying and
// scaling out).

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
