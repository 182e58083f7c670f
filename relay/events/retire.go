// SPDX-License-Identifier: Apache-2.0

package events

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A front end's key is retired when it gets a new one (scimrelay keys
// rotate events), after a leak of its data file or a backup: the stream
// stops naming it among its signing keys, and names it among its retired
// keys with a bound. An event it signed stays verifiable when the event
// stream stored it at a sequence up to the bound (a dead letter, verified
// by when its queue stored it: before the retirement); anything else it
// signed is refused as an unknown key's. The bound is in metadata of its
// own, so that the signing keys read as before by readers of an older
// release (which know nothing of retirement, and refuse as an unknown
// key's whatever a retired key signed, stored before the bound or not).
const (
	// metaRetiredKeys lists the retired keys, newest first, separated by
	// spaces, each "key:seq:time": the key, the last stream sequence
	// when it was retired, and when, by the server's clock, in RFC 3339.
	metaRetiredKeys = "scimrelay_retired_keys"
	// maxRetiredKeys is how many retired keys the stream lists. Beyond
	// it, the oldest is dropped (after those whose events aged out of
	// the stream and of the dead-letter queue): what it signed is then
	// refused as an unknown key's.
	maxRetiredKeys = 32
	// metaDroppedKeys lists, newest first, separated by spaces, the
	// retired keys no longer listed with a bound: they verify nothing,
	// and no front end may name them again (one whose data file is a
	// backup from before the rotation, restored after the key's events
	// aged out, would otherwise sign with the key that leaked).
	metaDroppedKeys = "scimrelay_dropped_keys"
	// maxDroppedKeys is how many dropped keys the stream remembers, 44
	// bytes each; past it the oldest is forgotten (a key rotated out more
	// than maxRetiredKeys+maxDroppedKeys rotations ago).
	maxDroppedKeys = 256
	// retiredKept is how long after its retirement a key's dead letters
	// may still be redriven: the dead-letter queue keeps them 30 days
	// (sinks' dlqRetention), and a day more covers clocks apart.
	retiredKept = 31 * 24 * time.Hour
)

// ErrRetiredKey means a front end's key is among the stream's retired
// keys: it must not sign, nor be named again.
var ErrRetiredKey = errors.New("the event stream lists this signing key as retired")

// retiredKey is a retired key and its bound.
type retiredKey struct {
	name string
	key  ed25519.PublicKey
	upTo uint64    // the last stream sequence when it was retired
	at   time.Time // when, by the server's clock
}

// signed reports whether an event stored at seq (0: not in the event
// stream, stored then) was stored before the key was retired.
func (r retiredKey) signed(seq uint64, stored time.Time) bool {
	if seq != 0 {
		return seq <= r.upTo
	}
	return !stored.IsZero() && stored.Before(r.at)
}

func (r retiredKey) String() string {
	return r.name + ":" + strconv.FormatUint(r.upTo, 10) + ":" + r.at.UTC().Format(time.RFC3339Nano)
}

// parseRetired reads the retired keys of the stream's metadata, by name
// and in their order.
func parseRetired(v string) (map[string]retiredKey, []retiredKey, error) {
	fields := strings.Fields(v)
	byName := make(map[string]retiredKey, len(fields))
	list := make([]retiredKey, 0, len(fields))
	for _, f := range fields {
		parts := strings.SplitN(f, ":", 3) // the time holds colons too
		if len(parts) != 3 {
			return nil, nil, fmt.Errorf("the event stream's retired key %q is not key:sequence:time", f)
		}
		k, ok := publicKey(parts[0])
		if !ok {
			return nil, nil, fmt.Errorf("the event stream's retired key %q is not an Ed25519 public key in base64url", parts[0])
		}
		r := retiredKey{name: parts[0], key: k}
		var err error
		if r.upTo, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
			return nil, nil, fmt.Errorf("the event stream's retired key %s has %q for a sequence", parts[0], parts[1])
		}
		if r.at, err = time.Parse(time.RFC3339Nano, parts[2]); err != nil {
			return nil, nil, fmt.Errorf("the event stream's retired key %s has %q for a time", parts[0], parts[2])
		}
		byName[r.name] = r
		list = append(list, r)
	}
	return byName, list, nil
}

// isRetired reports whether the stream described by have lists key as
// retired.
func isRetired(have *jetstream.StreamInfo, key string) bool {
	if have == nil {
		return false
	}
	retired, _, _ := parseRetired(have.Config.Metadata[metaRetiredKeys])
	_, ok := retired[key]
	return ok || slices.Contains(strings.Fields(have.Config.Metadata[metaDroppedKeys]), key)
}

// RetiredKey is a key the event stream lists as retired: what it signed
// is verifiable when stored at a stream sequence up to UpTo (a dead
// letter: stored before At).
type RetiredKey struct {
	Key  string    `json:"key"`
	UpTo uint64    `json:"up_to_seq"`
	At   time.Time `json:"retired_at"`
}

// SigningKeys are the event stream's signing keys, as a reader takes
// them: those it names, newest first, those it retired, and those it
// dropped from its retired ones (newest first), which verify nothing and
// are never named again.
type SigningKeys struct {
	Named   []string     `json:"named"`
	Retired []RetiredKey `json:"retired"`
	Dropped []string     `json:"dropped"`
}

// ReadSigningKeys reads the event stream's signing keys (privately, as
// readStream does).
func ReadSigningKeys(ctx context.Context, js jetstream.JetStream) (SigningKeys, error) {
	info, err := readStream(ctx, js)
	if err != nil {
		return SigningKeys{}, err
	}
	_, list, err := parseRetired(info.Config.Metadata[metaRetiredKeys])
	if err != nil {
		return SigningKeys{}, err
	}
	keys := SigningKeys{Named: strings.Fields(info.Config.Metadata[metaSigningKeys]), Retired: []RetiredKey{},
		Dropped: strings.Fields(info.Config.Metadata[metaDroppedKeys])}
	for _, r := range list {
		keys.Retired = append(keys.Retired, RetiredKey{Key: r.name, UpTo: r.upTo, At: r.at})
	}
	return keys, nil
}

// RetireSigningKey retires old, a key the front end no longer signs with:
// the stream stops naming it and lists it as retired, bound at the
// stream's last sequence now. The caller has made sure that old signs
// nothing more and that every event it signed is stored (the publisher's
// window in flight has ended), and that the stream names the key that
// signs now. Like ensureSigningKey, it reads the keys again a moment
// later and writes again what another front end's stale write undid,
// keeping the bound of the first write.
func RetireSigningKey(ctx context.Context, js jetstream.JetStream, old string, log *slog.Logger) (RetiredKey, error) {
	const rounds = 10
	var first *retiredKey // the bound of the first write, which a retry keeps
	for attempt := 1; ; attempt++ {
		have, err := readStream(ctx, js)
		if err != nil {
			return RetiredKey{}, err
		}
		meta, r, dropped, err := retiredMetadata(have, old, first, time.Now())
		if err != nil {
			return RetiredKey{}, err
		}
		first = &r
		cfg := have.Config
		cfg.Metadata = meta
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return RetiredKey{}, fmt.Errorf("retiring signing key %s: %w", old, err)
		}
		for _, d := range dropped {
			if attempt == 1 {
				log.Warn("the event stream lists the keys retired last, at most 32: the oldest is dropped, and what it signed (in the stream, or its dead letters) is refused as an unknown key's from now on", "dropped", d.name, "up_to_seq", d.upTo, "retired_at", d.at)
			}
		}
		select {
		case <-ctx.Done():
			return RetiredKey{}, ctx.Err()
		case <-time.After(keySettles):
		}
		again, err := readStream(ctx, js)
		if err != nil {
			return RetiredKey{}, err
		}
		if isRetired(again, old) && !slices.Contains(strings.Fields(again.Config.Metadata[metaSigningKeys]), old) {
			return RetiredKey{Key: r.name, UpTo: r.upTo, At: r.at}, nil
		}
		if attempt >= rounds {
			return RetiredKey{}, fmt.Errorf("retiring signing key %s: other front ends keep writing the event stream's keys without its retirement; run scimrelay keys rotate events again", old)
		}
	}
}

// retiredMetadata returns the metadata of the stream described by have
// with old retired: out of the signing keys, first of the retired ones,
// bound at the stream's last sequence and the time the server said have
// (now, by this clock, when it did not); a key retired already keeps its
// bound, and so does one an earlier write retired at bound (not nil),
// which another front end's stale write took out again: a later bound
// would cover what the key signed meanwhile. Retired keys none of whose
// events either the stream or the dead-letter queue can still hold are
// dropped, and then the oldest beyond maxRetiredKeys, which it returns. A
// key dropped already stays dropped: it is only taken out of the signing
// keys.
func retiredMetadata(have *jetstream.StreamInfo, old string, bound *retiredKey, now time.Time) (map[string]string, retiredKey, []retiredKey, error) {
	meta := map[string]string{}
	for k, v := range have.Config.Metadata {
		if !strings.HasPrefix(k, "_nats.") { // the server's own, which it sets
			meta[k] = v
		}
	}
	keys := slices.DeleteFunc(strings.Fields(meta[metaSigningKeys]), func(k string) bool { return k == old })
	if len(keys) == 0 {
		return nil, retiredKey{}, nil, fmt.Errorf("retiring signing key %s: the event stream names no other key, and would name none", old)
	}
	byName, list, err := parseRetired(meta[metaRetiredKeys])
	if err != nil {
		return nil, retiredKey{}, nil, err
	}
	r, ok := byName[old]
	if !ok && slices.Contains(strings.Fields(meta[metaDroppedKeys]), old) {
		// Dropped from the retired keys: it verifies nothing and is
		// never listed again, with a new bound least of all (which would
		// make what a leaked key signed since verify).
		meta[metaSigningKeys] = strings.Join(keys, " ")
		return meta, retiredKey{name: old}, nil, nil
	}
	if !ok && bound != nil {
		r = *bound
		list = append([]retiredKey{r}, list...)
	} else if !ok {
		k, ok := publicKey(old)
		if !ok {
			return nil, retiredKey{}, nil, fmt.Errorf("retiring signing key %q: not an Ed25519 public key in base64url", old)
		}
		at := now
		if !have.TimeStamp.IsZero() {
			at = have.TimeStamp
		}
		r = retiredKey{name: old, key: k, upTo: have.State.LastSeq, at: at}
		list = append([]retiredKey{r}, list...)
	}
	var aged, dropped []retiredKey
	list = slices.DeleteFunc(list, func(x retiredKey) bool {
		// Nothing it signed is left, in the stream or as a dead letter
		// (kept at most retiredKept): it verifies nothing.
		gone := x.name != old && x.upTo < have.State.FirstSeq && r.at.Sub(x.at) > retiredKept
		if gone {
			aged = append(aged, x)
		}
		return gone
	})
	if len(list) > maxRetiredKeys {
		dropped, list = list[maxRetiredKeys:], list[:maxRetiredKeys]
	}
	entries := make([]string, len(list))
	for i, x := range list {
		entries[i] = x.String()
	}
	meta[metaSigningKeys] = strings.Join(keys, " ")
	meta[metaRetiredKeys] = strings.Join(entries, " ")
	if gone := slices.Concat(aged, dropped); len(gone) > 0 {
		// Newest first, as they were listed.
		slices.SortStableFunc(gone, func(a, b retiredKey) int { return b.at.Compare(a.at) })
		names := make([]string, 0, len(gone))
		for _, x := range gone {
			names = append(names, x.name)
		}
		for _, n := range strings.Fields(meta[metaDroppedKeys]) {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		meta[metaDroppedKeys] = strings.Join(names[:min(len(names), maxDroppedKeys)], " ")
	}
	return meta, r, dropped, nil
}
