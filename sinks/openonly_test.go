// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestWorkerOpensWhatTheFrontEndMakes: a delivery worker (OpenOnly)
// creates no stream or bucket. Set up before the front end, it waits for
// them, and delivers once the front end has made them; given up on, it
// says who makes them.
func TestWorkerOpensWhatTheFrontEndMakes(t *testing.T) {
	js := natsStream(t)
	rc := newReceiver(t, func(int, *http.Request) int { return 200 })
	sink := sinkConfig("crm", rc.URL, nil)
	made := func() []string {
		var names []string
		for name := range js.StreamNames(ctx).Name() {
			if name != events.StreamName {
				names = append(names, name)
			}
		}
		return names
	}

	// Given up on before the front end comes.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	lone, err := NewManager(Options{Sinks: []Config{sink}, JS: js, OpenOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := lone.Setup(short); err == nil || !strings.Contains(err.Error(), "the SCIM front end") {
		t.Errorf("a worker's setup with nothing made: %v, want an error naming the SCIM front end", err)
	}

	var log eventstest.Log
	worker, err := NewManager(Options{Sinks: []Config{sink}, JS: js, OpenOnly: true,
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	setup := make(chan error, 1)
	go func() { setup <- worker.Setup(ctx) }()
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(log.String(), "waiting for the SCIM front end") {
			return errors.New("the worker does not say it waits for the front end")
		}
		return nil
	})
	if names := made(); len(names) != 0 {
		t.Fatalf("a worker made %v", names)
	}
	// The front end (not OpenOnly) makes them, and runs no worker of its
	// own here: the one above delivers.
	front, err := NewManager(Options{Sinks: []Config{sink}, JS: js})
	if err != nil {
		t.Fatal(err)
	}
	if err := front.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-setup; err != nil {
		t.Fatalf("the worker's setup, once the front end made what it needs: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	newPublisher(t, js).publish("acme", events.UserCreated, "u1")
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 1 {
			return fmt.Errorf("%d requests, want 1", n)
		}
		return nil
	})
	// A reload that adds a sink and changes another, before the front
	// end's: the worker waits for the added sink's bucket until the reload
	// gives up, and sets the changed one up all the same.
	added := sinkConfig("erp", rc.URL, nil)
	sink.Timeout = 3 * time.Second
	// Then one that changes crm again, erp idle since: the same.
	for i, reload := range [][]Config{{added, sink}, {added, withTimeout(sink, 4*time.Second)}} {
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := worker.Apply(short, reload); err == nil || !strings.Contains(err.Error(), "sink erp") {
			t.Errorf("reload %d of a worker, erp's bucket not made yet: %v, want erp's bucket missing", i+1, err)
		}
		eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if err := worker.Ready(ctx); err == nil || strings.Contains(err.Error(), "crm") || !strings.Contains(err.Error(), "erp") {
				return fmt.Errorf("after reload %d, which gave up on erp: Ready says %v; want erp not set up, and crm running", i+1, err)
			}
			return nil
		})
	}
	// Reloaded again, it waits for the front end's reload.
	applied := make(chan error, 1)
	go func() {
		_, err := worker.Apply(ctx, []Config{added, sink})
		applied <- err
	}()
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(log.String(), "parking bucket of sink erp") {
			return errors.New("the worker does not wait for sink erp's bucket")
		}
		return nil
	})
	if _, err := js.KeyValue(ctx, parkingBucketName("erp")); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("sink erp's bucket before the front end's reload: %v", err)
	}
	if _, err := front.Apply(ctx, []Config{sink, added}); err != nil {
		t.Fatal(err)
	}
	if err := <-applied; err != nil {
		t.Fatalf("the worker's reload, once the front end's made sink erp's bucket: %v", err)
	}
	newPublisher(t, js).publish("acme", events.UserCreated, "u2")
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 3 { // u2 to crm and to erp
			return fmt.Errorf("%d requests, want 3", n)
		}
		return nil
	})
}

func withTimeout(c Config, d time.Duration) Config {
	c.Timeout = d
	return c
}
