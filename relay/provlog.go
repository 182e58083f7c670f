// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/lograte"
	"github.com/scimrelay/scimrelay/scim"
	"github.com/tidwall/gjson"
	bolt "go.etcd.io/bbolt"
)

// The provisioning log records every SCIM request, the way Entra's own
// provisioning logs do on its side: who asked for what, what came back, and
// the events it produced. It lives in the data file (bucket "provlog", key
// u64(unix nanoseconds) ‖ u64(counter)) and is written in batches by its own
// goroutine, so that logging never adds a transaction, let alone an fsync,
// to a SCIM request.
//
// Writes and every refusal or failure are recorded one by one. Successful
// reads (get, list, search, discovery), which a provisioning cycle sends as
// often as writes and which say little one by one, are by default recorded
// as one entry per minute, tenant, operation, resource type and status,
// with their count and latencies (LogOptions.Reads). Refusals of requests
// whose credential was not accepted cost their sender nothing, and anyone
// can send them: past the first few of a minute (per tenant, operation,
// method and status, and a hundred of all tenants) they are summed up the
// same way, and what any entry keeps of a request is cut to a few hundred
// bytes, so that a flood of them adds a bounded amount a minute rather
// than pushing the tenants' history out of the log's size at once. The
// log is kept for a retention and within a size: past MaxBytes each
// tenant's share is cut, oldest first, to an even level (pruneSize).

var bucketProvLog = []byte("provlog")

// LogEntry is one SCIM request.
type LogEntry struct {
	Time       time.Time     `json:"time"`
	RequestID  string        `json:"request_id"`
	Tenant     string        `json:"tenant,omitempty"`
	Method     string        `json:"method"`
	Path       string        `json:"path"`
	Operation  string        `json:"operation,omitempty"`
	Resource   string        `json:"resource_type,omitempty"`
	ResourceID string        `json:"resource_id,omitempty"`
	Name       string        `json:"name,omitempty"`  // userName or displayName
	Email      string        `json:"email,omitempty"` // a user's primary (else work) email
	Status     int           `json:"status"`
	ScimType   string        `json:"scim_type,omitempty"`
	Detail     string        `json:"detail,omitempty"`
	Latency    time.Duration `json:"latency_ns"`
	// EventIDs are the ids of the events the request produced, the first
	// logEventIDsMax of them; EventCount, when more, is how many there
	// were (Events).
	EventIDs   []string `json:"event_ids,omitempty"`
	EventCount int      `json:"event_count,omitempty"`
	// ClientRequestID is the X-Request-Id the client sent, apart from
	// RequestID, which is the relay's own (entries written by earlier
	// versions may hold a client's there, and none here).
	ClientRequestID string `json:"client_request_id,omitempty"`
	// Unauthenticated marks a request whose credential was not accepted
	// (none, a wrong one, a tenant that does not exist).
	Unauthenticated bool `json:"unauthenticated,omitempty"`
	// Count, when set, makes the entry a summary of Count requests in the
	// minute from Time: successful reads, or refusals of unauthenticated
	// requests past the first refusalsAlone. Latency is their mean,
	// LatencyMax the longest; the request ids, Method, Path, the resource
	// and Detail are those of the last.
	Count      int           `json:"count,omitempty"`
	LatencyMax time.Duration `json:"latency_max_ns,omitempty"`
	// Key orders entries; pass the last one seen as After to read on.
	Key string `json:"key"`
}

// LogOptions configures the provisioning log.
type LogOptions struct {
	// Retention is how long entries are kept (default 30 days).
	Retention time.Duration
	// MaxBytes bounds the space entries take in the data file; past it the
	// shares above an even level lose their oldest (default
	// DefaultLogMaxBytes).
	MaxBytes int64
	// Reads is how successful reads are recorded: LogReadsAggregate (the
	// default) or LogReadsAll.
	Reads string
}

// How successful reads are recorded.
const (
	LogReadsAggregate = "aggregate" // one entry per minute, tenant, operation, resource type and status
	LogReadsAll       = "all"       // every one on its own
)

// DefaultLogMaxBytes bounds the provisioning log unless configured: some
// 1.5 million entries.
const DefaultLogMaxBytes = 512 << 20

// logPruneInterval is how often a running log drops the entries past its
// retention. The size bound needs no timer: it is kept after each write.
const logPruneInterval = time.Hour

// minLogMaxBytes is the least MaxBytes: a log smaller than a few batches
// would prune on every write.
const minLogMaxBytes = 1 << 20

// Check reports every problem of the options at once, naming their
// relay.yaml keys. It holds them to what the file must say: a zero
// Retention or MaxBytes, which NewRequestLog reads as its default, is a
// value the file set, and refused.
func (o LogOptions) Check() error {
	var errs []error
	switch {
	case o.Retention <= 0:
		errs = append(errs, errors.New("provisioning_log.retention: must be positive, e.g. 30d"))
	case o.Retention < events.MinStreamAge:
		// It is the max age of the stream of delivery attempts.
		errs = append(errs, fmt.Errorf("provisioning_log.retention: must be at least %s (JetStream's shortest), got %s", events.MinStreamAge, o.Retention))
	}
	if o.MaxBytes < minLogMaxBytes {
		errs = append(errs, fmt.Errorf("provisioning_log.max_bytes: must be at least 1MiB, got %d bytes", o.MaxBytes))
	}
	switch o.Reads {
	case "", LogReadsAggregate, LogReadsAll:
	default:
		errs = append(errs, fmt.Errorf("provisioning_log.reads: must be %s or %s, got %q", LogReadsAggregate, LogReadsAll, o.Reads))
	}
	return errors.Join(errs...)
}

// LogQuery selects log entries.
type LogQuery struct {
	Tenant string
	Since  time.Time
	// Until, when set, ends the selection before this time.
	Until time.Time
	// After continues after the entry with this key (for --follow); with
	// Newest, before it (the next page of older entries).
	After string
	// Newest reads from the end of the window back: the latest entries
	// first.
	Newest bool
	// Status is "2xx", "4xx", "5xx", an exact code such as "409", or "".
	Status string
	// User matches userName, displayName or email, by substring, ignoring
	// case as the SCIM filter does (scim.Fold).
	User string
	// Operation is one operation (create, patch, token …), or "".
	Operation string
	Limit     int
}

// RequestLog writes and reads the provisioning log.
type RequestLog struct {
	store     *Store
	log       *slog.Logger
	retention time.Duration
	maxBytes  int64
	allReads  bool
	entries   chan LogEntry
	// pruneEvery is how often Run prunes by age (logPruneInterval; tests
	// shorten it to see a running log prune).
	pruneEvery time.Duration
	dropped    atomic.Uint64
	counter    atomic.Uint64
	done       chan struct{}

	// size is what the entries take in their pages (keys, values and
	// their page elements), and shares what the entries of each share
	// take (shareOf), kept by the writer goroutine alone.
	size   int64
	shares map[string]int64
	// freed is what a tenant's purge deleted, by share, for Run to take
	// off size and shares (forget).
	freedMu sync.Mutex
	freed   map[string]int64
	// drops asks Run to forget what it holds of a tenant being purged
	// (dropPending).
	drops chan dropRequest
}

// dropRequest asks Run to forget the requests of tenant it holds, and
// says when it has (done closed).
type dropRequest struct {
	tenant string
	done   chan struct{}
}

// NewRequestLog returns the provisioning log of a store. Options that
// LogOptions.Check refuses take their defaults.
func NewRequestLog(s *Store, o LogOptions, log *slog.Logger) *RequestLog {
	if o.Retention <= 0 {
		o.Retention = 30 * 24 * time.Hour
	}
	if o.MaxBytes < minLogMaxBytes {
		o.MaxBytes = DefaultLogMaxBytes
	}
	return &RequestLog{store: s, log: log, retention: o.Retention, maxBytes: o.MaxBytes, allReads: o.Reads == LogReadsAll,
		entries: make(chan LogEntry, 8192), pruneEvery: logPruneInterval, done: make(chan struct{}), shares: map[string]int64{},
		drops: make(chan dropRequest)}
}

// readOperations are the operations that change nothing.
var readOperations = map[string]bool{"get": true, "list": true, "search": true, "discovery": true}

// summarised reports whether an entry is recorded in a per-minute summary
// rather than on its own: a successful read with nothing to say (an
// answer cut off says so in its detail), unless every read is kept.
func (l *RequestLog) summarised(e LogEntry) bool {
	return !l.allReads && e.Count == 0 && readOperations[e.Operation] && e.Status > 0 && e.Status < 400 && e.Detail == ""
}

// refusalsAlone is how many refusals of unauthenticated requests are
// recorded one by one each minute, per tenant, operation and status,
// before the rest of the minute's are summed up: enough to see why a
// directory's requests are refused, too few for a flood to matter.
const refusalsAlone = 10

// unauthenticatedAlone is how many refusals of unauthenticated requests
// are recorded one by one each minute of all tenants: past it, the rest
// of the minute's are summed up too. refusalsAlone alone would give ten
// to each operation, method and status of each tenant name (some sixty
// combinations a name that anyone can reach), the more the more tenants.
const unauthenticatedAlone = 100

// anonymousRefusal reports whether an entry is a refusal of a request
// whose credential was not accepted.
func anonymousRefusal(e LogEntry) bool {
	return e.Count == 0 && e.Unauthenticated && e.Status >= 400
}

// summaryKey groups the requests one summary stands for.
type summaryKey struct {
	minute                              int64
	tenant, operation, resource, method string
	status                              int
}

func summaryKeyOf(e LogEntry) summaryKey {
	return summaryKey{e.Time.Truncate(time.Minute).UnixNano(), e.Tenant, e.Operation, e.Resource, methodClass(e.Method), e.Status}
}

// methodClass is the method a summary groups a request under: one SCIM
// uses, or "other". Any token is a method to HTTP, and the caller picks
// it: grouped by the method itself, each one invented would have its own
// first few refusals recorded one by one, and a flood of them would fill
// the log as if nothing were summed up.
func methodClass(m string) string {
	switch m {
	case "GET", "POST", "PUT", "PATCH", "DELETE":
		return m
	}
	return "other"
}

// summaries gathers successful reads, and unauthenticated refusals past
// the first few, per minute until they are written.
type summaries map[summaryKey]*LogEntry

// add counts e into the summary of k, its summaryKeyOf.
func (m summaries) add(k summaryKey, e LogEntry) {
	s := m[k]
	if s == nil {
		s = &LogEntry{Time: e.Time.Truncate(time.Minute), Tenant: e.Tenant, Operation: e.Operation, Resource: e.Resource,
			Status: e.Status, ScimType: e.ScimType, Unauthenticated: e.Unauthenticated}
		m[k] = s
	}
	// Latency holds the sum until the summary is written.
	s.Count++
	s.Latency += e.Latency
	s.LatencyMax = max(s.LatencyMax, e.Latency)
	s.RequestID, s.ClientRequestID, s.Method, s.Path, s.ResourceID, s.Detail = e.RequestID, e.ClientRequestID, e.Method, e.Path, e.ResourceID, e.Detail
}

// forget drops the summaries of tenant's requests.
func (m summaries) forget(tenant string) {
	maps.DeleteFunc(m, func(k summaryKey, _ *LogEntry) bool { return k.tenant == tenant })
}

// due takes out the summaries of minutes that ended before now (all of
// them with now zero), ready to write. A minute that begins after now
// is over too: the wall clock stepped back past it (NTP correcting a
// clock that ran ahead), and its summary would otherwise wait, unseen,
// until the clock passed that minute again.
func (m summaries) due(now time.Time) []LogEntry {
	var out []LogEntry
	for k, s := range m {
		if !now.IsZero() && !now.Before(s.Time) && now.Before(s.Time.Add(time.Minute)) {
			continue
		}
		s.Latency /= time.Duration(s.Count)
		out = append(out, *s)
		delete(m, k)
	}
	slices.SortFunc(out, func(a, b LogEntry) int {
		return cmp.Or(a.Time.Compare(b.Time), strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.Operation, b.Operation),
			strings.Compare(a.Resource, b.Resource), cmp.Compare(a.Status, b.Status))
	})
	return out
}

// Record queues an entry, its fields cut to logFieldMax (its Detail to
// logDetailMax). It never blocks: when the writer is behind by thousands
// of entries, new ones are dropped and counted instead of slowing SCIM
// down.
func (l *RequestLog) Record(e LogEntry) {
	select {
	case l.entries <- bounded(e):
	default:
		l.dropped.Add(1)
	}
}

// The most bytes an entry keeps of a text, before the "..." that marks a
// cut: the caller chooses the method, the path and the id (as long as the
// request line the listener takes), and a detail may repeat them. Enough
// for any id, userName or email a directory sends, and for the details
// the relay writes. (JSON writes some characters in six bytes, so a
// hostile text may take up to six times this in the data file.)
const (
	logFieldMax  = 256
	logDetailMax = 512
)

// logEventIDsMax is how many of a request's event ids its entry keeps. A
// membership PATCH of 100 bytes can make thousands of events, and an
// entry with all their ids (195 KB for 5,000) let one tenant push every
// other tenant's history out of the log in minutes (a review).
const logEventIDsMax = 32

// bounded is e with every text it holds cut to its bound, on a character
// boundary, and its event ids to logEventIDsMax, so that what one request
// costs the log is bounded whatever it sends; summaries, made from
// entries, are bounded too.
func bounded(e LogEntry) LogEntry {
	for _, f := range []*string{&e.RequestID, &e.ClientRequestID, &e.Tenant, &e.Method, &e.Path, &e.Operation, &e.Resource, &e.ResourceID,
		&e.Name, &e.Email, &e.ScimType} {
		*f = scim.Truncate(*f, logFieldMax)
	}
	e.Detail = scim.Truncate(e.Detail, logDetailMax)
	if len(e.EventIDs) > logEventIDsMax {
		e.EventCount = max(e.EventCount, len(e.EventIDs))
		e.EventIDs = e.EventIDs[:logEventIDsMax:logEventIDsMax]
	}
	return e
}

// Events is how many events the request produced, of which EventIDs
// names the first.
func (e LogEntry) Events() int { return max(e.EventCount, len(e.EventIDs)) }

// writeFailedEvery is how often, at most, Run says that writing the
// provisioning log fails.
const writeFailedEvery = time.Minute

// Dropped returns how many entries were dropped: the writer was behind, or
// could not write them (a full data disk).
func (l *RequestLog) Dropped() uint64 { return l.dropped.Load() }

// Run writes queued entries in batches and prunes expired ones, until ctx
// ends; then it writes what is left.
func (l *RequestLog) Run(ctx context.Context) error {
	defer close(l.done)
	prune := time.NewTicker(l.pruneEvery)
	defer prune.Stop()
	if err := l.measure(); err != nil {
		l.log.Warn("measuring the provisioning log", "err", err)
	}
	if err := l.prune(); err != nil {
		l.log.Warn("pruning the provisioning log", "err", err)
	}
	batch := make([]LogEntry, 0, 512)
	summed := summaries{}
	// A write that fails fails every 100 ms while its cause lasts (a full
	// data disk: an on-call review counted 69 lines in 45 s): said once a
	// minute (writeFailedEvery), with the failures and entries lost since
	// the last line, and once at Info when writes succeed again and the
	// store is writable (a full disk has room): on a full disk, a batch
	// that fits into pages bbolt freed succeeds between failures.
	failures := lograte.New[string](writeFailedEvery)
	lost, lostAll := 0, 0 // entries lost since the last line, and since the first failure
	flush := func() {
		l.takeFreed()
		if len(batch) == 0 {
			return
		}
		if err := l.write(batch); err != nil {
			l.dropped.Add(uint64(len(batch)))
			lost += len(batch)
			lostAll += len(batch)
			if due, held := failures.Note("write", l.store.now()); due {
				l.log.Warn("writing the provisioning log failed; its entries are lost (scimrelay_provisioning_log_dropped_total), said once a minute while it lasts",
					"entries_lost", lost, "failures", held+1, "err", err)
				lost = 0
			}
		} else if lostAll > 0 && l.store.Writable() == nil {
			l.log.Info("the provisioning log is written again", "entries_lost", lostAll)
			failures = lograte.New[string](writeFailedEvery)
			lost, lostAll = 0, 0
		}
		batch = batch[:0]
		if l.size > l.maxBytes {
			if err := l.pruneSize(); err != nil {
				l.log.Warn("pruning the provisioning log to its size", "err", err)
			}
		}
	}
	// alone counts the unauthenticated refusals recorded one by one in
	// each minute, per summary and (aloneIn) of all; tick forgets the
	// minutes that are over.
	alone := map[summaryKey]int{}
	aloneIn := map[int64]int{}
	add := func(e LogEntry) {
		if l.summarised(e) {
			summed.add(summaryKeyOf(e), e)
			return
		}
		if anonymousRefusal(e) {
			k := summaryKeyOf(e)
			if alone[k] >= refusalsAlone || aloneIn[k.minute] >= unauthenticatedAlone {
				summed.add(k, e)
				return
			}
			alone[k]++
			aloneIn[k.minute]++
		}
		batch = append(batch, e)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case e := <-l.entries:
			add(e)
		case <-tick.C:
			now := l.store.now()
			batch = append(batch, summed.due(now)...)
			flush()
			over := func(minute int64) bool { return now.Sub(time.Unix(0, minute)) > 2*time.Minute }
			maps.DeleteFunc(alone, func(k summaryKey, _ int) bool { return over(k.minute) })
			maps.DeleteFunc(aloneIn, func(minute int64, _ int) bool { return over(minute) })
		case <-prune.C:
			if err := l.prune(); err != nil {
				l.log.Warn("pruning the provisioning log", "err", err)
			}
		case d := <-l.drops:
			// What was recorded before the drop was asked for is queued
			// (Record does not wait): it is taken in first. Entries of the
			// tenant go to the batch, which write drops while its purge
			// runs; summaries and counts are forgotten here.
			for queued := true; queued; {
				select {
				case e := <-l.entries:
					add(e)
				default:
					queued = false
				}
			}
			summed.forget(d.tenant)
			maps.DeleteFunc(alone, func(k summaryKey, _ int) bool { return k.tenant == d.tenant })
			close(d.done)
		case <-ctx.Done():
			for {
				select {
				case e := <-l.entries:
					add(e)
				default:
					batch = append(batch, summed.due(time.Time{})...)
					flush()
					return nil
				}
			}
		}
	}
}

// dropPending makes Run forget the requests of tenant, being purged, that
// it holds to write later: the summaries of a minute not over yet. Written
// after the purge, under a name added again meanwhile, they would be the
// old tenant's entries in the new one's log (write drops them only while
// the name is being purged or purged and not added again). A log that is
// not running holds nothing.
func (l *RequestLog) dropPending(ctx context.Context, tenant string) error {
	d := dropRequest{tenant: tenant, done: make(chan struct{})}
	select {
	case l.drops <- d:
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-d.done:
		return nil
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait returns once Run has written everything and returned.
func (l *RequestLog) Wait() { <-l.done }

func (l *RequestLog) key(nanos int64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k[:8], uint64(nanos))
	binary.BigEndian.PutUint64(k[8:], l.counter.Add(1))
	return k
}

// keyTime is where an entry is filed: a request at its time; a summary,
// written when its minute is over, at the time it is written. Its Time
// stays its minute.
func keyTime(e LogEntry, written time.Time) time.Time {
	if e.Count > 0 {
		return written
	}
	return e.Time
}

// keyNanos is keyTime, never before floor: the log's keys grow in the
// order entries are written, so that a reader following the log
// (LogQuery.After) finds every entry written after the last one it read.
// A request that started before the newest entry written but ended after
// it (a long member PATCH beside quick requests), and a summary written
// after its minute, are filed at that entry's time instead of their own;
// their Time is unchanged.
func keyNanos(e LogEntry, written time.Time, floor int64) int64 {
	return max(keyTime(e, written).UnixNano(), floor, 0)
}

func (l *RequestLog) write(batch []LogEntry) error {
	// Encoded, and their shares read, before the commit: the transaction
	// is the store's one writer, and holds only the puts.
	vals := make([][]byte, len(batch))
	owners := make([]string, len(batch))
	for i, e := range batch {
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		vals[i], owners[i] = v, shareOf(v)
	}
	now := l.store.now()
	var added int64
	shares := map[string]int64{}
	err := l.store.commits.do(func(tx *bolt.Tx) error {
		added = 0 // a commit may run this again
		clear(shares)
		b, err := tx.CreateBucketIfNotExists(bucketProvLog)
		if err != nil {
			return err
		}
		appending(b)
		// After the newest key, whoever wrote it (this process, or one
		// before a restart, whose counter started again at 0).
		floor := int64(0)
		if last, _ := b.Cursor().Last(); len(last) >= 8 {
			floor = int64(binary.BigEndian.Uint64(last[:8])) + 1
		}
		// A tenant being purged, or purged and not configured since, has
		// no entry filed after its purge began (a request answered
		// before its removal, a minute's summary written after the
		// purge), which the purge would not find, or found no more:
		// read in the same transaction as the entries are put, the mark
		// is either there, or the purge begins after them.
		purging := purgingTenants(tx)
		for i, e := range batch {
			if e.Tenant != "" && purgedAway(tx, purging, e.Tenant) {
				continue
			}
			// Within the batch the counter orders equal times.
			floor = keyNanos(e, now, floor)
			k := l.key(floor)
			if err := b.Put(k, vals[i]); err != nil {
				return err
			}
			added += entrySize(k, vals[i])
			shares[owners[i]] += entrySize(k, vals[i])
		}
		return nil
	})
	if err == nil {
		l.size += added
		for share, n := range shares {
			l.shares[share] += n
		}
	}
	return err
}

// unauthenticatedShare is the share of the requests whose credential was
// not accepted, in whichever tenant's name they came.
const unauthenticatedShare = "\x00unauthenticated"

// shareOf is whose share of the log's size an entry counts against: its
// tenant's, or, for a request whose credential was not accepted (anyone
// can send those, in any tenant's name), one share of all such requests.
func shareOf(v []byte) string {
	r := gjson.GetManyBytes(v, "tenant", "unauthenticated")
	if r[1].Bool() {
		return unauthenticatedShare
	}
	return r[0].String()
}

// entrySize is what an entry takes in a leaf page: its key, its value and
// the page element that points at them.
func entrySize(k, v []byte) int64 { return int64(len(k) + len(v) + 16) }

// pruneChunk is how many entries one pruning transaction deletes at most,
// so that pruning never holds the writer for long.
const pruneChunk = 10_000

// measure sets what the log takes in the data file (for the size bound)
// from the entries there; Run calls it once, before anything is pruned or
// written, and then keeps the figure as entries come and go.
func (l *RequestLog) measure() error {
	var size int64
	shares := map[string]int64{}
	err := l.store.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketProvLog); b != nil {
			return b.ForEach(func(k, v []byte) error {
				size += entrySize(k, v)
				shares[shareOf(v)] += entrySize(k, v)
				return nil
			})
		}
		return nil
	})
	l.size, l.shares = size, shares
	return err
}

// prune deletes entries older than the retention. The cutoff is a key as
// timeKey makes it: a retention reaching before 1970 (a century, for
// "keep it") deletes nothing, where its negative time, taken unsigned,
// sorted after every entry and deleted them all.
func (l *RequestLog) prune() error {
	cutoff := timeKey(l.store.now().Add(-l.retention))
	return l.deleteOldest(func(k []byte, _ int64) bool { return bytes.Compare(k[:8], cutoff) < 0 })
}

// pruneSize deletes entries until the log takes at most 90% of its bound,
// so that it is not pruned again at the next write, by share (shareOf):
// every share that takes more than an even level (pruneLevel) loses its
// oldest entries down to it, and a share below the level keeps all of
// them. One tenant writing fast, or a flood of unauthenticated requests,
// loses its own oldest entries, and others only what they take above that
// level (a review: oldest first across tenants let a tenant within its
// rate limit empty the others' history in minutes).
func (l *RequestLog) pruneSize() error {
	target := l.maxBytes / 10 * 9
	level, cut := pruneLevel(l.shares, target)
	if cut {
		from := map[string][]byte{} // where each share's oldest entry is, at the earliest
		for _, share := range slices.Sorted(maps.Keys(l.shares)) {
			if l.shares[share] <= level {
				continue
			}
			if err := l.deleteOldestOf(share, from, level); err != nil {
				return err
			}
		}
	}
	if l.size > target {
		// The shares do not add up to the size: the oldest go, whoever's.
		return l.deleteOldest(func(_ []byte, size int64) bool { return size > target })
	}
	return nil
}

// pruneLevel returns the level to which the shares above it are cut so
// that together they take at most target, and whether any is to be cut.
func pruneLevel(shares map[string]int64, target int64) (level int64, cut bool) {
	sizes := slices.Sorted(maps.Values(shares))
	left := target
	for i, size := range sizes {
		if n := int64(len(sizes) - i); size*n > left {
			return left / n, true
		}
		left -= size
	}
	return 0, false
}

// pruneScan is how many entries of other shares one pruning transaction
// passes over at most, looking for a share's oldest.
const pruneScan = 10_000

// deleteOldestOf deletes share's entries from its oldest (at or after
// from[share], where it leaves the next search) until the share takes at
// most level, a chunk per transaction.
func (l *RequestLog) deleteOldestOf(share string, from map[string][]byte, level int64) error {
	for l.shares[share] > level {
		n := 0
		var freed int64
		var last []byte
		end := false
		err := l.store.commits.do(func(tx *bolt.Tx) error {
			n, freed, last, end = 0, 0, nil, false // a commit may run this again
			b := tx.Bucket(bucketProvLog)
			if b == nil {
				end = true
				return nil
			}
			c := b.Cursor()
			k, v := c.First()
			if start := from[share]; start != nil {
				k, v = c.Seek(start)
			}
			for scanned := 0; k != nil && n < pruneChunk && scanned < pruneScan && l.shares[share]-freed > level; k, v = c.Next() {
				last = slices.Clone(k)
				if shareOf(v) != share {
					scanned++
					continue
				}
				freed += entrySize(k, v)
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
			end = k == nil
			return nil
		})
		if err != nil {
			return err
		}
		l.shrink(share, freed)
		if last != nil {
			from[share] = last
		}
		if end {
			return nil
		}
	}
	return nil
}

// deleteOldest deletes entries from the oldest while more (given the key
// and what the log takes before deleting it) says so, a chunk per
// transaction. When the oldest is to stay it writes nothing: the prune
// every hour and at each start found nothing most times, and committed
// (a disk sync) all the same, a write that fails the relay where the
// data disk is failing (CI: the start's prune was the first to fail in a
// test that waits for a request's commit to).
func (l *RequestLog) deleteOldest(more func(k []byte, size int64) bool) error {
	var due bool
	if err := l.store.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketProvLog); b != nil {
			k, _ := b.Cursor().First()
			due = k != nil && more(k, l.size)
		}
		return nil
	}); err != nil || !due {
		return err
	}
	for {
		n := 0
		var freed int64
		shares := map[string]int64{}
		err := l.store.commits.do(func(tx *bolt.Tx) error {
			n, freed = 0, 0 // a commit may run this again
			clear(shares)
			b := tx.Bucket(bucketProvLog)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			for k, v := c.First(); k != nil && n < pruneChunk && more(k, l.size-freed); k, v = c.Next() {
				sz := entrySize(k, v)
				shares[shareOf(v)] += sz
				if err := c.Delete(); err != nil {
					return err
				}
				n++
				freed += sz
			}
			return nil
		})
		if err != nil {
			return err
		}
		for share, sz := range shares {
			l.shrink(share, sz)
		}
		if n < pruneChunk {
			return nil
		}
	}
}

// forget notes that a tenant's purge deleted entries taking freed bytes,
// by share: Run takes them off what the log and the shares take, as it
// alone keeps those figures.
func (l *RequestLog) forget(freed map[string]int64) {
	l.freedMu.Lock()
	defer l.freedMu.Unlock()
	if l.freed == nil {
		l.freed = map[string]int64{}
	}
	for share, n := range freed {
		l.freed[share] += n
	}
}

// takeFreed takes what purges deleted off the log's figures; Run's
// goroutine calls it.
func (l *RequestLog) takeFreed() {
	l.freedMu.Lock()
	freed := l.freed
	l.freed = nil
	l.freedMu.Unlock()
	for share, n := range freed {
		l.shrink(share, n)
	}
}

// shrink takes n bytes of share's entries, deleted, off what the log and
// the share take.
func (l *RequestLog) shrink(share string, n int64) {
	l.size -= n
	if l.shares[share] -= n; l.shares[share] <= 0 {
		delete(l.shares, share)
	}
}

// Oldest returns when the oldest entry was filed (its key's time); zero
// when the log is empty.
func (l *RequestLog) Oldest() (time.Time, error) {
	var t time.Time
	err := l.store.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketProvLog); b != nil {
			if k, _ := b.Cursor().First(); len(k) >= 8 {
				t = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
			}
		}
		return nil
	})
	return t, err
}

// Query returns matching entries, oldest first, or newest first with
// q.Newest.
func (l *RequestLog) Query(ctx context.Context, q LogQuery) ([]LogEntry, error) {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	first := timeKey(q.Since)
	last := []byte(nil) // exclusive; nil: none
	if !q.Until.IsZero() {
		last = timeKey(q.Until)
	}
	var after []byte
	if q.After != "" {
		k, err := decodeLogKey(q.After)
		if err != nil {
			return nil, fmt.Errorf("after: %w", err)
		}
		after = k
		if q.Newest {
			if last == nil || bytes.Compare(k, last) < 0 {
				last = k
			}
		} else if bytes.Compare(k, first) > 0 {
			first = k
		}
	}
	out := []LogEntry{}
	user := scim.Fold(q.User) // the SCIM filter's case rule: a name it calls the same is found
	err := l.scan(ctx, first, last, q.Newest, func(k, v []byte) (bool, error) {
		if after != nil && bytes.Equal(k, after) {
			return true, nil
		}
		var e LogEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return false, fmt.Errorf("decoding a log entry: %w", err)
		}
		if q.Tenant != "" && e.Tenant != q.Tenant || !StatusMatches(q.Status, e.Status) ||
			q.Operation != "" && e.Operation != q.Operation ||
			user != "" && !strings.Contains(scim.Fold(e.Name), user) && !strings.Contains(scim.Fold(e.Email), user) {
			return true, nil
		}
		e.Key = encodeLogKey(k)
		out = append(out, e)
		return len(out) < q.Limit, nil
	})
	return out, err
}

// scan calls each with the log's entries whose keys are from first up to
// last (exclusive; nil: to the end), oldest first, or newest first, until
// each returns false or an error. It reads logReadChunk entries a read
// transaction, each going on from where the last stopped: a search that
// matches little reads the whole log, 10 s at a million entries, and one
// read transaction held that long kept bbolt from remapping a data file
// that grew meanwhile, so that every SCIM write waited for the search
// (TestLogSearchReadsInChunks), and kept the pages pruning freed from
// reuse. Keys only grow, so an entry written or pruned between two chunks
// is seen or not, as between two pages, and none is seen twice.
func (l *RequestLog) scan(ctx context.Context, first, last []byte, newest bool, each func(k, v []byte) (bool, error)) error {
	for more := true; more; {
		if err := ctx.Err(); err != nil {
			return err
		}
		more = false
		err := l.store.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketProvLog)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			k, v := c.Seek(first)
			step := c.Next
			if newest {
				step = c.Prev
				if last == nil {
					k, v = c.Last()
				} else if k, v = c.Seek(last); k == nil {
					k, v = c.Last()
				} else {
					k, v = c.Prev()
				}
			}
			for n := 0; k != nil; k, v = step() {
				if bytes.Compare(k, first) < 0 || last != nil && bytes.Compare(k, last) >= 0 {
					return nil // past the window: keys are in time order
				}
				if n++; n > logReadChunk {
					// k in the next transaction: the window narrowed to it.
					if newest {
						last = append(bytes.Clone(k), 0) // the first key after k
					} else {
						first = bytes.Clone(k)
					}
					more = true
					return nil
				}
				if goOn, err := each(k, v); err != nil || !goOn {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// logReadChunk is how many entries of the log scan reads in one read
// transaction.
const logReadChunk = 4096

// timeKey is the first key an entry at t or later can have.
func timeKey(t time.Time) []byte {
	k := make([]byte, 8)
	// UnixNano is undefined outside 1678-2262: a valid RFC 3339 until=
	// such as 2300-01-01 wrapped to a negative number (an empty answer),
	// and 1600-01-01 to a positive one (every entry).
	switch {
	case t.Before(time.Unix(0, 0)):
	case t.After(time.Unix(0, math.MaxInt64)):
		binary.BigEndian.PutUint64(k, math.MaxInt64)
	default:
		binary.BigEndian.PutUint64(k, uint64(t.UnixNano()))
	}
	return k
}

// ErrLogEntryNotFound means no entry of the provisioning log has the key
// given: it never had one, or the entry is past the retention.
var ErrLogEntryNotFound = errors.New("no such log entry")

// Entry returns the entry whose key is key.
func (l *RequestLog) Entry(_ context.Context, key string) (LogEntry, error) {
	k, err := decodeLogKey(key)
	if err != nil {
		return LogEntry{}, fmt.Errorf("key %w", err)
	}
	var e LogEntry
	err = l.store.db.View(func(tx *bolt.Tx) error {
		var v []byte
		if b := tx.Bucket(bucketProvLog); b != nil {
			v = b.Get(k)
		}
		if v == nil {
			return fmt.Errorf("%w %s (entries are kept for %s)", ErrLogEntryNotFound, key, l.retention)
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decoding log entry %s: %w", key, err)
		}
		e.Key = encodeLogKey(k)
		return nil
	})
	return e, err
}

// LogCount counts a tenant's requests by status class.
type LogCount struct {
	Tenant string `json:"tenant"`
	Total  int    `json:"total"`
	Class2 int    `json:"2xx"`
	Class4 int    `json:"4xx"`
	Class5 int    `json:"5xx"`
}

// Count counts the requests since a time per tenant, in tenant order.
// It reads every entry since then, so it is meant for short windows (the
// console's last hour).
func (l *RequestLog) Count(ctx context.Context, since time.Time) ([]LogCount, error) {
	start := timeKey(since)
	counts := map[string]*LogCount{}
	err := l.scan(ctx, start, nil, false, func(_, v []byte) (bool, error) {
		var e struct {
			Tenant string `json:"tenant"`
			Status int    `json:"status"`
			Count  int    `json:"count"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return false, fmt.Errorf("decoding a log entry: %w", err)
		}
		lc := counts[e.Tenant]
		if lc == nil {
			lc = &LogCount{Tenant: e.Tenant}
			counts[e.Tenant] = lc
		}
		n := max(e.Count, 1)
		lc.Total += n
		switch e.Status / 100 {
		case 2:
			lc.Class2 += n
		case 4:
			lc.Class4 += n
		case 5:
			lc.Class5 += n
		}
		return true, nil
	})
	out := make([]LogCount, 0, len(counts))
	for _, lc := range counts {
		out = append(out, *lc)
	}
	slices.SortFunc(out, func(a, b LogCount) int { return strings.Compare(a.Tenant, b.Tenant) })
	return out, err
}

// StatusMatches compares a status with "2xx", "4xx", "5xx", "409" or "":
// the status filter of the provisioning log and of the delivery log.
func StatusMatches(want string, got int) bool {
	switch {
	case want == "":
		return true
	case len(want) == 3 && strings.HasSuffix(strings.ToLower(want), "xx"):
		return want[0] == byte('0'+got/100)
	}
	return want == fmt.Sprint(got)
}

func encodeLogKey(k []byte) string { return fmt.Sprintf("%x", k) }

// ErrInvalidLogKey means LogQuery.After is not a key Query returned.
var ErrInvalidLogKey = errors.New("not a log entry key")

func decodeLogKey(s string) ([]byte, error) {
	// hex.DecodeString reads the whole string: fmt.Sscanf's %x stopped at
	// the first byte not a hex digit and skipped leading spaces, taking
	// "<key>junk" for the key.
	k, err := hex.DecodeString(s)
	if err != nil || len(k) != 16 {
		return nil, fmt.Errorf("%q: %w", s, ErrInvalidLogKey)
	}
	return k, nil
}
