// SPDX-License-Identifier: Apache-2.0

package events

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Events on an external NATS are signed by the relay that published them.
// Whoever may publish a JetStream API request there may have the event
// stream store its answer (NATS checks a request's subject, not its reply
// subject), a sink worker's user among them; a header the stream keeps
// cannot tell such an answer from the publisher's message (Published), a
// signature can. The SCIM front end signs with an Ed25519 key kept in its
// data file, and writes the public key into the event stream's
// configuration, which only it may change; the workers, and any
// subscriber, read it there and verify (README, Events; docs/decisions.md,
// Delivery).
const (
	// SignatureHeader carries "v1 <key> <signature>", both base64url
	// without padding: the signer's public key and the Ed25519 signature
	// of the event's signed form (SignedForm).
	SignatureHeader = "Scimrelay-Signature"
	signatureScheme = "v1"
	// The stream configuration's metadata that says who signs: the public
	// keys, newest first, separated by spaces; the stream sequence from
	// which every event is signed (the events before it were published
	// before the relay signed, and are taken as Published always took
	// them); and when signing began, by the front end's clock, for dead
	// letters, which live in a stream of their own.
	metaSigningKeys  = "scimrelay_signing_keys"
	metaSignedFrom   = "scimrelay_signed_from"
	metaSignedSince  = "scimrelay_signed_since"
	signedFormPrefix = "scimrelay-event-signature-v1\n"
	// streamInfoSubject is JetStream's API for the event stream's
	// information, which the workers' NATS user may request.
	streamInfoSubject = "$JS.API.STREAM.INFO." + StreamName
	// msgGetSubject is JetStream's API for a message of the event stream
	// in JSON, which the workers' user may request too.
	msgGetSubject = "$JS.API.STREAM.MSG.GET." + StreamName
	// maxSigningKeys is how many keys the stream lists: a front end that
	// lost its data file signs with a new key, and the events the old one
	// signed stay in the stream until they age out.
	maxSigningKeys = 8
)

// ErrUnknownKey means an event is signed by a key the event stream did
// not name when read again after the event was met: a forgery, or the relay's own signed with a
// key its front end began to use since (a new data file, or another front
// end's key it wrote over). Such an event is dead-lettered, not dropped:
// a redrive checks it against the keys the stream names then.
var ErrUnknownKey = errors.New("signed by a key the event stream does not name")

// ErrUnsigned means the event stream says nothing of signing keys: it was
// made or last updated by a front end that does not sign (an older
// release, or one with NATS embedded).
var ErrUnsigned = errors.New("the event stream names no signing key")

// SignedForm is what the signature covers: a fixed first line, then one
// line "name: value" for every CloudEvents header (ce-*) and for
// content-type, names in lower case, sorted by name (the values of a name
// in the order the message has them), an empty line, and the data. Every
// context attribute of a binary-mode event and its data are in it; NATS's
// own headers, which JetStream adds to and changes, are not. A name or
// value holding a line break (which no event of the relay has) cannot be
// signed or verified.
func SignedForm(h nats.Header, data []byte) ([]byte, error) {
	type line struct{ lower, name string }
	var lines []line
	size := len(signedFormPrefix) + 1 + len(data)
	for name, values := range h {
		lower := strings.ToLower(name)
		if !strings.HasPrefix(lower, headerPrefix) && lower != headerContentType {
			continue
		}
		lines = append(lines, line{lower, name})
		for _, v := range values {
			size += len(lower) + 2 + len(v) + 1
		}
	}
	slices.SortFunc(lines, func(a, b line) int {
		if c := strings.Compare(a.lower, b.lower); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	b := make([]byte, 0, size)
	b = append(b, signedFormPrefix...)
	for _, l := range lines {
		if strings.ContainsAny(l.name, "\r\n:") {
			return nil, fmt.Errorf("header %q cannot be signed", l.name)
		}
		for _, v := range h[l.name] {
			if strings.ContainsAny(v, "\r\n") {
				return nil, fmt.Errorf("header %s holds a line break", l.name)
			}
			b = append(b, l.lower...)
			b = append(b, ':', ' ')
			b = append(b, v...)
			b = append(b, '\n')
		}
	}
	b = append(b, '\n')
	return append(b, data...), nil
}

// Signer signs the events a front end publishes. Its key can be switched
// while it signs (Switch): scimrelay keys rotate events gives a running
// front end a new key without a restart.
type Signer struct {
	cur atomic.Pointer[signingKey]
}

// signingKey is an Ed25519 key and its public key as the stream names it.
type signingKey struct {
	key ed25519.PrivateKey
	pub string
}

// NewSigner returns the signer whose Ed25519 key is made from seed (32
// bytes).
func NewSigner(seed []byte) (*Signer, error) {
	s := &Signer{}
	if err := s.Switch(seed); err != nil {
		return nil, err
	}
	return s, nil
}

// Switch makes the key made from seed the one every later Sign uses. A
// Sign under way finishes with the key it began with.
func (s *Signer) Switch(seed []byte) error {
	if len(seed) != ed25519.SeedSize {
		return fmt.Errorf("an event-signing seed has %d bytes, not %d", len(seed), ed25519.SeedSize)
	}
	key := ed25519.NewKeyFromSeed(seed)
	s.cur.Store(&signingKey{key: key, pub: encodeKey(key.Public().(ed25519.PublicKey))})
	return nil
}

// PublicKey returns the public key as the stream and the signature header
// name it: base64url without padding.
func (s *Signer) PublicKey() string { return s.cur.Load().pub }

// Sign adds the signature of the event in msg to its headers.
func (s *Signer) Sign(msg *nats.Msg) error {
	form, err := SignedForm(msg.Header, msg.Data)
	if err != nil {
		return fmt.Errorf("signing the event on %s: %w", msg.Subject, err)
	}
	k := s.cur.Load()
	sig := ed25519.Sign(k.key, form)
	msg.Header.Set(SignatureHeader, signatureScheme+" "+k.pub+" "+base64.RawURLEncoding.EncodeToString(sig))
	return nil
}

func encodeKey(k ed25519.PublicKey) string { return base64.RawURLEncoding.EncodeToString(k) }

// Trust is what a reader of the event stream accepts as signed by the
// relay: the stream's signing keys, and from where on events are signed.
// A nil *Trust takes every event unsigned, for NATS embedded in the relay,
// which no other client may publish into.
type Trust struct {
	nc    *nats.Conn
	state atomic.Pointer[trustState]

	mu        sync.Mutex // one refresh at a time
	refreshed time.Time
}

type trustState struct {
	keys map[string]ed25519.PublicKey
	// retired are the keys taken out of use (RetireSigningKey), by
	// name: each verifies only what was stored before it was retired.
	retired map[string]retiredKey
	from    uint64    // the first stream sequence that must be signed
	since   time.Time // when signing began (for dead letters)
	read    time.Time // when the keys were read
}

// KeysReadEvery is how old the keys a reader verifies with may grow: a
// reader reads them again before it verifies an event with older ones, so
// that a retirement (scimrelay keys rotate events) is in force in every
// reader at most that long after it was written; the rotation answers
// only then. One read of the stream's information every two seconds
// while events flow costs NATS nothing much.
const KeysReadEvery = 2 * time.Second

// refreshEvery bounds how often an unknown key has the stream's
// configuration read again: a message anyone could put there must not
// make a request each.
const refreshEvery = time.Second

// NewTrust returns the trust the event stream's configuration says,
// ErrUnsigned when it names no key. An event signed by a key it does not
// know has the configuration read again (at most once a second), for a
// front end that began signing with a new key while this reader ran.
//
// The configuration is read on a reply subject of its own
// (privateRequest): a client that may subscribe to _INBOX.> (a sink
// worker's user) could otherwise have an answer naming a key of its own
// arrive first.
func NewTrust(ctx context.Context, nc *nats.Conn) (*Trust, error) {
	t := &Trust{nc: nc}
	if _, err := t.read(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// read reads the event stream's signing keys and makes them the trust's.
func (t *Trust) read(ctx context.Context) (*trustState, error) {
	t.refreshed = time.Now()
	info, err := streamInfo(ctx, t.nc)
	if err != nil {
		return nil, err
	}
	s, err := trustOf(info.Config)
	if err != nil {
		return nil, err
	}
	s.read = t.refreshed
	t.state.Store(s)
	return s, nil
}

// streamInfo asks JetStream for the event stream's information.
func streamInfo(ctx context.Context, nc *nats.Conn) (*jetstream.StreamInfo, error) {
	var resp struct {
		jetstream.StreamInfo
		Error *jetstream.APIError `json:"error"`
	}
	if err := privateRequest(ctx, nc, streamInfoSubject, nil, &resp); err != nil {
		return nil, fmt.Errorf("reading the event stream's signing keys: %w", err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("reading the event stream's signing keys: %w", resp.Error)
	}
	return &resp.StreamInfo, nil
}

// privateRequest sends a JetStream API request and decodes its JSON
// answer into v, received on a reply subject of 128 random bits that no
// other client can know: nats.go's shared inbox, whose replies a client
// allowed _INBOX.> sees, draws its tokens from math/rand, and such a
// client could come to predict the next one and have a direct get of a
// message of its own answer there first. The subject is under the
// connection's own inbox prefix (nats.CustomInboxPrefix): a reader whose
// user may subscribe only there must not need _INBOX.>, which would show
// it every delivery to the relay's own workers.
func privateRequest(ctx context.Context, nc *nats.Conn, subject string, body []byte, v any) error {
	inbox := PrivateInbox(nc)
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		return err
	}
	msg, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return err
	}
	if msg.Header.Get("Status") == "503" {
		return nats.ErrNoResponders
	}
	return json.Unmarshal(msg.Data, v)
}

// PrivateInbox returns a reply subject of 128 random bits under nc's inbox
// prefix (nats.CustomInboxPrefix; _INBOX when none is set), for an answer
// that no other client may predict and answer first: a client allowed to
// subscribe on the prefix sees the answers on the connection's shared
// inbox, whose tokens it could come to predict (those of nc.NewInbox
// follow one another by a fixed step).
func PrivateInbox(nc *nats.Conn) string {
	var token [16]byte
	_, _ = rand.Read(token[:]) // crypto/rand.Read never fails (Go 1.24+)
	prefix := nats.InboxPrefix
	if p := nc.Opts.InboxPrefix; p != "" {
		prefix = p + "." // nats.CustomInboxPrefix refuses a trailing dot
	}
	return prefix + hex.EncodeToString(token[:])
}

// StoredMsg returns the event stream's first message at or after
// sequence from on subject (any subject when ""), read through
// JetStream's API in JSON on a private reply subject: there its sequence,
// subject and time are the server's. A direct get's answer gives them as
// headers after the message's own, and a stored header block with an
// empty line in it hides them from nats.go, so that a client that can
// have the stream store a message can make it say any sequence (one
// before the relay signed, or one behind the reader). Readers by direct
// get read again here what does not add up.
func (t *Trust) StoredMsg(ctx context.Context, from uint64, subject string) (*jetstream.RawStreamMsg, error) {
	req := map[string]any{"seq": from}
	if subject != "" {
		req["next_by_subj"] = subject
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := privateRequest(ctx, t.nc, msgGetSubject, body, &resp); err != nil {
		return nil, fmt.Errorf("reading the event stream at %d: %w", from, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("reading the event stream at %d: %w", from, resp.Error)
	}
	if resp.Message == nil || resp.Message.Sequence < from {
		return nil, fmt.Errorf("reading the event stream at %d: JetStream answered no message after it", from)
	}
	m := resp.Message
	h := nats.Header{}
	if len(m.Header) > 0 {
		if h, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("reading the event stream at %d: %w", from, err)
		}
	}
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Header: h, Data: m.Data, Time: m.Time}, nil
}

// StoredUnsigned reports whether the event stream holds, at sequence seq,
// stored before the relay began to sign, a message the relay published
// (Published) whose event is the one of headers h and data: what a dead
// letter with no signature must be to be redriven (StoredMsg says why the
// message is read so).
func (t *Trust) StoredUnsigned(ctx context.Context, seq uint64, h nats.Header, data []byte) bool {
	return t.Unsigned(seq) && t.StoredPublished(ctx, seq, h, data)
}

// StoredPublished reports whether the event stream holds, at sequence
// seq, a message the relay published (Published, at seq) whose event is
// the one of headers h and data, the signature aside. A dead letter whose
// key was retired after the event was stored, but before its queue
// stored it (scimrelay keys rotate events while it waited), is redriven
// on the strength of the stream's copy, which the key's bound covers.
func (t *Trust) StoredPublished(ctx context.Context, seq uint64, h nats.Header, data []byte) bool {
	if t == nil || seq == 0 {
		return false
	}
	m, err := t.StoredMsg(ctx, seq, "")
	if err != nil || m.Sequence != seq {
		return false
	}
	if _, err := t.Published(seq, m.Subject, m.Header, m.Data); err != nil {
		return false
	}
	want, err := SignedForm(m.Header, m.Data)
	if err != nil {
		return false
	}
	got, err := SignedForm(h, data)
	return err == nil && bytes.Equal(want, got)
}

// publicKey decodes name, an Ed25519 public key in base64url as the
// stream's metadata lists keys.
func publicKey(name string) (ed25519.PublicKey, bool) {
	k, err := base64.RawURLEncoding.DecodeString(name)
	return k, err == nil && len(k) == ed25519.PublicKeySize
}

// trustOf reads the signing metadata of a stream configuration.
func trustOf(cfg jetstream.StreamConfig) (*trustState, error) {
	fields := strings.Fields(cfg.Metadata[metaSigningKeys])
	if len(fields) == 0 {
		return nil, fmt.Errorf("%w (%s in its metadata)", ErrUnsigned, metaSigningKeys)
	}
	s := &trustState{keys: make(map[string]ed25519.PublicKey, len(fields))}
	for _, f := range fields {
		k, ok := publicKey(f)
		if !ok {
			return nil, fmt.Errorf("the event stream's signing key %q is not an Ed25519 public key in base64url", f)
		}
		s.keys[f] = k
	}
	var err error
	if s.retired, _, err = parseRetired(cfg.Metadata[metaRetiredKeys]); err != nil {
		return nil, err
	}
	if s.from, err = strconv.ParseUint(cfg.Metadata[metaSignedFrom], 10, 64); err != nil {
		return nil, fmt.Errorf("the event stream's %s %q is not a sequence", metaSignedFrom, cfg.Metadata[metaSignedFrom])
	}
	if s.since, err = time.Parse(time.RFC3339Nano, cfg.Metadata[metaSignedSince]); err != nil {
		return nil, fmt.Errorf("the event stream's %s %q is not a time", metaSignedSince, cfg.Metadata[metaSignedSince])
	}
	return s, nil
}

// signingMetadata returns the metadata of a stream that now signs with
// key, keeping what the stream had (have, with its state, nil when there
// is none): the keys it listed after it (not one that is no key: it
// verifies nothing), and when signing began; a stream that did not sign
// (no sequence and time of its beginning) begins after its last message,
// and at the time the server said have (now, by this clock, when it did
// not). Nothing else in the metadata moves where signing began: that
// would take as the relay's what the stream stored unsigned since.
func signingMetadata(have *jetstream.StreamInfo, key string, now time.Time) map[string]string {
	meta := map[string]string{}
	keys := []string{key}
	if have != nil {
		for k, v := range have.Config.Metadata {
			if !strings.HasPrefix(k, "_nats.") { // the server's own, which it sets
				meta[k] = v
			}
		}
		for _, k := range strings.Fields(have.Config.Metadata[metaSigningKeys]) {
			if _, ok := publicKey(k); ok && !isRetired(have, k) && !slices.Contains(keys, k) && len(keys) < maxSigningKeys {
				keys = append(keys, k)
			}
		}
	}
	meta[metaSigningKeys] = strings.Join(keys, " ")
	_, ferr := strconv.ParseUint(meta[metaSignedFrom], 10, 64)
	_, serr := time.Parse(time.RFC3339Nano, meta[metaSignedSince])
	if ferr != nil || serr != nil {
		// Signing begins now: what the stream holds was published
		// unsigned. When, by the server's clock, which stamps what the
		// streams store, when it says.
		from, since := uint64(1), now
		if have != nil {
			from = have.State.LastSeq + 1
			if !have.TimeStamp.IsZero() {
				since = have.TimeStamp
			}
		}
		meta[metaSignedFrom] = strconv.FormatUint(from, 10)
		meta[metaSignedSince] = since.UTC().Format(time.RFC3339Nano)
	}
	return meta
}

// verify checks the signature of an event stored at stream sequence seq
// (0: not in the event stream, by when stored instead).
func (t *Trust) verify(seq uint64, stored time.Time, h nats.Header, data []byte) error {
	s := t.state.Load()
	if (seq != 0 && seq < s.from) || (seq == 0 && !stored.IsZero() && stored.Before(s.since)) {
		return nil // published before the relay signed
	}
	v := h.Values(SignatureHeader)
	if len(v) != 1 {
		return fmt.Errorf("%w: it has %d %s headers, not one", ErrNotPublished, len(v), SignatureHeader)
	}
	parts := strings.Fields(v[0])
	if len(parts) != 3 || parts[0] != signatureScheme {
		return fmt.Errorf("%w: its %s is not \"%s <key> <signature>\"", ErrNotPublished, SignatureHeader, signatureScheme)
	}
	s = t.fresh(s) // keys read at most KeysReadEvery ago: a retirement since is in force
	key, err := s.key(parts[1], seq, stored)
	if errors.Is(err, errNotNamed) {
		// Not an ErrNotPublished: the event may be the relay's, signed
		// by a key this reader has not read yet, and is dead-lettered
		// rather than dropped.
		if s, rerr := t.reread(time.Now()); rerr != nil {
			return fmt.Errorf("%w %s (%w)", ErrUnknownKey, parts[1], rerr)
		} else if key, err = s.key(parts[1], seq, stored); errors.Is(err, errNotNamed) {
			return fmt.Errorf("%w %s", ErrUnknownKey, parts[1])
		}
	}
	if err != nil {
		return err
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2]) // one string per signature
	if err != nil {
		return fmt.Errorf("%w: its signature is not base64url", ErrNotPublished)
	}
	form, err := SignedForm(h, data)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotPublished, err)
	}
	if !ed25519.Verify(key, form, sig) {
		return fmt.Errorf("%w: its signature does not verify", ErrNotPublished)
	}
	return nil
}

// fresh returns the keys to verify with: s when read less than
// KeysReadEvery ago, else the keys read again, since a key may have been
// retired since: scimrelay keys rotate events answers KeysReadEvery after
// it retired one, and from then on no reader verifies with keys read
// before. One caller reads; the others wait for that read and verify with
// what it read, without reading again themselves (the diff review: each
// reading after the one before it queued every delivery behind a slow
// JetStream API). The wait is bounded by the read under way: this one's
// timeout, KeysReadEvery, or an unknown key's (reread: its turn, at most
// refreshEvery, and 10 s). An earlier version verified with the old keys
// rather than wait, and a worker delivered an event forged with a key
// retired seconds before (TestKeysRotateEvents, once in seven runs).
// While the keys cannot be read (NATS away or refusing the request), a
// reader verifies with those it read last, without waiting for a read
// more than once every refreshEvery: a retirement is then in force in it
// only once a read succeeds.
func (t *Trust) fresh(s *trustState) *trustState {
	if time.Since(s.read) < KeysReadEvery {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.state.Load()
	if time.Since(cur.read) < KeysReadEvery || time.Since(t.refreshed) < refreshEvery {
		return cur // read by another meanwhile, or a read failed just now
	}
	ctx, cancel := context.WithTimeout(context.Background(), KeysReadEvery)
	defer cancel()
	if fresh, err := t.read(ctx); err == nil {
		return fresh
	}
	return cur
}

// errNotNamed is key's answer for a key the state neither names nor
// retired: one that reading the keys again may find.
var errNotNamed = errors.New("not named")

// key returns the public key named name for an event stored at seq (0:
// not in the event stream, stored then): a key the stream names, or one
// it retired after the event was stored. A retired key wins over a named
// one: a front end of an older release may write its retired key back.
func (s *trustState) key(name string, seq uint64, stored time.Time) (ed25519.PublicKey, error) {
	if r, ok := s.retired[name]; ok {
		if r.signed(seq, stored) {
			return r.key, nil
		}
		// Both errors: reading the keys again cannot make it verify, and
		// a reader waiting for a key (sinks) does not wait for it.
		return nil, fmt.Errorf("%w %s (%w at stream sequence %d, %s, and the event was stored after)", ErrUnknownKey, name, ErrRetiredKey, r.upTo, r.at.UTC().Format(time.RFC3339))
	}
	if key, ok := s.keys[name]; ok {
		return key, nil
	}
	return nil, errNotNamed
}

// reread reads the stream's signing keys again and returns them, for a
// reader that did not find a key in them at asked. A read that began after
// asked serves it; otherwise it reads, a second after the last read at
// the soonest, waiting for its turn: a message signed by an unknown key,
// which anyone who can have the stream store a message can make, costs
// NATS a request a second at most, and an event signed by the front
// end's new key is never taken for one of an unknown key for want of a
// read (it would be dead-lettered, and delivered by a redrive after the
// resource's later events).
func (t *Trust) reread(asked time.Time) (*trustState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refreshed.After(asked) {
		return t.state.Load(), nil
	}
	if wait := refreshEvery - time.Since(t.refreshed); wait > 0 {
		time.Sleep(wait) // the turn of this read, not a wait for an outcome
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return t.read(ctx)
}

// StoredAt returns where the event stream stored a message a consumer
// delivered: its sequence and when, from its acknowledgement subject,
// which the server sets; 0 and the zero time when it was not delivered
// from the event stream (a client that may make a push consumer on a
// stream of its own can have it deliver to a reader's inbox, and the
// sequence there says nothing of the event stream).
func StoredAt(m jetstream.Msg) (seq uint64, at time.Time) {
	meta, err := m.Metadata()
	if err != nil || meta.Stream != StreamName {
		return 0, time.Time{}
	}
	return meta.Sequence.Stream, meta.Timestamp
}

// Unsigned reports whether the event stream's message at sequence seq was
// stored before the relay began to sign (false with NATS embedded, where
// nothing is signed and nothing needs to be).
func (t *Trust) Unsigned(seq uint64) bool {
	return t != nil && seq < t.state.Load().from
}

// SequenceDecides reports whether a message said to be stored at seq,
// with headers h, is taken or refused by where the stream stored it: one
// before the relay began to sign (taken unsigned), or one signed by a key
// the stream retired (taken up to the key's bound). A reader whose seq
// comes from a header a stored message can forge (a direct get's) reads
// such a message again where the sequence is the server's (StoredMsg):
// else an event signed with a leaked key after its retirement, saying it
// was stored before, would be taken.
func (t *Trust) SequenceDecides(seq uint64, h nats.Header) bool {
	if t == nil {
		return false
	}
	s := t.state.Load()
	if seq < s.from {
		return true
	}
	parts := strings.Fields(h.Get(SignatureHeader))
	if len(parts) != 3 {
		return false
	}
	_, retired := t.fresh(s).retired[parts[1]]
	return retired
}

// VerifyDeadLetter checks the signature an event kept in a dead letter
// that the queue stored at stored: a dead letter is written by a sink
// worker, whose NATS user may write any, so a redrive delivers only one
// whose event the relay signed (or one made before it signed).
func (t *Trust) VerifyDeadLetter(stored time.Time, h nats.Header, data []byte) error {
	if t == nil {
		return nil
	}
	return t.verify(0, stored, h, data)
}
