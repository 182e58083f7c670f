// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// TestRetry: a JetStream request that times out or finds no responder (a
// cluster forming, an answer lost in a leader election) is tried again,
// each attempt with a deadline of its own; one that fails for good is not;
// one still failing when ctx ends says so, with its last error.
func TestRetry(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	attempts := 0
	err := events.Retry(ctx, "test", log, func(ctx context.Context) error {
		attempts++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("an attempt without a deadline of its own")
		}
		switch attempts {
		case 1:
			return context.DeadlineExceeded // an answer that never came
		case 2:
			return nats.ErrNoResponders
		case 3: // as nats-server 2.15 answers while a peer is still joining
			return &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}
		}
		return nil
	})
	if err != nil || attempts != 4 {
		t.Fatalf("after a lost answer, no responders and a peer offline: %v, %d attempts, want success at the fourth", err, attempts)
	}

	// No peers for a reason waiting does not change: at once.
	attempts = 0
	tags := &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, tags not matched ['az:x']"}
	if err := events.Retry(ctx, "test", log, func(context.Context) error { attempts++; return tags }); !errors.Is(err, tags) || attempts != 1 {
		t.Fatalf("no peers whose tags match: %v after %d attempts, want it at once", err, attempts)
	}

	attempts = 0
	forGood := errors.New("stream name already in use with a different configuration")
	if err := events.Retry(ctx, "test", log, func(context.Context) error { attempts++; return forGood }); !errors.Is(err, forGood) || attempts != 1 {
		t.Fatalf("a lasting error: %v after %d attempts, want it at once", err, attempts)
	}

	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	err = events.Retry(short, "test", log, func(context.Context) error { return nats.ErrNoResponders })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), nats.ErrNoResponders.Error()) {
		t.Fatalf("out of time: %v, want the deadline and the last error", err)
	}
}

// TestAwaitMadeSaysWhoMakesItWhenTimeRunsOutMidAttempt: a worker that
// waits for what the front end makes, and whose time runs out during an
// attempt (the attempt's answer cut off), still says that the SCIM front
// end makes it, as the attempts before found: a flake hunt saw the bare
// "context deadline exceeded" (TestWorkerOpensWhatTheFrontEndMakes, 2 in
// 60 loaded runs).
func TestAwaitMadeSaysWhoMakesItWhenTimeRunsOutMidAttempt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n := 0
	err := events.AwaitMade(ctx, "the dead-letter stream", slog.New(slog.DiscardHandler), func(ctx context.Context) error {
		n++
		if n == 1 {
			return jetstream.ErrStreamNotFound
		}
		<-ctx.Done() // the deadline comes during the second attempt
		return ctx.Err()
	})
	if err == nil || !strings.Contains(err.Error(), "the SCIM front end") {
		t.Fatalf("after %d attempts: %v; want the error naming the SCIM front end", n, err)
	}
}

// TestRetryAsDecisionsSays holds docs/decisions.md (Readiness, "Start-up
// requests to JetStream are tried again, each with 10 s"): "every one of
// them goes through events.Retry (10 s an attempt; timeouts, no responders
// and 503s are tried again, backing off to 5 s; anything else fails at
// once)". TestRetry holds the timeouts, the no responders and what fails
// at once; this holds the 503s and the 10 s.
func TestRetryAsDecisionsSays(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A 503 JetStream answers while a cluster forms ("insufficient
	// resources", "cluster not available"), under an error code TestRetry
	// does not name: tried again.
	unavailable := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	attempts := 0
	var attemptLeft time.Duration
	err := events.Retry(ctx, "test", log, func(ctx context.Context) error {
		attempts++
		if dl, ok := ctx.Deadline(); ok && attempts == 1 {
			attemptLeft = time.Until(dl)
		}
		if attempts == 1 {
			return unavailable
		}
		return nil
	})
	if err != nil || attempts != 2 {
		t.Fatalf("after a 503: %v, %d attempts; want success at the second", err, attempts)
	}
	// 10 s an attempt (within the caller's minute).
	if attemptLeft <= 9*time.Second || attemptLeft > 10*time.Second {
		t.Errorf("an attempt had %s before its deadline; want 10 s", attemptLeft)
	}
}
