// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A partition's claim says which worker runs it. A worker takes the claim
// before it takes the partition's consumer, and lets go of it only once
// its hand-over is done: every delivery ended and every parked resource's
// record written. So no two workers ever deliver a partition's events at
// once, whether from the consumer or read back from the stream. The
// consumer's pin alone could not promise that: a pin comes with an event,
// and a worker reading parked resources back, having received none since
// it took the partition, holds no pin that would keep the next owner off.
//
// The claim is a key in the sink's parking bucket, claim.<partition>,
// written with the revision its writer read, so that of two workers
// taking it at once one fails. Nobody renews it: it stands while its
// holder is announced (as a member, or as leaving while it hands over),
// and a worker whose announcement is gone has let its lease lapse and
// delivers nothing more (membership.alive).

// claim names a partition's holder: the worker, and which of its runs of
// the partition (a worker that gives a partition up and gets it back runs
// it again while the first run may still be handing over).
type claim struct {
	Worker string `json:"worker"`
	Run    uint64 `json:"run"`
}

// errClaimHeld: another run, alive, holds the claim.
var errClaimHeld = errors.New("held by another worker")

func claimKey(partition int) string { return "claim." + strconv.Itoa(partition) }

// claim takes partition n's claim for mine and returns its revision and
// the holder it found (zero when the claim was free, mine when it was
// mine already). A claim whose holder still holds it (holds says) is not
// taken: errClaimHeld, with that holder.
func (pk *parking) claim(ctx context.Context, n int, mine claim, holds func(context.Context, claim) (bool, error)) (uint64, claim, error) {
	key := claimKey(n)
	body, err := json.Marshal(mine)
	if err != nil {
		return 0, claim{}, err
	}
	e, err := pk.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		rev, err := pk.kv.Create(ctx, key, body)
		if casConflict(err) {
			return 0, claim{}, errClaimHeld // taken since the read
		}
		if err != nil {
			return 0, claim{}, fmt.Errorf("claiming partition %d: %w", n, err)
		}
		return rev, claim{}, nil
	}
	if err != nil {
		return 0, claim{}, fmt.Errorf("reading partition %d's claim: %w", n, err)
	}
	var held claim
	if json.Unmarshal(e.Value(), &held) == nil {
		if held == mine {
			return e.Revision(), held, nil
		}
		alive, err := holds(ctx, held)
		if err != nil {
			return 0, held, fmt.Errorf("looking up partition %d's claim holder %s: %w", n, held.Worker, err)
		}
		if alive {
			return 0, held, errClaimHeld
		}
	} // an unreadable claim holds nothing
	rev, err := pk.kv.Update(ctx, key, body, e.Revision())
	if casConflict(err) {
		return 0, held, errClaimHeld
	}
	if err != nil {
		return 0, held, fmt.Errorf("claiming partition %d from %s: %w", n, held.Worker, err)
	}
	return rev, held, nil
}

// unclaim lets go of partition n's claim written at revision rev. A claim
// rewritten since (taken over) is left alone.
func (pk *parking) unclaim(ctx context.Context, n int, rev uint64) error {
	err := pk.kv.Delete(ctx, claimKey(n), jetstream.LastRevision(rev))
	if err != nil && !casConflict(err) {
		return fmt.Errorf("releasing partition %d's claim: %w", n, err)
	}
	return nil
}

// casConflict reports whether a write failed because the key was not at
// the revision it expected.
func casConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// takeClaim takes the partition's claim, waiting while a worker that is
// alive holds it (it is handing the partition over). It reports false
// when the partition stopped meanwhile.
func (p *partition) takeClaim() (bool, error) {
	w := p.w
	waiting := false
	for {
		ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
		rev, holder, err := w.parked.claim(ctx, p.n, claim{Worker: w.members.id, Run: p.runID}, w.claimHolds)
		cancel()
		switch {
		case err == nil:
			p.mu.Lock()
			p.claimRev = rev
			p.mu.Unlock()
			if holder.Worker != "" && holder.Worker != w.members.id {
				// Its announcement is gone: it let its lease lapse.
				w.log.Info("took over a partition's claim from a worker that is gone", "partition", p.n, "holder", holder.Worker)
			} else if waiting {
				w.log.Debug("took a partition's claim", "partition", p.n)
			}
			return true, nil
		case !errors.Is(err, errClaimHeld):
			return false, err
		case !waiting:
			w.log.Debug("waiting for a partition's claim: its holder is handing it over", "partition", p.n, "holder", holder.Worker)
			waiting = true
		}
		if !p.pause(250 * time.Millisecond) {
			return false, nil
		}
	}
}

// dropClaim lets go of the partition's claim, once its run is over. When
// that fails the worker tries again at its next heartbeats (retryUnclaims):
// while it is alive, nobody else takes the partition.
func (p *partition) dropClaim() {
	w := p.w
	p.mu.Lock()
	rev := p.claimRev
	p.claimRev = 0
	p.mu.Unlock()
	if rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := w.parked.unclaim(ctx, p.n, rev); err != nil {
		w.log.Warn("releasing a partition's claim failed; will try again", "partition", p.n, "err", err)
		w.mu.Lock()
		w.unreleased[p.n] = rev
		w.mu.Unlock()
	}
}

// claimHolds reports whether the run that wrote claim c still holds it:
// one of this worker's that has not ended, or any of another worker that
// is announced.
func (w *worker) claimHolds(ctx context.Context, c claim) (bool, error) {
	if c.Worker == w.members.id {
		w.mu.Lock()
		defer w.mu.Unlock()
		_, running := w.running[c.Run]
		return running, nil
	}
	return w.members.alive(ctx, c.Worker)
}

// retryUnclaims lets go of the claims whose release failed.
func (w *worker) retryUnclaims(ctx context.Context) {
	w.mu.Lock()
	todo := maps.Clone(w.unreleased)
	w.mu.Unlock()
	for n, rev := range todo {
		if err := w.parked.unclaim(ctx, n, rev); err != nil {
			continue
		}
		w.mu.Lock()
		if w.unreleased[n] == rev {
			delete(w.unreleased, n)
		}
		w.mu.Unlock()
	}
}
