// Package relay is the Backend behind the SCIM handlers: the bbolt identity
// index (users, groups, memberships, secondary indexes, tokens), the events
// every change produces, the outbox that carries them to NATS JetStream in
// the same transaction as the change, and the publisher that drains it.
// It does not speak HTTP.
//
// # Layout of the bbolt file
//
//	meta                      "outbox" → uint64 commit counter
//	outbox                    u64be commit number → event (structured CloudEvent JSON)
//	tokens                    token id → token record (JSON)
//	tenants/<name>/
//	    users                 id → record
//	    groups                id → record (without members)
//	    counters              "sequence" → uint64, the tenant's last event sequence
//	    ix_username           key(lower(userName)) ‖ id → ∅
//	    ix_email              key(lower(emails[].value)) ‖ id → ∅
//	    ix_workemail          key(lower(work email)) ‖ id → ∅
//	    ix_user_ext           key(externalId) ‖ id → ∅
//	    ix_group_ext          key(externalId) ‖ id → ∅
//	    ix_displayname        key(lower(displayName)) ‖ id → ∅
//	    members               groupID ‖ 0x00 ‖ memberID → member record (JSON)
//	    memberof              memberID ‖ 0x00 ‖ groupID → ∅
//
// A record is 16 bytes of header (the resource's subjectseq and version as
// big-endian uint64) followed by the resource's canonical JSON. key(v) is v
// prefixed with its length as a uvarint, so that no value is a prefix of
// another. Resource ids are UUIDv7, so id order is creation order: the stable
// order of lists and of a group's members.
//
// Every write goes through bbolt's Batch, so that concurrent SCIM requests
// share one transaction and one fsync.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/scimrelay/scimrelay/scim"
)

// TenantOptions configures one tenant.
type TenantOptions struct {
	Name string
	// Unique is "userName" (default) or "email": what must be unique among users.
	Unique string
	// Required lists User attributes every user must carry, e.g. "emails".
	Required []string
	// StaticTokens are bearer tokens from relay.yaml, accepted besides stored ones.
	StaticTokens []string
}

// Options configures a Store.
type Options struct {
	Tenants []TenantOptions
	// PublicURL, when set, gives events' resources a meta.location.
	PublicURL string
	// BatchDelay and BatchSize tune bbolt's Batch.
	BatchDelay time.Duration
	BatchSize  int
	// NoSync skips fsync; acknowledged writes can be lost. Benchmarks only.
	NoSync bool
	Logger *slog.Logger
	// Now returns the current time; tests set it.
	Now func() time.Time
}

// Store is the relay's bbolt identity index.
type Store struct {
	db        *bolt.DB
	log       *slog.Logger
	now       func() time.Time
	publicURL string
	tenants   map[string]*tenant
	ready     chan struct{} // signalled after every commit that added events

	tokens *tokenCache

	stop chan struct{}
	wg   sync.WaitGroup
}

var (
	_ scim.Backend       = (*Store)(nil)
	_ scim.Authenticator = (*Store)(nil)
)

// tenant is a tenant's configuration, resolved.
type tenant struct {
	name        string
	uniqueEmail bool
	required    []requirement
	static      [][32]byte // SHA-256 of the static tokens
}

type requirement struct {
	path    string
	present *scim.Filter
}

// Bucket names.
var (
	bucketMeta     = []byte("meta")
	bucketOutbox   = []byte("outbox")
	bucketTokens   = []byte("tokens")
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
	keySequence      = []byte("sequence")
)

// ErrInUse means another process holds the data file.
var ErrInUse = errors.New("data file is in use by another scimrelay process")

// Open opens (creating if needed) the bbolt file at path.
func Open(path string, o Options) (*Store, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	tenants, err := resolveTenants(o.Tenants)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: o.NoSync, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("opening %s: %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	db.MaxBatchDelay = o.BatchDelay
	if o.BatchSize > 0 {
		db.MaxBatchSize = o.BatchSize
	}
	s := &Store{
		db:        db,
		log:       log,
		now:       now,
		publicURL: strings.TrimRight(o.PublicURL, "/"),
		tenants:   tenants,
		ready:     make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketOutbox, bucketTokens} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		root, err := tx.CreateBucketIfNotExists(bucketTenants)
		if err != nil {
			return err
		}
		for name := range tenants {
			tb, err := root.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			for _, b := range tenantBuckets {
				if _, err := tb.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("preparing %s: %w", path, err)
	}
	if s.tokens, err = loadTokens(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.flushLoop()
	return s, nil
}

func resolveTenants(list []TenantOptions) (map[string]*tenant, error) {
	out := make(map[string]*tenant, len(list))
	for _, o := range list {
		t := &tenant{name: o.Name, uniqueEmail: strings.EqualFold(o.Unique, "email")}
		for _, r := range o.Required {
			f, err := scim.ParseFilter(scim.UserResourceType, r+" pr")
			if err != nil {
				return nil, fmt.Errorf("tenant %s: required attribute %q: %w", o.Name, r, err)
			}
			t.required = append(t.required, requirement{path: r, present: f})
		}
		for _, tok := range o.StaticTokens {
			if tok != "" {
				t.static = append(t.static, hashToken(tok))
			}
		}
		out[o.Name] = t
	}
	return out, nil
}

// Close flushes token use times and closes the file.
func (s *Store) Close() error {
	close(s.stop)
	s.wg.Wait()
	flushErr := s.flushTokenUse()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing the data file: %w", err)
	}
	return flushErr
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

// OutboxReady is signalled after every commit that added events.
func (s *Store) OutboxReady() <-chan struct{} { return s.ready }

func (s *Store) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Backup writes a consistent copy of the data file to w while the store
// keeps serving.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("writing backup: %w", err)
	}
	return n, nil
}

// Ping reports whether the data file is open and readable.
func (s *Store) Ping() error {
	return s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return errors.New("data file has no meta bucket")
		}
		return nil
	})
}

// Tenants returns the names of the configured tenants.
func (s *Store) Tenants() []string {
	out := make([]string, 0, len(s.tenants))
	for name := range s.tenants {
		out = append(out, name)
	}
	return out
}

// write runs fn in a batched write transaction. fn reports a refusal
// (validation, uniqueness, not found) through its result rather than its
// error, having written nothing, so that a refused request does not roll
// back the other requests sharing its batch; an error fn returns aborts
// the transaction.
func (s *Store) write(ctx context.Context, fn func(tx *bolt.Tx, w *txWrite) error) (*txWrite, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var w *txWrite
	err := s.db.Batch(func(tx *bolt.Tx) error {
		w = &txWrite{store: s} // Batch may run fn again: start clean
		return fn(tx, w)
	})
	if err != nil {
		return nil, err
	}
	if w.refused != nil {
		return nil, w.refused
	}
	if len(w.eventIDs) > 0 {
		s.signal()
		if rec := recorderFrom(ctx); rec != nil {
			rec.add(w.eventIDs)
		}
	}
	return w, nil
}

// txWrite collects what a write transaction did.
type txWrite struct {
	store    *Store
	refused  error
	eventIDs []string
	result   *scim.Resource
}

// refuse records a refusal. Only a function that has not written anything
// may refuse; one that finds a problem after writing returns it as an error,
// which rolls the transaction back.
func (w *txWrite) refuse(err error) error {
	w.refused = err
	return nil
}

// EventRecorder collects the ids of the events a request produced, for the
// provisioning log.
type EventRecorder struct {
	mu  sync.Mutex
	ids []string
}

type recorderKey struct{}

// WithEventRecorder returns a context whose writes report their event ids
// to the returned recorder.
func WithEventRecorder(ctx context.Context) (context.Context, *EventRecorder) {
	r := &EventRecorder{}
	return context.WithValue(ctx, recorderKey{}, r), r
}

func recorderFrom(ctx context.Context) *EventRecorder {
	r, _ := ctx.Value(recorderKey{}).(*EventRecorder)
	return r
}

func (r *EventRecorder) add(ids []string) {
	r.mu.Lock()
	r.ids = append(r.ids, ids...)
	r.mu.Unlock()
}

// IDs returns the recorded event ids.
func (r *EventRecorder) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}
