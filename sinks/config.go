// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Defaults and bounds of a sink Config; a zero field takes the default.
const (
	defaultConcurrency = 16
	maxConcurrency     = 1024
	// maxTimeout bounds a webhook's per-request timeout: a receiver that
	// needs longer holds a worker slot for that long on every delivery.
	maxTimeout = 5 * time.Minute
	// minTimeout bounds it from below: at 1ns the sink starts and every
	// delivery fails.
	minTimeout = 100 * time.Millisecond
)

// A sink's name (events.ValidName) becomes part of the sink's partition
// consumers (scimrelay-sink-<name>-P<n>), its parking bucket
// (scimrelay-parked-<name>), its dead-letter and delivery-attempt subjects
// (scimrelay-dlq.<name>, scimrelay-deliveries.<name>...) and its workers'
// announcements, so it must be a safe NATS token and JetStream name.

// Check reports every problem of the sinks' configuration at once, each
// naming its relay.yaml key ("sinks[0].url: ..."), without NATS and without
// a network connection. NewManager refuses exactly what Check refuses.
func (o Options) Check() error {
	_, err := o.build()
	return err
}

// build checks each sink, applies its defaults and builds its transport.
func (o Options) build() ([]*sinkRuntime, error) {
	var errs []error
	var out []*sinkRuntime
	seen := map[string]int{}
	for i, c := range o.Sinks {
		field := fmt.Sprintf("sinks[%d]", i)
		s, err := o.buildOne(field, c)
		switch j, dup := seen[c.Name]; {
		case !events.ValidName(c.Name):
			errs = append(errs, fmt.Errorf("%s.name: must match %s, got %q", field, events.NameRule, c.Name))
		case dup:
			errs = append(errs, fmt.Errorf("%s.name: %q is also sinks[%d]", field, c.Name, j))
		default:
			seen[c.Name] = i
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// buildOne checks one sink; field is its relay.yaml path.
func (o Options) buildOne(field string, c Config) (*sinkRuntime, error) {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", field, key, fmt.Sprintf(format, args...)))
	}
	if c.Type != "" && c.Type != "webhook" {
		add("type", "must be webhook, got %q", c.Type)
	}
	var patterns events.Patterns
	for j, e := range c.Events {
		p, err := events.ParsePattern(e)
		if err != nil {
			add(fmt.Sprintf("events[%d]", j), "%v", err)
			continue
		}
		patterns = append(patterns, p)
	}
	// A tenant twice would give the sink's consumers overlapping subject
	// filters, which JetStream refuses: the sink would deliver nothing.
	tenants := map[string]int{}
	for j, t := range c.Tenants {
		switch k, twice := tenants[t]; {
		case !events.ValidName(t):
			add(fmt.Sprintf("tenants[%d]", j), "must be a tenant name, %s, got %q", events.NameRule, t)
		case twice:
			add(fmt.Sprintf("tenants[%d]", j), "%q is also tenants[%d]; give it once", t, k)
		default:
			tenants[t] = j
		}
	}
	if c.Concurrency == 0 {
		c.Concurrency = defaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > maxConcurrency {
		add("concurrency", "must be between 1 and %d, got %d", maxConcurrency, c.Concurrency)
	}
	for j, d := range c.Retry {
		if d <= 0 {
			add(fmt.Sprintf("retry[%d]", j), "must be positive, got %s", d)
		}
	}
	if c.Retry != nil && len(c.Retry) == 0 {
		// "retry: []" was the default schedule, eight retries over 32 hours,
		// where README says retry replaces the schedule.
		add("retry", "is an empty schedule; leave retry out for the default (%v), or give at least one delay", DefaultSchedule)
	}
	if len(c.Retry) == 0 {
		c.Retry = DefaultSchedule
	}
	if b := c.Batch; b != nil {
		b := *b
		switch {
		case b.MaxEvents == 0:
			b.MaxEvents = defaultBatchEvents
		case b.MaxEvents < 1 || b.MaxEvents > maxBatchEvents:
			add("batch.max_events", "must be between 1 and %d, got %d", maxBatchEvents, b.MaxEvents)
		}
		switch {
		case b.MaxWait == 0:
			b.MaxWait = defaultBatchWait
		case b.MaxWait < 0 || b.MaxWait > maxBatchWait:
			add("batch.max_wait", "must be 0 (the default, %s) or at most %s, got %s", defaultBatchWait, maxBatchWait, b.MaxWait)
		}
		switch {
		case b.MaxBytes == 0:
			b.MaxBytes = defaultBatchBytes
		case b.MaxBytes < minBatchBytes || b.MaxBytes > maxBatchBytes:
			add("batch.max_bytes", "must be between 64KiB and 64MiB, got %d bytes", b.MaxBytes)
		}
		c.Batch = &b
	}
	wh, err := NewWebhook(WebhookOptions{
		Name: c.Name, URL: c.URL, Secret: c.Secret, Format: c.Format, Timeout: c.Timeout,
		PreviousSecret: c.PreviousSecret, PreviousSecretExpires: c.PreviousSecretExpires, Batch: c.Batch != nil,
		Headers: c.Headers, AllowPrivate: c.AllowPrivate, AllowPrivateProxy: c.AllowPrivateProxy, UserAgent: o.UserAgent,
	}, o.Logger)
	for _, e := range leaves(err) {
		errs = append(errs, fmt.Errorf("%s.%w", field, e))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &sinkRuntime{cfg: c, sink: wh, patterns: patterns}, nil
}

// leaves returns the errors an errors.Join holds, or err alone.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
