// SPDX-License-Identifier: Apache-2.0

package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions are the tunables of the SCIMRELAY stream.
type StreamOptions struct {
	Replicas   int
	MaxAge     time.Duration
	Duplicates time.Duration
	// Partitions is how many partitions the stream spreads resources over
	// (0: DefaultPartitions). Changing it on a stream that holds events
	// needs care: stored events keep their partition, so a resource can
	// have events in two partitions until the old ones are delivered.
	Partitions int
	// SigningKey is the public key the front end signs its events with
	// (Signer.PublicKey), which EnsureStream adds to the stream's metadata
	// for its readers (Trust); "" when it does not sign (NATS embedded).
	SigningKey string
	// Signed is a delivery worker's on an external NATS: OpenStream waits
	// for a stream that names its signing keys, as a front end of this
	// release makes it, since the worker takes only signed events.
	Signed bool
}

// StreamConfig returns the SCIMRELAY stream's configuration: the event
// subjects with the transform that appends each resource's partition,
// file storage, limits retention (consumers do not remove events; age
// does), the duplicate window that makes re-publishing safe, and atomic
// batches, in which the publisher sends a window's events (relay.Publisher:
// stored all or none, so that none overtakes another however the stream's
// other publishers interleave), and maxConsumers.
func StreamConfig(o StreamOptions) jetstream.StreamConfig {
	replicas := o.Replicas
	if replicas <= 0 {
		replicas = 1
	}
	partitions := o.Partitions
	if partitions <= 0 {
		partitions = DefaultPartitions
	}
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "scimrelay provisioning events (CloudEvents, binary mode)",
		Subjects:    []string{publishSubjects},
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      publishSubjects,
			Destination: partitionTransform(partitions),
		},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		Duplicates:  o.Duplicates,
		Replicas:    replicas,
		AllowDirect: true,

		AllowAtomicPublish: true,
		MaxConsumers:       maxConsumers,
	}
}

// maxConsumers bounds the consumers on the event stream: one per NATS
// subscriber, one per partition of each sink, one per tail, replay or
// redrive under way. Said on the stream, since a server holds a stream
// that says none to its default, 1,000 (nats-server 2.11 on; -1 counts as
// none): a relay of a thousand tenants, each given a subscriber scoped to
// it, refused the 985th with a 500, and a sink added after that could not
// be set up. An account limit on an external NATS, when lower, still
// holds.
const maxConsumers = 100_000

// EnsureStream creates the stream or updates it to o. While a cluster is
// electing a leader, or JetStream is not yet reachable, it retries with
// capped backoff until ctx ends; a configuration JetStream refuses fails at
// once.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions, log *slog.Logger) (jetstream.Stream, error) {
	return retryStream(ctx, o, log, func(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
		if o.SigningKey == "" {
			return js.CreateOrUpdateStream(ctx, cfg)
		}
		return ensureSigningKey(ctx, js, cfg, o.SigningKey, log)
	})
}

// ensureSigningKey creates or updates the stream to cfg with key among
// its signing keys, keeping those it named (for the events they signed).
// An update replaces the whole configuration, and JetStream has no
// compare-and-set for it: of front ends that share the stream and start
// at the same moment, one that read the keys before another's update can
// write over that one's key. So a front end that changed the keys reads
// them again keySettles later, when such a stale write has landed, and
// writes its key again if it is gone. A write that comes later still (a
// front end stalled for longer between its read and its write) leaves the
// key out until KeepSigningKey writes it back; the workers meanwhile hold
// its events, and dead-letter those still not named some seconds after
// they were stored as signed by an unknown key (sinks.Options.KeyWait;
// docs/decisions.md, Delivery). So does a front end beyond the eight whose
// keys the stream keeps.
//
// The stream's configuration is read privately (readStream), since what
// is read is written back.
func ensureSigningKey(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, key string, log *slog.Logger) (jetstream.Stream, error) {
	const rounds = 10
	for attempt := 1; ; attempt++ {
		have, err := readStream(ctx, js)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			have = nil
		} else if err != nil {
			return nil, err
		}
		if have != nil {
			// Retired keys it cannot read: the front end writes nothing
			// over them, as the workers take nothing (OpenStream).
			if _, _, err := parseRetired(have.Config.Metadata[metaRetiredKeys]); err != nil {
				return nil, err
			}
		}
		if isRetired(have, key) {
			return nil, fmt.Errorf("signing key %s: %w", key, ErrRetiredKey)
		}
		cfg.Metadata = signingMetadata(have, key, time.Now())
		if have != nil {
			was, now := strings.Fields(have.Config.Metadata[metaSigningKeys]), strings.Fields(cfg.Metadata[metaSigningKeys])
			for _, k := range was {
				if !slices.Contains(now, k) {
					log.Info("the event stream keeps the signing keys of the eight front ends that started last: the oldest is dropped; a running front end sharing the stream whose key this is has its events dead-lettered until it writes its key back, which it checks every few seconds while it runs", "check_every", KeyCheckInterval, "dropped", k, "key", key)
				}
			}
		}
		st, err := js.CreateOrUpdateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt < rounds {
			continue // another made it since it was looked up: update that
		}
		if err != nil || have != nil && have.Config.Metadata[metaSigningKeys] == cfg.Metadata[metaSigningKeys] {
			return st, err // the keys as they were: nothing of another's to write over
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(keySettles):
		}
		again, err := readStream(ctx, js)
		if err != nil {
			return nil, err
		}
		if slices.Contains(strings.Fields(again.Config.Metadata[metaSigningKeys]), key) {
			return st, nil
		}
		if attempt >= rounds {
			log.Warn("other front ends starting at the same time keep writing the event stream's signing keys without this one's: the workers hold its events, and dead-letter as signed by an unknown key those they hold too long, until it writes its key back, which it checks every few seconds while it runs", "key", key, "rounds", rounds, "check_every", KeyCheckInterval)
			return st, nil
		}
	}
}

// KeepSigningKey checks every interval, until ctx ends, that the event
// stream still names key(), the running front end's key (which keys
// rotate events changes), among its signing keys, and writes it back when
// it does not, changing nothing else of the stream's configuration as it
// stands: a write of another front end's that
// came after ensureSigningKey's re-read (one stalled between its read and
// its write), or an older release's front end, can leave it out, and the
// workers hold the events it signs until it is back, dead-lettering those
// it is not back for in time (sinks.Options.KeyWait, three intervals).
// Each time it is written back is said at Warn, with the redrive that
// delivers such dead letters; a read that fails is said
// once at Warn until one succeeds. A front end beyond the eight whose
// keys the stream keeps writes its key back each interval, dropping
// another's, which that one writes back in turn: each is said. A key the
// stream lists as retired is never written back: that is said at Warn
// each interval, since what it signs is refused. It writes back, the same
// way, the setting that takes atomic batches (AllowAtomicPublish, which
// the publisher sends its windows in), which a front end of an earlier
// release turns off as it starts: without it every front end publishes
// one event at a time. It writes back too the stream's bound on consumers
// (maxConsumers), which a front end of the previous release leaves out as
// it starts (nats-server then holds the stream to 1,000), unless the
// account refused the bound once (its own limit holds, as in EnsureStream).
func KeepSigningKey(ctx context.Context, js jetstream.JetStream, key func() string, interval time.Duration, log *slog.Logger) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	failing := false
	accountLimited := false // the account refused the stream's bound on consumers
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		key := key()
		readCtx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		info, err := readStream(readCtx, js)
		cancel()
		if err == nil && isRetired(info, key) {
			log.Warn("the event stream lists this front end's signing key as retired: it is not written back, and the workers refuse what it signs; give this front end a new key: scimrelay keys rotate events", "key", key)
			continue
		}
		named := err == nil && slices.Contains(strings.Fields(info.Config.Metadata[metaSigningKeys]), key)
		if err == nil && !named {
			log.Warn("the event stream no longer names this front end's signing key (another front end wrote its keys without it, or more than eight front ends share the stream): writing it back. The workers held what it signed meanwhile and deliver it now, in order; they dead-lettered what waited longer than three checks, as signed by an unknown key: redrive those dead letters (scimrelay dlq redrive --sink SINK --all)",
				"key", key, "named", info.Config.Metadata[metaSigningKeys])
		}
		if err == nil && !info.Config.AllowAtomicPublish {
			log.Warn("the event stream's configuration does not take atomic batches (a front end of an earlier release wrote it as it started): writing the setting back; meanwhile the front end publishes its events one at a time")
		}
		// The bound on consumers, which a front end of the previous
		// release writes the stream without as it starts (nats-server then
		// holds it to 1,000), unless the account refused it (its own limit
		// holds: EnsureStream).
		unbound := err == nil && info.Config.MaxConsumers <= 0 && !accountLimited
		if err == nil && (!named || !info.Config.AllowAtomicPublish || unbound) {
			cfg := info.Config
			cfg.AllowAtomicPublish = true
			if unbound {
				cfg.MaxConsumers = maxConsumers
			}
			_, err = ensureSigningKey(ctx, js, cfg, key, log)
			switch {
			case unbound && errors.Is(err, jetstream.ErrMaximumConsumersLimit):
				accountLimited = true
				cfg.MaxConsumers = info.Config.MaxConsumers
				_, err = ensureSigningKey(ctx, js, cfg, key, log)
			case unbound && err == nil:
				log.Warn("the event stream's configuration did not bound its consumers (a front end of an earlier release wrote it as it started, and nats-server held it to 1,000): wrote the bound back", "max_consumers", maxConsumers)
			}
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrRetiredKey):
			// Retired between the read and ensureSigningKey's: a rotation
			// of this front end's key; the next check reads the new one.
			log.Debug("the signing key was retired while it was checked", "key", key)
			err = nil
		case err != nil && !failing:
			log.Warn("checking that the event stream names this front end's signing key failed; trying again", "key", key, "every", interval, "err", err)
		case err != nil:
			log.Debug("checking the event stream's signing keys failed again", "key", key, "err", err)
		case err == nil && failing:
			log.Info("checking the event stream's signing keys works again", "key", key)
		}
		failing = err != nil
	}
}

// NameSigningKey makes key the first of the event stream's signing keys,
// keeping the others, for a front end about to sign with it (keys rotate
// events): the readers know a key before any event it signed is stored.
func NameSigningKey(ctx context.Context, js jetstream.JetStream, key string, log *slog.Logger) error {
	info, err := readStream(ctx, js)
	if err != nil {
		return err
	}
	_, err = ensureSigningKey(ctx, js, info.Config, key, log)
	return err
}

// readStream reads the event stream's information for a front end that
// writes it back (its signing keys added), on a private reply subject
// (streamInfo): js.Stream's answer comes on nats.go's shared inbox, whose
// tokens a client allowed _INBOX.> could come to predict and answer first
// with a configuration of its own (a signing key of its own, another max
// age), which the front end would then write. Like js.Stream, it waits
// js's default timeout when ctx has no deadline.
func readStream(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, js.Options().DefaultTimeout)
		defer cancel()
	}
	return streamInfo(ctx, js.Conn())
}

// KeyCheckInterval is how often a running front end that signs checks
// that the event stream names its key (KeepSigningKey): the longest its
// events are dead-lettered for after another front end wrote the key out.
const KeyCheckInterval = 5 * time.Second

// keySettles is how long a front end that wrote the signing keys waits
// before it reads them again (ensureSigningKey): far longer than another
// front end takes between its read of the keys and its write.
const keySettles = 250 * time.Millisecond

// OpenStream opens the stream as it is, waiting (AwaitMade) until the
// relay that owns it has made it. A delivery worker starts this way: the
// stream's partitions, replicas and limits are set by the SCIM front end,
// a worker whose relay.yaml differs must read them, not change them, and
// its NATS user may create no stream (README, Who can reach what). o is
// what this worker's relay.yaml says, which a difference is logged
// against.
func OpenStream(ctx context.Context, js jetstream.JetStream, o StreamOptions, log *slog.Logger) (jetstream.Stream, error) {
	var s jetstream.Stream
	what := "stream " + StreamName
	if o.Signed {
		what += " with the keys its events are signed with (a front end of this release writes them)"
	}
	err := AwaitMade(ctx, what, log, func(ctx context.Context) (err error) {
		if s, err = js.Stream(ctx, StreamName); err != nil || !o.Signed {
			return err
		}
		_, err = trustOf(s.CachedInfo().Config)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", StreamName, err)
	}
	warnIfDiffers(s.CachedInfo().Config, StreamConfig(o), log)
	return s, nil
}

// warnIfDiffers tells the operator of a worker whose relay.yaml says
// other than the stream it found: the stream's settings are in force.
func warnIfDiffers(have, want jetstream.StreamConfig, log *slog.Logger) {
	var diffs []string
	partitions := func(c jetstream.StreamConfig) int {
		n, _ := PartitionsOf(c)
		return n
	}
	if h, w := partitions(have), partitions(want); h != w {
		diffs = append(diffs, fmt.Sprintf("nats.stream.partitions: the stream has %d, relay.yaml says %d", h, w))
	}
	if have.Replicas != want.Replicas {
		diffs = append(diffs, fmt.Sprintf("nats.stream.replicas: the stream has %d, relay.yaml says %d", have.Replicas, want.Replicas))
	}
	if have.MaxAge != want.MaxAge {
		diffs = append(diffs, fmt.Sprintf("nats.stream.max_age: the stream has %s, relay.yaml says %s", have.MaxAge, want.MaxAge))
	}
	if len(diffs) > 0 {
		log.Warn("this worker's relay.yaml differs from the event stream, whose settings are in force (the SCIM relay's relay.yaml sets them)",
			"stream", StreamName, "differences", strings.Join(diffs, "; "))
	}
}

// retryStream runs op with the stream's configuration until it succeeds,
// fails for good, or ctx ends.
func retryStream(ctx context.Context, o StreamOptions, log *slog.Logger, op func(context.Context, jetstream.StreamConfig) (jetstream.Stream, error)) (jetstream.Stream, error) {
	if o.Partitions < 0 || o.Partitions > MaxPartitions {
		return nil, fmt.Errorf("stream %s: partitions must be between 1 and %d, got %d", StreamName, MaxPartitions, o.Partitions)
	}
	cfg := StreamConfig(o)
	var s jetstream.Stream
	err := Retry(ctx, "stream "+StreamName, log, func(ctx context.Context) (err error) {
		s, err = op(ctx, cfg)
		if cfg.MaxConsumers > 0 && errors.Is(err, jetstream.ErrMaximumConsumersLimit) {
			// The account (an external NATS) limits its consumers below
			// maxConsumers, and refuses a stream that says more: the
			// stream says none, and the account's limit holds
			// (TestEventStreamOnAnAccountWithAConsumerLimit).
			log.Info("the NATS account limits its consumers to fewer than the event stream would take; its limit holds", "stream", StreamName, "would_take", cfg.MaxConsumers)
			cfg.MaxConsumers = 0
			s, err = op(ctx, cfg)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", StreamName, err)
	}
	return s, nil
}

// Retry runs op, a JetStream request that may be repeated (creating or
// updating a stream, a bucket or a consumer), until it succeeds, fails for
// good, or ctx ends. Each attempt has 10 s: a request whose answer is lost
// while a cluster forms or elects a leader would otherwise wait out all of
// ctx. Errors that mean "not ready yet" are tried again, backing off from
// 100 ms to 5 s; what is what op does, for the log.
func Retry(ctx context.Context, what string, log *slog.Logger, op func(context.Context) error) error {
	return retry(ctx, what, log, op, false)
}

// AwaitMade runs op, which opens a stream or bucket that the SCIM front
// end makes, as Retry does, and tries it again while the stream or bucket
// is not there: a delivery worker that starts (or reloads) before the
// front end waits for it, since its NATS user may create none. When ctx
// ends first, the error says who makes it.
func AwaitMade(ctx context.Context, what string, log *slog.Logger, op func(context.Context) error) error {
	return retry(ctx, what, log, op, true)
}

func retry(ctx context.Context, what string, log *slog.Logger, op func(context.Context) error, awaitMade bool) error {
	backoff := 100 * time.Millisecond
	wasMissing := false
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := op(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		// ctx ending during an attempt cuts off its answer, not what the
		// attempts before it found: still not made (a flake hunt: the
		// error then said only "context deadline exceeded").
		missing := awaitMade && (notMade(err) || wasMissing && ctx.Err() != nil)
		wasMissing = missing
		if !missing && !transient(err) {
			return err
		}
		gaveUp := func() error {
			if missing {
				return fmt.Errorf("%s is not there, and a delivery worker does not make it: the SCIM front end (serve --role scim or all) does, from the same relay.yaml; start or reload it first: %w", what, ctx.Err())
			}
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		if ctx.Err() != nil {
			return gaveUp()
		}
		if missing {
			log.Info("waiting for the SCIM front end to make what this delivery worker needs", "what", what, "retry_in", backoff)
		} else {
			log.Info("waiting for JetStream to accept a request", "what", what, "reason", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return gaveUp()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// notMade reports whether err means that a stream or bucket is not there,
// or not yet as a front end of this release makes it (ErrUnsigned: one
// of an older release made the event stream, and signs nothing).
func notMade(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, ErrUnsigned)
}

// transient reports whether err means "not ready yet" rather than "never".
// errCodeNoPeers is JetStream's "no suitable peers for placement"
// (nats-server's JSClusterNoPeersErrF), which nats.go names no constant for.
const errCodeNoPeers jetstream.ErrorCode = 10005

func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return true
		case errCodeNoPeers:
			// A peer not yet back (a cluster forming, a node restarting):
			// nats-server 2.15 answers it with 400. The other reasons
			// (storage, tags) are the cluster's shape, which waiting does
			// not change.
			return strings.Contains(apiErr.Description, "peer offline")
		}
		// 503 covers "no suitable peers", "insufficient resources" while a
		// cluster forms, and "cluster not available"; JetStream answers
		// configuration mistakes with 400 or 500, which retrying cannot fix.
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		// A request while the connection reconnects: natsbus buffers none.
		errors.Is(err, nats.ErrReconnectBufExceeded)
}

// MinStreamAge is the shortest max age and duplicate window JetStream
// takes for a stream; below it the server refuses to create the stream,
// with an error that names no relay.yaml key.
const MinStreamAge = 100 * time.Millisecond

// Check reports every problem of the options at once, each naming its
// relay.yaml key ("nats.stream.replicas: ...").
func (o StreamOptions) Check() error {
	var errs []error
	switch o.Replicas {
	case 0, 1, 3, 5:
	default:
		errs = append(errs, fmt.Errorf("nats.stream.replicas: must be 0 (automatic), 1, 3 or 5, got %d", o.Replicas))
	}
	switch {
	case o.MaxAge <= 0:
		errs = append(errs, errors.New("nats.stream.max_age: must be positive, e.g. 7d"))
	case o.MaxAge < MinStreamAge:
		errs = append(errs, fmt.Errorf("nats.stream.max_age: must be at least %s (JetStream's shortest), got %s", MinStreamAge, o.MaxAge))
	}
	switch {
	case o.Duplicates <= 0:
		errs = append(errs, errors.New("nats.stream.duplicates: must be positive, e.g. 10m"))
	case o.Duplicates < MinStreamAge:
		errs = append(errs, fmt.Errorf("nats.stream.duplicates: must be at least %s (JetStream's shortest), got %s", MinStreamAge, o.Duplicates))
	case o.MaxAge > 0 && o.Duplicates > o.MaxAge:
		errs = append(errs, fmt.Errorf("nats.stream.duplicates: must not exceed nats.stream.max_age (%s)", o.MaxAge))
	}
	if o.Partitions < 0 || o.Partitions > MaxPartitions {
		errs = append(errs, fmt.Errorf("nats.stream.partitions: must be between 1 and %d (0 is the default, %d), got %d", MaxPartitions, DefaultPartitions, o.Partitions))
	}
	return errors.Join(errs...)
}

// Partitions returns the partition count of the SCIMRELAY stream as
// JetStream has it configured.
func Partitions(ctx context.Context, js jetstream.JetStream) (int, error) {
	st, err := js.Stream(ctx, StreamName)
	if err != nil {
		return 0, fmt.Errorf("opening stream %s: %w", StreamName, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading stream %s: %w", StreamName, err)
	}
	return PartitionsOf(info.Config)
}

// DeleteReader deletes the consumer made to read a stream once, when the
// reading is over: left, it would stay on the server until its inactivity
// threshold (five minutes for an ordered consumer), and a console or a
// script that reads again and again would keep one for each read. A
// failure is left to that threshold.
func DeleteReader(st jetstream.Stream, cons jetstream.Consumer) {
	ci := cons.CachedInfo()
	if ci == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = st.DeleteConsumer(ctx, ci.Name)
}
