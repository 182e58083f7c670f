// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// Subscribers manages the NATS subscribers of the embedded server.
type Subscribers interface {
	AddSubscriber(ctx context.Context, sub relay.Subscriber, how AddHow) (SubscriberInfo, error)
	ListSubscribers(ctx context.Context) ([]SubscriberInfo, error)
	RemoveSubscriber(ctx context.Context, name string) (relay.Subscriber, error)
}

// SubscriberRequest asks for a subscriber, or for other subjects and a new
// key for one there is (its consumer keeps its position). The CLI
// generates the nkey pair and sends only the public key, so the seed
// never crosses the wire. From ("all", the default, or "new") is where its
// consumer starts when the relay makes it; for a subscriber there is it
// may only repeat what it was.
type SubscriberRequest struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	// Subjects is the subject pattern it is limited to; "" is every
	// event. Left out, a new subscriber reads every event and one there is
	// keeps its subjects: a new key must not widen what it reads.
	Subjects *string `json:"subjects,omitempty"`
	From     string  `json:"from,omitempty"`
	// Replace gives a subscriber there a new key (its service's
	// connections close); without it, a name there is refused (409), so
	// that a script adding a subscriber twice cannot cut the first off.
	Replace bool `json:"replace,omitempty"`
}

// AddHow says how AddSubscriber treats a name already there.
type AddHow struct {
	Replace       bool // give it the new key; otherwise refuse
	SubjectsGiven bool // take the request's subjects; otherwise keep its own
}

// SubscriberInfo is a subscriber with what it needs to connect.
type SubscriberInfo struct {
	relay.Subscriber
	// URL is the embedded server's client URL; empty when it listens on nothing.
	URL string `json:"url"`
	// Stream and Consumer are where it reads: the consumer is named as the subscriber.
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// InboxPrefix is the private inbox prefix its client must use.
	InboxPrefix string `json:"inbox_prefix"`
	// Replaced says that a subscriber of this name was there, and has
	// been given the new key and subjects.
	Replaced bool `json:"replaced,omitempty"`
	// CutOff says that its subjects name a tenant that is not configured
	// (one removed from relay.yaml): it cannot connect until a tenant of
	// that name is configured again (Admitted).
	CutOff bool `json:"cut_off,omitempty"`
}

// ErrExternalNATS means the relay does not run the NATS server: its
// accounts and credentials are the operator's to manage.
var ErrExternalNATS = errors.New("this relay uses an external NATS (nats.url): create subscriber credentials in that server's accounts; scimrelay manages subscribers only for its embedded server")

// SubscriberRegistry keeps subscribers in the data file and applies them
// to the embedded server, so that adding or removing one takes effect at
// once, without a restart.
type SubscriberRegistry struct {
	store *relay.Store
	bus   *natsbus.Embedded // nil with an external NATS
	js    jetstream.JetStream

	mu sync.Mutex // one change at a time: the data file and the server agree
}

var _ Subscribers = (*SubscriberRegistry)(nil)

// NewSubscriberRegistry returns the registry; bus is nil with an external NATS.
func NewSubscriberRegistry(store *relay.Store, bus *natsbus.Embedded, js jetstream.JetStream) *SubscriberRegistry {
	return &SubscriberRegistry{store: store, bus: bus, js: js}
}

// BusSubscribers converts stored subscribers to what the server admits.
func BusSubscribers(list []relay.Subscriber) []natsbus.Subscriber {
	out := make([]natsbus.Subscriber, len(list))
	for i, s := range list {
		out[i] = natsbus.Subscriber{Name: s.Name, PublicKey: s.PublicKey, Subjects: s.Subjects, From: s.From}
	}
	return out
}

// Admitted returns the stored subscribers the embedded server admits, and
// those it cuts off: a subscriber whose subjects name a tenant that is not
// configured (configured says which are) is cut off, as the tenant's SCIM
// credentials are, and let in again with its consumer's position when a
// tenant of that name is configured again. Subscribers of every tenant
// (no subjects, or a wildcard in the tenant's place) are always admitted.
func Admitted(list []relay.Subscriber, configured func(tenant string) bool) (admitted []natsbus.Subscriber, cutOff []relay.Subscriber) {
	var in []relay.Subscriber
	for _, s := range list {
		if t := s.Tenant(); t != "" && !configured(t) {
			cutOff = append(cutOff, s)
		} else {
			in = append(in, s)
		}
	}
	return BusSubscribers(in), cutOff
}

// admit gives the embedded server the subscribers of list that it admits
// (Admitted). r.mu is held.
func (r *SubscriberRegistry) admit(list []relay.Subscriber) error {
	in, _ := Admitted(list, r.store.HasTenant)
	return r.bus.SetSubscribers(in)
}

// TenantsChanged admits the stored subscribers again after the configured
// tenants changed (a reload): those of a tenant removed are cut off
// (their connections close; their consumers stay), those of a tenant
// configured again are let in. A subscriber whose consumer could not be
// kept is that one's trouble, logged by the bus, and fails nothing.
func (r *SubscriberRegistry) TenantsChanged(ctx context.Context) error {
	if r.bus == nil || r.store == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	list, err := r.store.Subscribers(ctx)
	if err != nil {
		return err
	}
	if err := r.admit(list); !natsbus.OnlyOthersNotAdmitted(err, "") {
		return fmt.Errorf("admitting the subscribers of the tenants configured now: %w", fromNATS(ctx, err))
	}
	return nil
}

// checkTenant refuses a subscriber whose subjects name a tenant that is
// not configured: its consumer would wait, unread, for a tenant of that
// name, and read the events of whichever customer is given the name.
func (r *SubscriberRegistry) checkTenant(s relay.Subscriber) error {
	t := s.Tenant()
	if t == "" || r.store.HasTenant(t) {
		return nil
	}
	return errorf(http.StatusBadRequest, "subscriber %s: subjects %s name tenant %q, which is not configured (tenants: %s): configure it first (relay.yaml, then reload), or put a wildcard in the tenant's place (scimrelay.*.…) to read every tenant's events",
		s.Name, s.Subjects, t, TenantNames(r.store.Tenants()))
}

func (r *SubscriberRegistry) info(s relay.Subscriber) SubscriberInfo {
	if s.From == "" {
		s.From = natsbus.FromAll // stored before it was kept
	}
	_, cutOff := Admitted([]relay.Subscriber{s}, r.store.HasTenant)
	return SubscriberInfo{Subscriber: s, URL: r.bus.ClientURL(), Stream: events.StreamName, Consumer: s.Name, InboxPrefix: natsbus.InboxPrefix(s.Name), CutOff: len(cutOff) > 0}
}

// AddSubscriber checks, stores and admits a subscriber, whose consumer the
// relay makes. A name there already is refused unless how.Replace: then
// it gets the new key and, when how.SubjectsGiven, the subjects
// (otherwise it keeps them), and the consumer keeps its position with
// the new filter.
func (r *SubscriberRegistry) AddSubscriber(ctx context.Context, sub relay.Subscriber, how AddHow) (SubscriberInfo, error) {
	if r.bus == nil || r.store == nil {
		return SubscriberInfo{}, ErrExternalNATS
	}
	if err := BusSubscribers([]relay.Subscriber{sub})[0].Check(); err != nil {
		return SubscriberInfo{}, errorf(http.StatusBadRequest, "%v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	list, err := r.store.Subscribers(ctx)
	if err != nil {
		return SubscriberInfo{}, err
	}
	prev := -1
	for i, s := range list {
		if s.PublicKey == sub.PublicKey {
			return SubscriberInfo{}, errorf(http.StatusConflict, "subscriber %s already has this public key; generate a new key pair", s.Name)
		}
		if s.Name == sub.Name {
			prev = i
		}
	}
	if prev < 0 {
		if err := r.checkTenant(sub); err != nil {
			return SubscriberInfo{}, err
		}
		// A consumer of the name may be there already, left by a
		// subscriber of that name whose removal could not delete it, or
		// by an earlier release: it is adopted with its position, so it
		// cannot start from new events, and a failed add leaves it.
		_, lookErr := r.js.Consumer(ctx, events.StreamName, sub.Name)
		madeHere := errors.Is(lookErr, jetstream.ErrConsumerNotFound)
		if lookErr == nil && sub.From == natsbus.FromNew {
			return SubscriberInfo{}, errorf(http.StatusConflict, "subscriber %s: a consumer of that name is on the stream already, which it would take over with its position, not from new events: add it without --from, then remove it (which deletes the consumer), then add it with --from new", sub.Name)
		}
		if sub.From == "" {
			sub.From = natsbus.FromAll
		}
		stored, err := r.store.AddSubscriber(ctx, sub)
		if err != nil {
			return SubscriberInfo{}, err
		}
		// Another subscriber not admitted (its consumer failing) is that
		// one's trouble, logged by the bus, and does not fail this one.
		if err := r.admit(append(list, stored)); !natsbus.OnlyOthersNotAdmitted(err, sub.Name) {
			// Undone whole: not stored, not admitted, and no consumer of
			// this attempt left for a later add to adopt (with another
			// --from); one that was there before is left, with its
			// position.
			err = refusedByNATS(sub.Name, fromNATS(ctx, err))
			undo := context.WithoutCancel(ctx)
			if _, rerr := r.store.RemoveSubscriber(undo, sub.Name); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing: %w", rerr))
			}
			if rerr := r.admit(list); !natsbus.OnlyOthersNotAdmitted(rerr, "") {
				err = errors.Join(err, fmt.Errorf("undoing: %w", rerr))
			}
			if madeHere {
				if rerr := r.js.DeleteConsumer(undo, events.StreamName, sub.Name); rerr != nil && !errors.Is(rerr, jetstream.ErrConsumerNotFound) {
					err = errors.Join(err, fmt.Errorf("undoing: deleting its consumer: %w", rerr))
				}
			}
			return SubscriberInfo{}, err
		}
		return r.info(stored), nil
	}
	old := list[prev]
	if !how.Replace {
		return SubscriberInfo{}, errorf(http.StatusConflict, "subscriber %s exists; to give it a new key (its service's connections close), add it again with --replace", sub.Name)
	}
	if !how.SubjectsGiven {
		sub.Subjects = old.Subjects
	}
	// Kept or given, subjects naming a tenant not configured are refused:
	// a new key for a subscriber cut off would be one more key waiting
	// for whichever customer is given the tenant's name.
	if err := r.checkTenant(sub); err != nil {
		return SubscriberInfo{}, err
	}
	if from := r.info(old).From; sub.From != "" && sub.From != from {
		return SubscriberInfo{}, errorf(http.StatusConflict, "subscriber %s: its consumer started from %s, and --from applies only when the consumer is made: remove the subscriber and add it again to start from %s", sub.Name, from, sub.From)
	}
	stored, err := r.store.UpdateSubscriber(ctx, sub.Name, func(s relay.Subscriber) (relay.Subscriber, error) {
		s.PublicKey, s.Subjects = sub.PublicKey, sub.Subjects
		return s, nil
	})
	if err != nil {
		return SubscriberInfo{}, err
	}
	next := slices.Clone(list)
	next[prev] = stored
	if err := r.admit(next); !natsbus.OnlyOthersNotAdmitted(err, sub.Name) {
		// Back to what it was, as far as that goes: a subscriber whose
		// consumer could not be updated stays cut off.
		err = refusedByNATS(sub.Name, fromNATS(ctx, err))
		undo := context.WithoutCancel(ctx)
		if _, rerr := r.store.UpdateSubscriber(undo, sub.Name, func(relay.Subscriber) (relay.Subscriber, error) { return old, nil }); rerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing: %w", rerr))
		} else if rerr := r.admit(list); !natsbus.OnlyOthersNotAdmitted(rerr, "") {
			err = errors.Join(err, fmt.Errorf("undoing: %w", rerr))
		}
		return SubscriberInfo{}, err
	}
	info := r.info(stored)
	info.Replaced = true
	return info, nil
}

// refusedByNATS answers a subscriber's consumer that JetStream refused as
// a request's fault (a 4xx: a limit of the stream or of the account
// reached, a setting it does not take) 409, with JetStream's words: the
// operator can act on them, and a bare 500 left them in the log only.
// Any other error is returned as it is.
func refusedByNATS(name string, err error) error {
	// Its own refusal: SetSubscribers joins each subscriber's, another's
	// cut off meanwhile too, in no set order, and fromNATS may have
	// wrapped the join ("%w (%w)"): the whole tree is looked at.
	own, some := ownNotAdmitted(err, name)
	if own == nil && !some {
		own = err
	}
	var apiErr *jetstream.APIError
	if !errors.As(own, &apiErr) || apiErr.Code >= http.StatusInternalServerError {
		return err
	}
	return errorf(http.StatusConflict, "subscriber %s was not admitted: NATS refused its consumer: %s (JetStream error %d)", name, apiErr.Description, apiErr.ErrorCode)
}

// ownNotAdmitted returns the NotAdmitted of the subscriber name in err's
// tree (nil: none), and whether the tree holds any NotAdmitted.
func ownNotAdmitted(err error, name string) (own error, some bool) {
	if na, ok := err.(*natsbus.NotAdmitted); ok {
		if na.Name == name {
			return na, true
		}
		return nil, true
	}
	var next []error
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		next = e.Unwrap()
	case interface{ Unwrap() error }:
		next = []error{e.Unwrap()}
	}
	for _, e := range next {
		if e == nil {
			continue
		}
		o, a := ownNotAdmitted(e, name)
		some = some || a
		if o != nil {
			return o, true
		}
	}
	return nil, some
}

// ListSubscribers lists the subscribers by name.
func (r *SubscriberRegistry) ListSubscribers(ctx context.Context) ([]SubscriberInfo, error) {
	if r.bus == nil || r.store == nil {
		return nil, ErrExternalNATS
	}
	list, err := r.store.Subscribers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]SubscriberInfo, len(list))
	for i, s := range list {
		out[i] = r.info(s)
	}
	return out, nil
}

// RemoveSubscriber cuts a subscriber off (its connections close at once),
// forgets it, and deletes its consumer.
func (r *SubscriberRegistry) RemoveSubscriber(ctx context.Context, name string) (relay.Subscriber, error) {
	if r.bus == nil || r.store == nil {
		return relay.Subscriber{}, ErrExternalNATS
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	list, err := r.store.Subscribers(ctx)
	if err != nil {
		return relay.Subscriber{}, err
	}
	var kept []relay.Subscriber
	for _, s := range list {
		if s.Name != name {
			kept = append(kept, s)
		}
	}
	if len(kept) == len(list) {
		return relay.Subscriber{}, fmt.Errorf("removing subscriber %s: %w", name, relay.ErrSubscriberNotFound)
	}
	// Cut it off first: a failure after this leaves it stored but unable
	// to connect, never the other way round.
	if err := r.admit(kept); !natsbus.OnlyOthersNotAdmitted(err, "") {
		return relay.Subscriber{}, fromNATS(ctx, err)
	}
	// Once cut off, finished whatever happens to the request (a shutdown
	// ends every admin request's context): a removal stopped here would
	// leave the subscriber stored, to come back at the next start.
	ctx = context.WithoutCancel(ctx)
	removed, err := r.store.RemoveSubscriber(ctx, name)
	if err != nil {
		return relay.Subscriber{}, err
	}
	if err := r.js.DeleteConsumer(ctx, events.StreamName, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return removed, fmt.Errorf("subscriber %s removed, but deleting its consumer: %w", name, fromNATS(ctx, err))
	}
	return removed, nil
}

func (h *Handler) listSubscribers(w http.ResponseWriter, r *http.Request) error {
	list, err := h.o.Subscribers.ListSubscribers(r.Context())
	if err != nil {
		return err
	}
	writeList(w, list)
	return nil
}

func (h *Handler) addSubscriber(w http.ResponseWriter, r *http.Request) error {
	var req SubscriberRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	sub := relay.Subscriber{Name: req.Name, PublicKey: req.PublicKey, From: req.From}
	if req.Subjects != nil {
		sub.Subjects = *req.Subjects
	}
	info, err := h.o.Subscribers.AddSubscriber(r.Context(), sub, AddHow{Replace: req.Replace, SubjectsGiven: req.Subjects != nil})
	if err != nil {
		return err
	}
	h.audit(r, actionSubscriberAdd, "subscriber", info.Name, "public_key", info.PublicKey, "subjects", info.Subjects, "replaced", info.Replaced)
	status := http.StatusCreated
	if info.Replaced {
		status = http.StatusOK
	}
	writeJSON(w, status, info)
	return nil
}

func (h *Handler) removeSubscriber(w http.ResponseWriter, r *http.Request) error {
	sub, err := h.o.Subscribers.RemoveSubscriber(r.Context(), r.PathValue("name"))
	if sub.Name != "" {
		// Removed, even when deleting its consumer then failed.
		h.audit(r, actionSubscriberRemove, "subscriber", sub.Name, "public_key", sub.PublicKey)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sub)
	return nil
}
