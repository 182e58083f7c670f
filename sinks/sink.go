// SPDX-License-Identifier: Apache-2.0

// Package sinks delivers events to the destinations configured in
// relay.yaml. A sink's events are spread over the stream's partitions, one
// durable JetStream consumer per partition (scimrelay-sink-<name>-P<n>);
// the sink's workers, in this process and others, share the partitions
// among themselves (membership.go), each partition run by one worker at a
// time (claim.go). Within a partition a resource's events go out one at a
// time and in order, different resources in parallel (partition.go),
// singly or in batches (batch.go), over webhooks with short in-request
// retries and Standard Webhooks signatures (webhook.go, signature.go).
//
// Failed events are not redelivered by JetStream (no Nak): their resource
// is parked, its events acknowledged, and a record in the sink's parking
// bucket (scimrelay-parked-<name>) says where its delivery stands and when
// it is due (parking.go). When it is due, or sooner once the receiver is
// back (wake.go), the resource's events are read back from the stream and
// delivered in order. The retry policy is in failure.go, the delays in
// Schedule; an event out of tries, or refused for good, goes to the
// dead-letter queue, which can be listed and redriven (dlq.go, redrive.go).
//
// It imports nothing of the relay's write path (package relay and its data
// file): only the event contract (relay/events) and the file-system helpers
// of relay/disk, so that delivery workers run on machines without the
// relay's data file.
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
