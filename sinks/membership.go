// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Which worker delivers which partition. Every delivery worker of a sink
// announces itself in the stream SCIMRELAY_WORKERS, one subject per sink and
// worker, rewritten every heartbeat and kept for a short MaxAge: the
// subjects present are the live workers. A worker shutting down moves to
// a subject of its own (leavingSuffix) until it has handed its partitions
// over: out of the assignment, its partition claims standing. From the
// list of members every worker computes the same assignment (assign) and
// takes the partitions that fall to it. What makes delivery exclusive is
// each partition's claim (claim.go), which a worker takes before the
// partition's consumer and keeps until its hand-over is done, and the
// consumer's pinned priority group: a second worker that believes it owns
// a partition waits for the claim, and would receive nothing while the
// first holds the pin. See
// docs/decisions.md, Delivery, for the timings and the hand-off.
const (
	WorkersStream       = "SCIMRELAY_WORKERS"
	workersSubjectRoot  = "scimrelay-workers."
	defaultHeartbeat    = time.Second
	minimumPullInterval = time.Second // nats.go refuses shorter pull expiries
)

// Streams returns the names of the JetStream streams the sinks keep
// beside the event stream: the workers' announcements, the dead letters
// and the delivery attempts. A worker's NATS user may read each by name
// (README, Who can reach what), not list them.
func Streams() []string { return []string{WorkersStream, dlqStream, deliveriesStream} }

// timing derives every delay of the hand-off from the heartbeat h.
//
//   - a worker re-announces itself every h;
//   - it considers itself a member (its lease) for lease = 8h after an
//     announcement it sent succeeded, and stops delivering when that lapses;
//   - the announcement stays in the stream memberTTL = lease + 3h, so
//     that no other worker takes its partitions while its lease runs;
//   - it re-pulls every pullExpiry, which renews its pin;
//   - a pin nobody renews expires after pinnedTTL = lease + pullExpiry + 4h:
//     a worker cut off from NATS stops delivering (lease) before another
//     one can be pinned in its place;
//   - a graceful hand-over that is not done after handOver = lease (a
//     delivery to a slow receiver in flight, a slow bucket) ends as a hard
//     stop: a partition that stopped pulling keeps its pin no longer than
//     pinnedTTL − pullExpiry = lease + 4h, and by then this worker must
//     deliver nothing more of it, or the next owner's attempts of a
//     resource would overlap its own.
//
// A partition's claim is written again every claimRenew (a day), so that
// the parking bucket's age limit never removes it. A release waits at
// most ackSettle (5 s) for its acknowledgements to land (awaitAcks). A
// parked resource read to its end before its consumer passed it looks
// again every catchUpRecheck (1 s) when no event of it wakes it. The
// owner of a partition removes the markers of its records taken out once
// they are markerAge (an hour) old, looking every markerSweep (a quarter
// of that, at least a heartbeat): markers.go. A worker whose sink made no
// request for probeEvery (a minute) tries a parked resource before its
// time, in case the receiver is back, a success after outageMin (5 s)
// without one, the receiver down, is a recovery, and a recovery looks for
// parked resources to wake at most every wakeEvery (200 ms) (wake.go).
type timing struct {
	heartbeat, lease, memberTTL, pullExpiry, pinnedTTL, handOver time.Duration
	claimRenew, ackSettle, catchUpRecheck                        time.Duration
	markerAge, markerSweep                                       time.Duration
	probeEvery, outageMin, wakeEvery                             time.Duration
	// ackLooks is how many looks in a row at a consumer waiting for
	// acknowledgements this worker sent pass before it sends them again
	// (findLostAcks, ackLooksForResend).
	ackLooks int
}

func timingFor(h time.Duration) timing {
	if h <= 0 {
		h = defaultHeartbeat
	}
	t := timing{heartbeat: h, lease: 8 * h}
	t.memberTTL = t.lease + 3*h
	t.pullExpiry = max(minimumPullInterval, 2*h)
	t.pinnedTTL = t.lease + t.pullExpiry + 4*h
	t.handOver = t.lease
	t.claimRenew = 24 * time.Hour
	t.ackSettle = 5 * time.Second
	t.catchUpRecheck = time.Second
	t.probeEvery, t.outageMin, t.wakeEvery = time.Minute, 5*time.Second, 200*time.Millisecond
	t.ackLooks = ackLooksForResend
	t.keepMarkers(defaultMarkerAge)
	return t
}

// keepMarkers sets how old the parking bucket's markers grow (markers.go).
func (t *timing) keepMarkers(age time.Duration) {
	t.markerAge = age
	t.markerSweep = max(age/4, t.heartbeat)
}

// membership is one worker's presence among a sink's workers.
type membership struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	sink   string
	id     string
	t      timing
	// leaseUntil is when this worker stops considering itself a member
	// (a clock reading), unless a heartbeat succeeds before (renew).
	leaseUntil atomic.Int64
	// present is the workers whose announcement (as a member, or as
	// leaving) the last beat found: those that may hold partition claims.
	present atomic.Pointer[[]string]
}

// leavingSuffix marks the announcement of a worker that has withdrawn
// from the assignment and is handing its partitions over: it takes no
// partition, but the claims it holds stand until it releases them.
const leavingSuffix = ".leaving"

// ensureWorkersStream creates the stream of announcements.
func ensureWorkersStream(ctx context.Context, js jetstream.JetStream, t timing, replicas int) (jetstream.Stream, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              WorkersStream,
		Description:       "scimrelay delivery workers alive, one subject per sink and worker",
		Subjects:          []string{workersSubjectRoot + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		MaxMsgsPerSubject: 1,
		MaxAge:            t.memberTTL,
		Duplicates:        min(t.memberTTL, time.Second),
		Replicas:          max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", WorkersStream, err)
	}
	return st, nil
}

var unsafeToken = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// newWorkerID names this process's worker: host, process and a random
// part, so that two workers never share a name, even in one process.
func newWorkerID() string {
	host, _ := os.Hostname()
	host = strings.Trim(unsafeToken.ReplaceAllString(host, "-"), "-")
	if host == "" {
		host = "worker"
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + uuid.NewString()[:8]
}

func (m *membership) prefix() string  { return workersSubjectRoot + m.sink + "." }
func (m *membership) subject() string { return m.prefix() + m.id }

// announcement is what a worker publishes; the subject alone carries the
// membership, the rest is for people reading the stream.
type announcement struct {
	Sink       string    `json:"sink"`
	Worker     string    `json:"worker"`
	Time       time.Time `json:"time"`
	Partitions []int     `json:"partitions"`
}

// beat announces the worker and returns the live workers of its sink,
// sorted, itself included, and the purge notices' subjects, read in the
// same listing (purged.go). It does not renew the lease: the worker does,
// once it has taken the notices in (reconcile).
func (m *membership) beat(ctx context.Context, owned []int) (live, notices []string, err error) {
	if err := m.announce(ctx, m.subject(), owned); err != nil {
		return nil, nil, err
	}
	live, present, notices, err := m.list(ctx)
	if err != nil {
		return nil, nil, err
	}
	if !slices.Contains(live, m.id) {
		live = append(live, m.id) // announced, even if the listing raced it
		slices.Sort(live)
	}
	m.present.Store(&present)
	return live, notices, nil
}

func (m *membership) announce(ctx context.Context, subject string, owned []int) error {
	body, err := json.Marshal(announcement{Sink: m.sink, Worker: m.id, Time: time.Now().UTC(), Partitions: owned})
	if err != nil {
		return err
	}
	if _, err := m.js.Publish(ctx, subject, body); err != nil {
		return fmt.Errorf("announcing worker %s: %w", m.id, err)
	}
	return nil
}

// list reads the workers' stream's subjects: the sink's announcements,
// the members (live) and every worker announced as a member or as leaving
// (present), each sorted, and the purge notices, each subject past
// purgedSubjectRoot. One read for both, so that a worker that lists its
// sink's workers has read the notices too.
func (m *membership) list(ctx context.Context) (live, present, notices []string, err error) {
	prefix := m.prefix()
	info, err := m.stream.Info(ctx, jetstream.WithSubjectFilter(workersSubjectRoot+">"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listing the workers of sink %s: %w", m.sink, err)
	}
	for subject := range info.State.Subjects {
		if notice, ok := strings.CutPrefix(subject, purgedSubjectRoot); ok {
			notices = append(notices, notice)
			continue
		}
		id, ok := strings.CutPrefix(subject, prefix)
		if !ok {
			continue // another sink's
		}
		if leaving, ok := strings.CutSuffix(id, leavingSuffix); ok {
			present = append(present, leaving)
			continue
		}
		live = append(live, id)
		present = append(present, id)
	}
	slices.Sort(live)
	slices.Sort(present)
	return live, slices.Compact(present), notices, nil
}

// alive reports whether worker id is announced, as a member or as leaving:
// whether a claim it holds stands. A worker found in the last beat's
// listing is; one not found there is looked up again, because it may have
// announced itself (and claimed a partition) since. A worker that has not
// announced itself for memberTTL has let its lease lapse, and delivers
// nothing more.
func (m *membership) alive(ctx context.Context, id string) (bool, error) {
	if p := m.present.Load(); p != nil && slices.Contains(*p, id) {
		return true, nil
	}
	_, present, _, err := m.list(ctx)
	if err != nil {
		return false, err
	}
	return slices.Contains(present, id), nil
}

// leaseValid reports whether this worker may still deliver. The lease is
// on the monotonic clock (clock): on the wall clock a step forward (NTP, a
// VM resumed) dropped every partition with nothing wrong, and a step back
// kept a worker cut off from NATS delivering beside its partitions' next
// owner.
func (m *membership) leaseValid() bool { return clock(time.Now()) < m.leaseUntil.Load() }

// renew extends the lease to a lease from began, when the heartbeat that
// succeeded began: before its announcement, so that the lease ends no
// later than the other workers' view of the announcement does.
func (m *membership) renew(began time.Time) {
	m.leaseUntil.Store(clock(began.Add(m.t.lease)))
}

// leave withdraws the worker from the assignment, so that the others take
// its partitions, and announces it as leaving: the claims it holds stand
// while it hands them over (stillLeaving renews the announcement, gone
// withdraws it). The lease stays: this worker finishes what it has in
// flight before it releases its partitions. When the leaving announcement
// cannot be made, the member's stays, and the others take over once it
// expires.
func (m *membership) leave(ctx context.Context) error {
	if err := m.stillLeaving(ctx); err != nil {
		return err
	}
	return m.purge(ctx, m.subject())
}

// stillLeaving renews the worker's leaving announcement.
func (m *membership) stillLeaving(ctx context.Context) error {
	return m.announce(ctx, m.subject()+leavingSuffix, nil)
}

// gone withdraws the worker's announcements (the member's too, in case
// leave could not): it holds nothing more.
func (m *membership) gone(ctx context.Context) error {
	return errors.Join(m.purge(ctx, m.subject()+leavingSuffix), m.purge(ctx, m.subject()))
}

func (m *membership) purge(ctx context.Context, subject string) error {
	err := m.stream.Purge(ctx, jetstream.WithPurgeSubject(subject))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("withdrawing worker %s: %w", m.id, err)
	}
	return nil
}

// assign returns, for each partition, the member that delivers it. Each
// partition goes to the member that ranks it highest by rendezvous hashing
// among those that do not yet hold their share (⌈P/n⌉): every member
// computes the same answer from the same list, the load is even, and a
// member joining or leaving moves few partitions.
func assign(sink string, partitions int, members []string) []string {
	owner := make([]string, partitions)
	if len(members) == 0 {
		return owner
	}
	share := (partitions + len(members) - 1) / len(members)
	load := make(map[string]int, len(members))
	ranked := make([]string, len(members))
	for p := range partitions {
		copy(ranked, members)
		slices.SortFunc(ranked, func(a, b string) int {
			ha, hb := rendezvous(sink, p, a), rendezvous(sink, p, b)
			switch {
			case ha > hb:
				return -1
			case ha < hb:
				return 1
			}
			return strings.Compare(a, b)
		})
		for _, m := range ranked {
			if load[m] < share {
				owner[p] = m
				load[m]++
				break
			}
		}
	}
	return owner
}

func rendezvous(sink string, partition int, member string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(sink))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(strconv.Itoa(partition)))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(member))
	return h.Sum64()
}
