// SPDX-License-Identifier: Apache-2.0

// Package bench simulates a Microsoft Entra ID provisioning cycle against a
// SCIM 2.0 endpoint and measures what it sustains: the load generator behind
// `scimrelay bench`.
//
// A run is the initial cycle Entra performs for a new application (for each
// user a userName filter GET then a POST; for each group a displayName filter
// GET then a POST without members; then member additions in PATCH batches of
// up to 100) followed by an incremental cycle (attribute PATCHes on 20% of the
// users, deactivations on 5%, deletes on 1%). Every response is checked
// against what Entra expects; failures are counted by status, never fatal.
//
// With a receiver address the bench also listens for the webhooks a
// scimrelay sink delivers, verifies their Standard Webhooks signatures and
// reports which of the events the cycle should have caused arrived, how
// often twice, out of per-resource order, and how long after the SCIM
// response that caused them.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/sinks"
)

// Options configures a Run. Zero values of Concurrency, DrainTimeout,
// Timeout and Prefix take defaults; Users, Groups and MembersPerGroup are
// taken as given (the CLI's defaults, 10,000, 100 and 500, are the size of
// the cycle the README's performance figures measure).
type Options struct {
	// URL is the tenant's SCIM base URL, e.g. http://127.0.0.1:8080/scim/v2/default.
	URL string
	// Token is the bearer token sent with every request.
	Token string
	// Users, Groups and MembersPerGroup size the cycle. MembersPerGroup may
	// not exceed Users: members are distinct users.
	Users, Groups, MembersPerGroup int
	// Concurrency is the number of workers in closed loop (default 8). In
	// open loop it is the least bound on requests in flight.
	Concurrency int
	// Rate, when > 0, makes the run open-loop: requests are due at a fixed
	// rate (requests/s) whatever the server's speed, and latency is measured
	// from when a request was due, so that a slow server cannot hide its
	// queueing (coordinated omission). 0 is closed loop.
	Rate float64
	// Receiver is the host:port to listen on for webhooks; "" = no receiver.
	Receiver string
	// ReceiverListener, when set, is used instead of listening on Receiver
	// (tests and callers that need the port before the run starts). Run
	// closes it.
	ReceiverListener net.Listener
	// ReceiverSecret is the sink's Standard Webhooks secret (whsec_…); every
	// delivery's signature is verified with it. "" = signatures not checked.
	ReceiverSecret string
	// Baseline also runs the same cycle against a minimal net/http JSON
	// handler in this process and reports the ratio.
	Baseline bool
	// Prefix makes userNames and displayNames unique to the run, so that runs
	// against the same tenant don't collide. "" = a random one.
	Prefix string
	// ShuffledNames starts every userName (and the email made of it) with
	// a random part, so that they arrive in no order, as a directory's do;
	// otherwise they are numbered in order, which keeps a store's index
	// writes for consecutive creates on the same pages.
	ShuffledNames bool
	// Progress receives a progress bar; nil = none.
	Progress io.Writer
	// DrainTimeout bounds the wait for webhooks after the last request
	// (default 30s).
	DrainTimeout time.Duration
	// Timeout bounds each request (default 60s, Entra's).
	Timeout time.Duration

	// Mode is what to run: ModeCycle (the default, Run), ModeOps (RunOps)
	// or ModeScale (RunScale).
	Mode string
	// Requests is, in the ops mode, how many creates and filter GETs a
	// round sends (default 4,000); in the scale mode, how many of each it
	// measures once the endpoint holds Users users (default 10,000).
	Requests int
	// Rounds is how often the ops mode repeats its measurement (default 3).
	Rounds int
	// ReadConcurrency is the concurrency of the scale mode's filter GETs
	// (default 8).
	ReadConcurrency int
	// Admin, in the scale mode, is the admin API of the scimrelay that URL
	// points at, read for its heap in use, its outbox and its data file's
	// size by bucket; nil = not read (any SCIM endpoint).
	Admin *adminclient.Client
}

// Modes of a run.
const (
	ModeCycle = "cycle"
	ModeOps   = "ops"
	ModeScale = "scale"
)

// Defaults of Options.
const (
	DefaultConcurrency  = 8
	DefaultDrainTimeout = 30 * time.Second
	DefaultTimeout      = 60 * time.Second
	// MemberBatch is how many members one PATCH adds, as Entra batches them.
	MemberBatch = 100
	// openLoopMaxInFlight bounds the goroutines of the open loop: past it a
	// request waits (and its wait is counted in its latency).
	openLoopMaxInFlight = 256
)

// ErrInvalidOptions is wrapped by every error about Options.
var ErrInvalidOptions = errors.New("invalid bench options")

// ErrTestConnection means the endpoint failed Entra's Test Connection
// (a filter GET for a user that does not exist, answered 200 with an empty
// list) before the cycle started.
var ErrTestConnection = errors.New("test connection")

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$`)

// withDefaults checks o and fills in defaults, reporting every problem at once.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	u, err := url.Parse(o.URL)
	switch {
	case o.URL == "":
		errs = append(errs, errors.New("url is empty; give the tenant's SCIM base URL, e.g. http://127.0.0.1:8080/scim/v2/default"))
	case err != nil:
		errs = append(errs, fmt.Errorf("url %q: %w", o.URL, err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("url %q: scheme must be http or https", o.URL))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("url %q has no host", o.URL))
	case u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, fmt.Errorf("url %q: give the base URL without query or fragment", o.URL))
	}
	if o.Users < 0 {
		errs = append(errs, fmt.Errorf("users is %d; want 0 or more", o.Users))
	}
	if o.Groups < 0 {
		errs = append(errs, fmt.Errorf("groups is %d; want 0 or more", o.Groups))
	}
	switch o.Mode {
	case "", ModeCycle, ModeScale:
		if o.Users == 0 && o.Groups == 0 {
			errs = append(errs, errors.New("users and groups are both 0: nothing to provision"))
		}
	case ModeOps:
	default:
		errs = append(errs, fmt.Errorf("mode %q: want %s, %s or %s", o.Mode, ModeCycle, ModeOps, ModeScale))
	}
	if o.Requests < 0 || o.Rounds < 0 || o.ReadConcurrency < 0 {
		errs = append(errs, fmt.Errorf("requests (%d), rounds (%d) and read concurrency (%d) must not be negative", o.Requests, o.Rounds, o.ReadConcurrency))
	}
	if (o.Mode == ModeScale || o.Mode == ModeOps) && o.Rate > 0 {
		errs = append(errs, fmt.Errorf("rate: the %s mode runs closed loop only", o.Mode))
	}
	// What a mode would ignore is refused, rather than a report that
	// leaves out what was asked for.
	if (o.Mode == ModeScale || o.Mode == ModeOps) && o.receiving() {
		errs = append(errs, fmt.Errorf("receiver: the %s mode sends no webhook to wait for; only the cycle measures deliveries", o.Mode))
	}
	if o.Mode == ModeScale && o.Baseline {
		errs = append(errs, errors.New("baseline: the scale mode measures the relay at a size alone; the cycle and ops modes compare with the baseline"))
	}
	if o.MembersPerGroup < 0 {
		errs = append(errs, fmt.Errorf("members per group is %d; want 0 or more", o.MembersPerGroup))
	}
	if o.MembersPerGroup > o.Users && o.Groups > 0 {
		errs = append(errs, fmt.Errorf("members per group (%d) exceeds users (%d): members are distinct users", o.MembersPerGroup, o.Users))
	}
	if o.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency is %d; want 1 or more (0 = %d)", o.Concurrency, DefaultConcurrency))
	}
	if o.Rate < 0 || o.Rate != o.Rate {
		errs = append(errs, fmt.Errorf("rate is %v; want 0 (closed loop) or a positive requests/s", o.Rate))
	}
	if o.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("drain timeout is %s; want 0 (= %s) or more", o.DrainTimeout, DefaultDrainTimeout))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout is %s; want 0 (= %s) or more", o.Timeout, DefaultTimeout))
	}
	if o.Prefix != "" && !prefixPattern.MatchString(o.Prefix) {
		errs = append(errs, fmt.Errorf("prefix %q: want 1 to 40 letters, digits, '.', '_' or '-', starting with a letter or digit (Entra cannot filter on special characters)", o.Prefix))
	}
	if o.Receiver != "" && o.ReceiverListener == nil {
		if _, _, err := net.SplitHostPort(o.Receiver); err != nil {
			errs = append(errs, fmt.Errorf("receiver %q: want host:port: %w", o.Receiver, err))
		}
	}
	if o.ReceiverSecret != "" {
		if _, err := sinks.ParseSecret(o.ReceiverSecret); err != nil { // as the sink's, which signs
			errs = append(errs, fmt.Errorf("receiver secret is not a Standard Webhooks secret: %w", err))
		}
		if o.Receiver == "" && o.ReceiverListener == nil {
			errs = append(errs, errors.New("receiver secret given without a receiver address"))
		}
	}
	if len(errs) > 0 {
		return o, fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	o.URL = strings.TrimRight(o.URL, "/")
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Prefix == "" {
		o.Prefix = "bench-" + randomHex(4)
	}
	if o.Mode == "" {
		o.Mode = ModeCycle
	}
	if o.Requests == 0 {
		o.Requests = 4000
		if o.Mode == ModeScale {
			o.Requests = 10_000
		}
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.ReadConcurrency == 0 {
		o.ReadConcurrency = 8
	}
	return o, nil
}

func (o Options) receiving() bool { return o.Receiver != "" || o.ReceiverListener != nil }

// Run performs one provisioning cycle against o.URL and reports what it
// measured. Failed requests are counted in the report, not returned. Run
// returns an error for bad options, a failed Test Connection, a receiver
// that cannot listen, or a cancelled ctx; in the last case the report of
// what was done so far comes with it.
func Run(ctx context.Context, o Options) (*Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		if o.ReceiverListener != nil {
			_ = o.ReceiverListener.Close()
		}
		return nil, err
	}
	var recv *receiver
	if o.receiving() {
		recv, err = startReceiver(o)
		if err != nil {
			return nil, err
		}
		defer recv.stop()
	}
	bar := newBar(o.Progress, plannedRequests(o), "test connection")
	defer bar.finish()

	c := newCycle(o, o.URL, bar, recv != nil)
	defer c.close()
	if err := c.testConnection(ctx); err != nil {
		return nil, err
	}
	runErr := c.run(ctx)
	rep := &Report{Config: configOf(o)}
	rep.fill(c)
	if recv != nil {
		bar.describe("waiting for webhooks")
		recv.drain(ctx, c.acks, o.DrainTimeout)
		rep.Events = recv.stats(c.acks, c.start)
		if runErr == nil && ctx.Err() != nil {
			runErr = fmt.Errorf("waiting for webhooks: %w", ctx.Err())
		}
	}
	if runErr == nil && o.Baseline {
		bar.describe("baseline")
		base, err := runBaseline(ctx, o, bar)
		if err != nil {
			runErr = err
		} else {
			rep.setBaseline(base)
		}
	}
	if runErr != nil {
		return rep, runErr
	}
	return rep, nil
}

// plannedRequests is what the progress bar counts to: the cycle's requests
// if every one succeeds, plus the baseline's.
func plannedRequests(o Options) int64 {
	members := 0
	if o.Groups > 0 && o.MembersPerGroup > 0 {
		members = o.Groups * ((o.MembersPerGroup + MemberBatch - 1) / MemberBatch)
	}
	patch, deact, del := incrementalCounts(o.Users)
	n := int64(2*o.Users + 2*o.Groups + members + patch + deact + del)
	if o.Baseline {
		n *= 2
	}
	return n + 1 // the test connection
}

// userName is the userName of the user named local in the run.
func (o *Options) userName(local string) string {
	if o.ShuffledNames {
		local = randomHex(4) + "." + local
	}
	return local + "@bench.example"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// newUUID returns a random (version 4) UUID, the shape of Entra's externalIds.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
