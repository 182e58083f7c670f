// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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
// taking it at once one fails. It stands while its holder is announced
// (as a member, or as leaving while it hands over), not by a time to
// live: a worker whose announcement is gone has let its lease lapse and
// delivers nothing more (membership.alive). The holder writes it again
// once a day (renewClaim) only so that the bucket's 30-day age limit
// never removes it.

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
// rewritten since (taken over, or renewed) is left alone.
func (pk *parking) unclaim(ctx context.Context, n int, rev uint64) error {
	err := pk.kv.Delete(ctx, claimKey(n), jetstream.LastRevision(rev))
	if err != nil && !casConflict(err) {
		return fmt.Errorf("releasing partition %d's claim: %w", n, err)
	}
	return nil
}

// unclaimEnded lets go of partition n's claim if worker wrote it in a run
// that has ended (ended says), whatever its revision: a claim whose write
// the worker saw fail may have been written all the same.
func (pk *parking) unclaimEnded(ctx context.Context, n int, worker string, ended func(run uint64) bool) error {
	e, err := pk.kv.Get(ctx, claimKey(n))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading partition %d's claim: %w", n, err)
	}
	var held claim
	if json.Unmarshal(e.Value(), &held) != nil || held.Worker != worker || !ended(held.Run) {
		return nil
	}
	return pk.unclaim(ctx, n, e.Revision())
}

// renew writes partition n's claim again at revision rev, so that the
// bucket's age limit never removes it, and returns its new revision.
func (pk *parking) renew(ctx context.Context, n int, mine claim, rev uint64) (uint64, error) {
	body, err := json.Marshal(mine)
	if err != nil {
		return 0, err
	}
	return pk.kv.Update(ctx, claimKey(n), body, rev)
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

// dropClaim lets go of the partition's claim, once its run is over; also
// when this run saw its claim's write fail, which may have been written
// all the same. When that fails the worker tries again at its next
// heartbeats (retryUnclaims): while it is alive, nobody else takes the
// partition.
func (p *partition) dropClaim() {
	w := p.w
	p.mu.Lock()
	rev := p.claimRev
	p.claimRev = 0
	p.mu.Unlock()
	ctx, cancel := w.stopRequest()
	defer cancel()
	var err error
	if rev != 0 {
		err = w.parked.unclaim(ctx, p.n, rev)
	} else {
		err = w.parked.unclaimEnded(ctx, p.n, w.members.id, func(run uint64) bool { return run == p.runID })
	}
	if err != nil {
		w.log.Warn("releasing a partition's claim failed; will try again", "partition", p.n, "err", err)
		w.mu.Lock()
		w.unreleased[p.n] = struct{}{}
		w.mu.Unlock()
	}
}

// renewClaim writes the partition's claim again (every claimRenew), so
// that the parking bucket's age limit (30 days) never removes it under a
// long run.
func (p *partition) renewClaim() {
	w := p.w
	p.mu.Lock()
	rev := p.claimRev
	p.mu.Unlock()
	if rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
	defer cancel()
	next, err := w.parked.renew(ctx, p.n, claim{Worker: w.members.id, Run: p.runID}, rev)
	switch {
	case casConflict(err):
		// Only a worker that found this one gone writes it: this worker
		// lost contact for longer than its lease, and stops delivering.
		w.log.Error("a partition's claim was taken over while this worker ran it", "partition", p.n)
	case err != nil:
		w.log.Warn("renewing a partition's claim failed; will try again", "partition", p.n, "err", err)
	default:
		p.mu.Lock()
		if p.claimRev == rev {
			p.claimRev = next
		}
		p.mu.Unlock()
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

// retryUnclaims lets go of the claims whose release failed, those of
// runs that have ended, within ctx.
func (w *worker) retryUnclaims(ctx context.Context) {
	w.mu.Lock()
	todo := slices.Collect(maps.Keys(w.unreleased))
	w.mu.Unlock()
	ended := func(run uint64) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		_, running := w.running[run]
		return !running
	}
	for _, n := range todo {
		if ctx.Err() != nil || w.parked.unclaimEnded(ctx, n, w.members.id, ended) != nil {
			return
		}
		w.mu.Lock()
		delete(w.unreleased, n)
		w.mu.Unlock()
	}
}
