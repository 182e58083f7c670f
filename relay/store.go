// SPDX-License-Identifier: Apache-2.0

// Package relay is the Backend behind the SCIM handlers: the bbolt identity
// index (users, groups, memberships, secondary indexes, tokens), the events
// every change produces, the outbox that carries them to NATS JetStream in
// the same transaction as the change, and the publisher that drains it.
// It does not speak HTTP.
//
// # Layout of the bbolt file
//
//	meta                      "outbox" → u64 global commit counter of outbox rows
//	                          "layout" → u64 version of this layout (4)
//	                          "oauth_key" → 32 random bytes, the access-token signing key (clients.go; replaced by keys rotate oauth: keys.go)
//	                          "oauth_key_created" → u64 unix nanoseconds, when oauth_key was made by a rotation (absent before the first; an older release ignores it)
//	                          "oauth_key_previous", "oauth_key_previous_until" → the key a rotation replaced and the u64 unix nanoseconds until which it still verifies (absent when none; an older release ignores them)
//	                          "event_signing_seed" → 32 random bytes, the seed of the Ed25519 key events are signed with on an external NATS (made at the first open, replaced by keys rotate events: keys.go; an older release ignores it)
//	                          "event_signing_retiring" → the public keys, space-separated, of seeds a rotation replaced that the event stream may not have retired yet (keys.go; absent when none)
//	                          "tenants" → JSON list of the tenants configured when a start last said its notes, or a reload set them (leftovers.go)
//	                          "purging" → JSON list of the tenants whose purge began and has not finished (purge.go)
//	                          "fold_unicode" → the Unicode version (unicode.Version) of the case tables the folded index keys were built with (absent: 15.0.0; foldtables.go)
//	                          "static_token_use" → JSON object from the id of each relay.yaml token (yaml_ and the first 12 hex digits of its SHA-256) to its last use (statictokens.go; an older release ignores it)
//	outbox                    u64 commit number → event, as the NATS message to publish (events.Message's stored form)
//	quarantine                u64 commit number → outbox row that could not be published (JSON: reason, time, row)
//	tokens                    id → credential record (JSON: kind token or client, secret as SHA-256)
//	subscribers               name → NATS subscriber (JSON: public nkey, subject pattern)
//	purged                    name → u64, the last event sequence of a tenant purged and not configured since (purge.go)
//	provlog                   the provisioning log (see provlog.go)
//	tenants/<name>/
//	    users                 id → record
//	    groups                id → record (never members)
//	    counters              "sequence" → u64, the tenant's last event sequence
//	    ix_username           ix(scim.Fold(userName)) ‖ id → ∅
//	    ix_email              ix(scim.Fold(emails[].value)) ‖ id → ∅
//	    ix_workemail          ix(scim.Fold(each work email)) ‖ id → ∅
//	    ix_user_ext           ix(externalId) ‖ id → ∅
//	    ix_group_ext          ix(externalId) ‖ id → ∅
//	    ix_displayname        ix(scim.Fold(displayName)) ‖ id → ∅  (groups)
//	    members               groupID ‖ 0x00 ‖ memberID → member record (JSON)
//	    memberof              memberID ‖ 0x00 ‖ groupID → ∅
//
// u64 is a big-endian uint64, so counters sort numerically. A record is 16
// bytes of header (the resource's subjectseq and version as u64) followed by
// the resource's canonical JSON without meta.location. ix(v) is v with every
// 0x00 written as 0x00 0xFF, then a 0x00 0x00 terminator: no indexed value
// is a prefix of another, and keys still sort by value, then by id. scim.Fold(v)
// maps every rune to one representative of its Unicode simple-folding orbit
// (ASCII in lower case), so that two values share an index key exactly when
// strings.EqualFold, which filters and uniqueness use, calls them equal.
// A User's work emails (scim.Resource.WorkEmails) are every email typed
// "work", or when none is, the primary one, else the first.
// Indexes are not unique in themselves: uniqueness is checked on them per
// tenant (userName, or every work email in email mode, and group
// displayName), and externalId is deliberately not unique, since real
// clients give many users one externalId.
//
// Layout 3 changed the outbox rows only: layout 2 stored each event as a
// structured CloudEvent in JSON, which the publisher decoded and encoded
// again. Open takes a layout 2 file's rows as they are; they are read by
// the decoder of the time (readOutboxRow) until published, so that no
// acknowledged event is lost across an upgrade. A release before layout 3
// refuses a file marked 3, whose rows it could not read.
//
// Layout 4 indexes every work email in ix_workemail, where layouts 2 and 3
// indexed the first alone. Open upgrades a file of either by adding the
// missing keys from the stored users (upgradeLayout), and marks it 4 when
// all are in.
//
// The bucket purged came after layout 4 without changing its version: a
// release before it leaves the bucket alone, and a tenant it adds again
// under a purged name starts its events' sequence at 1, as it did. A
// later release that then finds the tenant configured moves its sequence
// past the purged one's; one that finds it purged again by the earlier
// release keeps the first purge's number, below the second tenant's.
// Releases are not downgraded across a purge.
//
// Resource ids are UUIDv7 strings, so id order is the order creates were
// prepared in (before each waits for its commit, so not quite commit
// order): the stable order of lists and of a group's members. Memberships live in their
// own keys, never in the group's record, so that changing one member of a
// group of 100,000 touches a handful of keys.
//
// Every write goes through a group commit (committer), so that concurrent
// SCIM requests share one transaction and one fsync. A commit may run a
// function more than once; the functions here, and the scim.UpdateFunc they
// call, change nothing but the transaction.
package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/scimrelay/scimrelay/relay/disk"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// Options configures a Store.
type Options struct {
	Tenants []TenantOptions
	// PublicURL, when set, gives the resource inside each event a
	// meta.location: an event leaves the relay, so it carries the absolute
	// URL. It is never stored, and what the Backend methods return has no
	// location (the SCIM handler sets it from the URL the client used).
	PublicURL string
	// BatchDelay is how long a write that finds no commit under way waits
	// for others to share its transaction and fsync, at most 100 ms (writes
	// that arrive during a commit share the next one anyway; see
	// committer). Set, it replaces the committer's own wait for the
	// writers its last commit answered (gather). BatchSize caps how many
	// share one (0: 1000).
	BatchDelay time.Duration
	BatchSize  int
	// NoSync skips fsync; acknowledged writes can be lost. Benchmarks only.
	NoSync bool
	Logger *slog.Logger
	// Now returns the current time; tests set it.
	Now func() time.Time
	// Tracer, when set, traces each commit as a child of the request's
	// span, and gives the events it writes the request's trace context
	// (events.TraceExtensions). Nil: no tracing, at no cost.
	Tracer trace.Tracer
}

// Store is the relay's bbolt identity index. It is safe for concurrent use.
type Store struct {
	db        *bolt.DB
	commits   *committer // every write goes through it
	log       *slog.Logger
	now       func() time.Time
	publicURL string
	tracer    trace.Tracer                       // nil: no tracing
	tenants   atomic.Pointer[map[string]*tenant] // replaced whole by SetTenants
	ready     chan struct{}                      // signalled after every commit that added events
	depth     atomic.Int64                       // rows in the outbox
	// maxEvent is the largest event the bus takes (LimitEvents); 0: no
	// limit known.
	maxEvent atomic.Int64

	tokens    *tokenCache
	oauth     atomic.Pointer[oauthKeys] // sign and verify access tokens (clients.go, keys.go)
	keyMu     sync.Mutex                // one key rotation at a time; guards eventSeed
	eventSeed []byte                    // of the key events are signed with on an external NATS

	// full is set when a write failed for want of disk space, and cleared
	// when the disk has room again (minFreeToWrite; roomAgain).
	full atomic.Bool
	dir  string // the data file's directory

	// maxExamined is maxMembershipsExamined; tests lower it.
	maxExamined int
	// charge takes requests from a tenant's rate limit (ChargeTo).
	charge func(tenant string, requests int)

	// addedAtOpen are the tenants configured at Open that the file did
	// not record as configured before (AddedSinceLastRun).
	addedAtOpen []string

	// failed is closed once a commit failed in bbolt itself (see
	// ErrWritesStopped); failure says why.
	failed     chan struct{}
	failure    error
	failedOnce sync.Once

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var (
	_ scim.Backend       = (*Store)(nil)
	_ scim.Authenticator = (*Store)(nil)
	_ scim.TenantRules   = (*Store)(nil)
)

// Bucket names.
var (
	bucketMeta     = []byte("meta")
	bucketOutbox   = []byte("outbox")
	bucketQuarant  = []byte("quarantine")
	bucketTokens   = []byte("tokens")
	bucketPurged   = []byte("purged")
	bucketTenants  = []byte("tenants")
	bucketUsers    = []byte("users")
	bucketGroups   = []byte("groups")
	bucketCounters = []byte("counters")
	bucketMembers  = []byte("members")
	bucketMemberOf = []byte("memberof")
	ixUserName     = []byte("ix_username")
	ixEmail        = []byte("ix_email")
	ixWorkEmail    = []byte("ix_workemail")
	ixUserExt      = []byte("ix_user_ext")
	ixGroupExt     = []byte("ix_group_ext")
	ixDisplayName  = []byte("ix_displayname")

	tenantBuckets = [][]byte{bucketUsers, bucketGroups, bucketCounters, bucketMembers, bucketMemberOf,
		ixUserName, ixEmail, ixWorkEmail, ixUserExt, ixGroupExt, ixDisplayName}
	keyOutboxCounter = []byte("outbox")
	keyLayout        = []byte("layout")
	// keyUpgradingFrom holds the layout an upgrade under way began from,
	// while keyLayout already says layoutVersion (upgradeLayout).
	keyUpgradingFrom = []byte("upgrading_from")
	keySequence      = []byte("sequence")
)

// layoutVersion is the version of the layout described in the package
// documentation; Open upgrades a file of upgradableLayout up to it, and
// refuses any other.
const (
	layoutVersion    = 4
	upgradableLayout = 2
)

// loadSecret returns the 32 random bytes kept in the meta bucket under
// key, making them on first use; what names them in an error.
func loadSecret(db *bolt.DB, key []byte, what string) ([]byte, error) {
	var secret []byte
	err := db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if k := meta.Get(key); len(k) == 32 {
			secret = bytes.Clone(k)
			return nil
		}
		secret = make([]byte, 32)
		_, _ = rand.Read(secret) // crypto/rand.Read never fails (Go 1.24+)
		return meta.Put(key, secret)
	})
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", what, err)
	}
	return secret, nil
}

var keyEventSigning = []byte("event_signing_seed")

// EventSigningSeed returns the seed of the Ed25519 key the relay signs its
// events with on an external NATS (events.Signer), made when the data file
// is first opened and kept in it, so that a backup restores it with the
// rest.
func (s *Store) EventSigningSeed() []byte {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	return bytes.Clone(s.eventSeed)
}

// lockTimeout is how long Open waits for the file lock: long enough to ride
// out a restart's overlap, short enough that a second process fails at once.
const lockTimeout = time.Second

// initialMmapSize is address space, not memory: mapping 1 GiB from the
// start means the file seldom has to be remapped as it grows, and a remap
// waits for every open read transaction, so a long List scan or a backup
// would otherwise stall every write behind it.
const initialMmapSize = 1 << 30

// Open opens (creating if needed) the bbolt file at path. A file another
// process holds is refused after a second with an error matching ErrInUse.
func Open(path string, o Options) (*Store, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	tenants, err := o.resolve()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	// bbolt's open for writing rebuilds the free list by reading every
	// page, in a goroutine where a damaged page, or one past the end of a
	// file cut short, ends the process: read first where a panic can be
	// taken.
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
		if err := checkPages(path, "the data file", nil); err != nil {
			if errors.Is(err, bolterrors.ErrTimeout) {
				return nil, fmt.Errorf("data file %s is %w", path, ErrInUse)
			}
			return nil, fmt.Errorf("data file %s cannot be read: %w; restore it from a backup (scimrelay restore)", path, err)
		}
	}
	// The freelist is not written on commit (less to fsync) and is rebuilt
	// on open by scanning the file.
	db, err := openDataFile(path, &bolt.Options{Timeout: lockTimeout, NoSync: o.NoSync, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: initialMmapSize})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("data file %s is %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("opening data file %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		log:       log,
		now:       now,
		publicURL: strings.TrimRight(o.PublicURL, "/"),
		tracer:    o.Tracer,
		ready:     make(chan struct{}, 1),
		stop:      make(chan struct{}),
		failed:    make(chan struct{}),
		dir:       filepath.Dir(path),

		maxExamined: maxMembershipsExamined,
	}
	s.tenants.Store(&tenants)
	var layout uint64
	if err := db.Update(func(tx *bolt.Tx) (err error) {
		if layout, err = prepare(tx, tenants); err != nil {
			return err
		}
		if err := refuseBeingPurged(tx, tenants); err != nil {
			return err
		}
		before, known := recordedTenants(tx)
		s.addedAtOpen = nil
		for name := range tenants {
			if known && !slices.Contains(before, name) {
				s.addedAtOpen = append(s.addedAtOpen, name)
			}
		}
		slices.Sort(s.addedAtOpen)
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("preparing data file %s: %w", path, err)
	}
	if layout != layoutVersion {
		if err := s.upgradeLayout(layout); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("upgrading data file %s from layout %d: %w", path, layout, err)
		}
	}
	if err := s.refoldIndexes(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("upgrading data file %s: %w", path, err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		s.depth.Store(int64(tx.Bucket(bucketOutbox).Stats().KeyN))
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("counting the outbox of %s: %w", path, err)
	}
	if s.tokens, err = loadTokens(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := markReplacedOnce(db, s.tokens); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("marking the credentials earlier rotations replaced in %s: %w", path, err)
	}
	if err := s.tokens.refuseShared(tenants); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.tokens.trackStatic(tenants)
	if err := s.loadOAuthKeys(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if s.eventSeed, err = loadSecret(db, keyEventSigning, "the event-signing key"); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.commits = newCommitter(db, o.BatchSize, o.BatchDelay, s.stopWrites)
	s.wg.Add(1)
	go s.flushLoop()
	return s, nil
}

// prepare creates the buckets and checks the layout version, returning it:
// layoutVersion, or an older one Open upgrades (upgradeLayout).
func prepare(tx *bolt.Tx, tenants map[string]*tenant) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		if tx.Bucket(bucketTenants) != nil {
			return 0, errors.New("the file has tenants but no meta bucket; it is not a scimrelay data file")
		}
		// A new data file has no bucket yet; one with buckets and no meta
		// is another program's bbolt file (CheckCopy refuses it too).
		if name, _ := tx.Cursor().First(); name != nil {
			return 0, fmt.Errorf("the file holds a bucket %q but no meta bucket; it is not a scimrelay data file", scim.Truncate(string(name), 64))
		}
		var err error
		if meta, err = tx.CreateBucket(bucketMeta); err != nil {
			return 0, err
		}
		if err := meta.Put(keyLayout, u64(layoutVersion)); err != nil {
			return 0, err
		}
	}
	layout, err := readableLayout(meta)
	if err != nil {
		return 0, err
	}
	if layout != layoutVersion && meta.Get(keyUpgradingFrom) == nil {
		// Marked before anything changes (upgradeLayout).
		if err := meta.Put(keyUpgradingFrom, u64(layout)); err != nil {
			return 0, err
		}
		if err := meta.Put(keyLayout, u64(layoutVersion)); err != nil {
			return 0, err
		}
	}
	for _, b := range [][]byte{bucketOutbox, bucketQuarant, bucketTokens, bucketSubscribers, bucketPurged} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return 0, err
		}
	}
	root, err := tx.CreateBucketIfNotExists(bucketTenants)
	if err != nil {
		return 0, err
	}
	for name := range tenants {
		tb, err := root.CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return 0, fmt.Errorf("tenant %s: %w", name, err)
		}
		for _, b := range tenantBuckets {
			if _, err := tb.CreateBucketIfNotExists(b); err != nil {
				return 0, fmt.Errorf("tenant %s: %w", name, err)
			}
		}
		if err := continueSequence(tx, tb, name); err != nil {
			return 0, fmt.Errorf("tenant %s: %w", name, err)
		}
	}
	return layout, nil
}

// maxBatchDelay bounds storage.batch_delay: a write waits at most this long
// for others to share its fsync, which a SCIM client feels on every write.
const maxBatchDelay = 100 * time.Millisecond

// Check reports every problem of the options at once, each naming its
// relay.yaml key ("tenants[1].unique: ..."), without opening anything. Open
// refuses exactly what Check refuses.
func (o Options) Check() error {
	_, err := o.resolve()
	return err
}

// Close flushes token use times and closes the file. Calling it again does nothing.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		flushErr := s.flushTokenUse()
		s.commits.close()
		if cerr := s.db.Close(); cerr != nil {
			err = fmt.Errorf("closing the data file: %w", cerr)
			return
		}
		err = flushErr
	})
	return err
}

// flushLoop writes token last-use times once a minute, so that
// authentication never costs a write.
func (s *Store) flushLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.flushTokenUse(); err != nil {
				s.log.Warn("recording token use", "err", err)
			}
		}
	}
}

// OutboxReady is signalled (capacity 1, never blocking the writer) after
// every commit that added events, so that a publisher wakes at once.
func (s *Store) OutboxReady() <-chan struct{} { return s.ready }

func (s *Store) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// pingBegun, when set, is called by Ping once its read transaction has
// begun: a variable only so that a test can commit a write there.
var pingBegun func()

// Ping reports whether the data file is open and readable, and still the
// file the relay wrote: one written by something else (ErrFileReplaced)
// stops writes, as a failed commit does.
func (s *Store) Ping() error {
	// Read before the transaction begins: a commit that ends meanwhile
	// raises last above the transaction's id, on the relay's own file too.
	known := s.commits.last.Load()
	return s.db.View(func(tx *bolt.Tx) error {
		if pingBegun != nil {
			pingBegun()
		}
		// Seen here too, not only at the next write: the readiness
		// check calls Ping, so a relay whose file was replaced stops
		// even while nothing is written.
		if err := s.commits.replaced(known, tx.ID(), false); err != nil {
			s.commits.fail(err)
			return s.commits.stopped()
		}
		if tx.Bucket(bucketMeta) == nil {
			return errors.New("data file has no meta bucket")
		}
		return nil
	})
}

// diskFull reports whether err means the disk (or the quota) has no room.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Writable reports whether the store can commit writes: after a write
// failed for want of space, not until the data file's disk has room again
// (minFreeToWrite free; a write that fits meanwhile does not make room).
func (s *Store) Writable() error {
	if err := s.commits.stopped(); err != nil {
		return err
	}
	if !s.full.Load() {
		return nil
	}
	free, err := disk.Free(s.dir)
	switch {
	case err != nil:
		return fmt.Errorf("the data disk was full; its free space is unknown: %w", err)
	case free < minFreeToWrite:
		return fmt.Errorf("the data disk is full (%d KiB free)", free>>10)
	}
	s.roomAgain()
	return nil
}

// roomAgain notes that the data disk has room again, saying so once (at
// Info: nothing is wrong any more): after a write failed for want of space,
// only once the disk has minFreeToWrite free, as Writable asks, not when a
// write merely fitted into pages bbolt had freed in the file. Under load
// such a write and the next one's failure alternated, and the log said
// "full" and "room again" each a few times in 45 s (on-call review).
func (s *Store) roomAgain() {
	if !s.full.Load() {
		return
	}
	if free, err := disk.Free(s.dir); err != nil || free < minFreeToWrite {
		return
	}
	if s.full.Swap(false) {
		s.log.Info("the data disk has room again; SCIM writes are taken")
	}
}

// stopWrites is told, once, that a commit failed in bbolt itself or the
// file was replaced: the store writes nothing more (ErrWritesStopped) and
// Failed is closed.
func (s *Store) stopWrites(err error) {
	s.failedOnce.Do(func() {
		s.failure = err
		s.log.Error("the relay cannot write its data file safely: it writes nothing more and stops; it reads the data file from disk when it starts again", "err", err)
		close(s.failed)
	})
}

// Failed is closed once a commit to the data file has failed in bbolt
// itself (an I/O error writing or flushing it; a full disk apart): the
// store refuses every write from then on, and the process should stop
// and start again (ErrWritesStopped). Failure says why.
func (s *Store) Failed() <-chan struct{} { return s.failed }

// Failure is why Failed was closed (an error matching ErrWritesStopped),
// or nil.
func (s *Store) Failure() error {
	select {
	case <-s.failed:
		return fmt.Errorf("%w (%w)", ErrWritesStopped, s.failure)
	default:
		return nil
	}
}

// minFreeToWrite is the room the data disk needs before the store says it
// can write again: a batch of writes and the pages bbolt copies for it.
const minFreeToWrite = 4 << 20

// write runs fn, a write of tenant's ("" for none), in a group commit
// (commit.go). fn reports a refusal (validation, uniqueness, not found)
// through w.refuse rather than its error, having written nothing, so that
// a refused request does not roll back the other requests sharing its
// commit; an error fn returns aborts the transaction (the committer then
// reruns the others without it). The tenant is charged for the work the
// write did (cost.go), refused or not.
func (s *Store) write(ctx context.Context, tenant string, fn func(tx *bolt.Tx, w *txWrite) error) (scim.WriteResult, error) {
	if err := ctx.Err(); err != nil {
		return scim.WriteResult{}, err
	}
	ext := s.eventExtensions(ctx)
	var span trace.Span
	if s.tracer != nil {
		// The commit is a span of its own beneath the request's.
		_, span = s.tracer.Start(ctx, "commit", trace.WithAttributes(attribute.String("db.system.name", "bbolt")))
		defer span.End()
	}
	var w *txWrite
	err := s.commits.do(func(tx *bolt.Tx) error {
		w = &txWrite{store: s, now: s.now(), ext: ext, examined: budget{limit: s.maxExamined}, answered: budget{limit: math.MaxInt}} // a commit may run fn again: start clean
		return fn(tx, w)
	})
	if w != nil {
		events := len(w.eventIDs)
		if err != nil {
			events = 0 // not stored; the walk was done all the same
		}
		s.chargeFor(tenant, work{events: events, memberships: w.examined.spent + w.answered.spent, stored: w.bytes})
	}
	if err != nil {
		if span != nil {
			span.SetStatus(codes.Error, "writing to the data file failed") // never the error: it may quote a userName
		}
		if diskFull(err) {
			if !s.full.Swap(true) { // said once, not for each write refused
				s.log.Error("the data disk is full; SCIM writes are refused until there is room", "err", err)
			}
			return scim.WriteResult{}, scim.Errorf(scim.ErrInsufficientStorage, "the relay's data disk is full: the change was not saved; retry later")
		}
		if s.commits.stopped() != nil {
			return scim.WriteResult{}, scim.Errorf(scim.ErrUnavailable, "the relay could not write its data file: the change was not saved; it is restarting, retry later")
		}
		return scim.WriteResult{}, err
	}
	s.roomAgain()
	if span != nil {
		span.SetAttributes(attribute.Int("scimrelay.events", len(w.eventIDs)))
	}
	if w.refused != nil {
		return scim.WriteResult{Deleted: w.deleted}, w.refused
	}
	if len(w.eventIDs) > 0 {
		s.depth.Add(int64(len(w.eventIDs)))
		s.signal()
	}
	return scim.WriteResult{Resource: w.result, EventIDs: w.eventIDs, Deleted: w.deleted}, nil
}

// eventExtensions are the extension attributes of the events a request
// writes: its trace context when the relay traces, else none.
func (s *Store) eventExtensions(ctx context.Context) map[string]string {
	if s.tracer == nil {
		return nil
	}
	return events.TraceExtensions(ctx)
}

// txWrite collects what one run of a write transaction did.
type txWrite struct {
	store   *Store
	deleted *scim.Resource // what a Delete removed
	now     time.Time      // one time for the whole change: lastModified and event time agree
	// ext is the request's trace context (events.TraceExtensions), which
	// every event of the change carries; nil when not tracing.
	ext      map[string]string
	refused  error
	eventIDs []string
	// examined counts the memberships the write read one by one (the
	// membership bound).
	examined budget
	// answered counts the memberships read for the answer (a user's
	// groups), charged as examined is but never refused: the write is done.
	answered budget
	// bytes counts the stored resources' bytes the write read and encoded
	// (BytesPerRequest).
	bytes  int
	result *scim.Resource // the resource as stored; nil after a delete
}

// refuse records a refusal. Only a function that has not written anything
// may refuse; one that finds a problem after writing returns it as an error,
// which rolls the transaction back.
func (w *txWrite) refuse(err error) error {
	w.refused = err
	return nil
}
