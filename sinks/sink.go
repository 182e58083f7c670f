// SPDX-License-Identifier: Apache-2.0

// Package sinks delivers events to the destinations configured in
// relay.yaml: one durable JetStream consumer per sink, webhook delivery with
// short in-request retries and a long jittered schedule on top of JetStream
// redelivery, Standard Webhooks signatures, ordering per resource, and a
// dead-letter queue that can be listed and redriven.
//
// It imports nothing from the relay but the event contract (relay/events),
// so that delivery workers run on machines without the relay's data file.
package sinks

import (
	"context"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Sink delivers one event to one destination, once (short in-request
// retries included).
type Sink interface {
	Deliver(ctx context.Context, e *event.Event) Result
}

// Result is the outcome of one Deliver call.
type Result struct {
	// Status is the HTTP status of the last response, 0 when none came back.
	Status int
	// Err is nil when the event was delivered (any 2xx).
	Err error
	// Permanent means never retry: dead-letter at once (410, other
	// permanent 4xx, a refused target).
	Permanent bool
	// RetryAfter is the receiver's Retry-After (429, 503), 0 when absent.
	RetryAfter time.Duration
	// Latency is how long the call took.
	Latency time.Duration
	// Attempts counts the HTTP requests made inside the call.
	Attempts int
	// Events is how many events the request carried: 1, or a batch's.
	Events int
}
