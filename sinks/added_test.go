// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// wantIDs waits until r has received exactly want, each once, in any
// order: events of different resources go out at once.
func wantIDs(t testing.TB, what string, r *receiver, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := slices.Sorted(slices.Values(ids(r))); !slices.Equal(got, want) {
			return fmt.Errorf("%s received %v, want %v", what, got, want)
		}
		return nil
	})
}

// TestAddedSinkRestartedBeforeItsConsumersStartsFromTheReload is the
// chaos review's scenario: a reload during a NATS outage adds sink d, whose
// consumers cannot be made; NATS comes back and events are stored (the
// outbox's backlog among them); the process restarts, with d configured,
// before any reload makes d's consumers. d still receives every event
// stored since the reload: data_dir/sinks-added.json kept its time. Sink
// x, configured first at the restart with nothing recorded, starts with
// the events after its consumers, as a sink configured at start always
// did; c, whose consumers existed, resumes where it stopped.
func TestAddedSinkRestartedBeforeItsConsumersStartsFromTheReload(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns, js := natsStreamAt(t, dir, port)
	file := filepath.Join(t.TempDir(), "sinks-added.json") // the process's data_dir
	c, d, x := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	m1, stop1 := runManager(t, Options{Sinks: []Config{sinkConfig("c", c.URL, nil)}, JS: js, AddedFile: file})
	pub := newPublisher(t, js)
	e1 := pub.publish("acme", events.UserCreated, "u1")
	wantIDs(t, "c", c, e1)
	// Written before the reload, stored only once NATS is back.
	backlog, e2 := pub.next("acme", events.UserCreated, "u2")

	ns.Shutdown()
	ns.WaitForShutdown()
	actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	reload := time.Now()
	list := []Config{sinkConfig("c", c.URL, nil), sinkConfig("d", d.URL, nil), sinkConfig("f", d.URL, nil)}
	if ch, err := m1.Apply(actx, list); err == nil || !slices.Equal(ch.Added, []string{"d", "f"}) {
		t.Fatalf("Apply while NATS is away: %+v, %v; want d and f added and their setup failed", ch, err)
	}
	recorded := readAddedFile(t, file)
	if at, ok := recorded["d"]; !ok || at.Before(reload) || time.Since(at) > time.Minute {
		t.Fatalf("%s holds %v; want d added at the reload (%v)", file, recorded, reload)
	}

	eventstest.RunServerAt(t, dir, port)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := js.PublishMsg(ctx, backlog, jetstream.WithExpectStream(events.StreamName)) // a repeat is dropped as a duplicate
		return err
	})
	e3 := pub.publish("acme", events.UserUpdated, "u1")
	wantIDs(t, "c", c, e1, e2, e3)

	stop1() // the restart: d is configured now, f was taken out again
	list = []Config{sinkConfig("c", c.URL, nil), sinkConfig("d", d.URL, nil), sinkConfig("x", x.URL, nil)}
	runManager(t, Options{Sinks: list, JS: js, AddedFile: file})
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is still there (%v) once d's consumers exist and f is no longer configured", file, err)
	}
	cons, err := js.Consumer(ctx, events.StreamName, consumerName("d", 0))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := cons.CachedInfo().Config; cfg.DeliverPolicy != jetstream.DeliverByStartTimePolicy || cfg.OptStartTime == nil || !cfg.OptStartTime.Equal(recorded["d"]) {
		t.Errorf("d's consumer starts at %v %v; want by start time from %v", cfg.DeliverPolicy, cfg.OptStartTime, recorded["d"])
	}
	e4 := pub.publish("acme", events.UserCreated, "u4")
	wantIDs(t, "d, added by the reload before the restart: the events stored since", d, e2, e3, e4)
	wantIDs(t, "x, configured at the restart with nothing recorded: the events after it", x, e4)
	wantIDs(t, "c, its consumers there before the restart", c, e1, e2, e3, e4)
}

// TestAddedFileUnreadableIsIgnored: a sinks-added file that cannot be
// read is logged at Warn, naming it, and ignored: the manager starts and
// its sinks start as they did without the file. One that cannot be
// written is logged too, and the time of the Apply that added a sink still
// applies while the process runs.
func TestAddedFileUnreadableIsIgnored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string)
		// unwritable: an Apply cannot replace it.
		unwritable bool
	}{
		{"not JSON", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(`{"d": "yesterday`), 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"a directory", func(t *testing.T, path string) {
			if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := natsStream(t)
			file := filepath.Join(t.TempDir(), "sinks-added.json")
			tc.prepare(t, file)
			var out eventstest.Log
			log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn}))
			d, e := newReceiver(t, nil), newReceiver(t, nil)
			pub := newPublisher(t, js)
			pub.publish("acme", events.UserCreated, "u0") // before d's consumers
			m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("d", d.URL, nil)}, JS: js, AddedFile: file, Logger: log})
			if got := eventstest.GrepLines(out.String(), "level=WARN"); !strings.Contains(got, "ignoring the file of sinks added by a reload") || !strings.Contains(got, file) {
				t.Errorf("log says %q; want a warning that names %s", out.String(), file)
			}
			e1 := pub.publish("acme", events.UserCreated, "u1")
			wantIDs(t, "d, configured at start", d, e1)

			gone, cancel := context.WithCancel(ctx)
			cancel()
			list := []Config{sinkConfig("d", d.URL, nil), sinkConfig("e", e.URL, nil)}
			if ch, err := m.Apply(gone, list); err == nil || !slices.Equal(ch.Added, []string{"e"}) {
				t.Fatalf("Apply with its context ended: %+v, %v; want e added and its setup failed", ch, err)
			}
			warned := strings.Contains(out.String(), "could not keep when the reload added sinks")
			if warned != tc.unwritable {
				t.Errorf("warned that the file could not be written: %v, want %v; log: %s", warned, tc.unwritable, out.String())
			}
			if !tc.unwritable {
				if _, ok := readAddedFile(t, file)["e"]; !ok {
					t.Errorf("%s does not hold e after the Apply that added it", file)
				}
			}
			e2 := pub.publish("acme", events.UserUpdated, "u1")
			if ch, err := m.Apply(ctx, list); err != nil || !slices.Equal(ch.Restarted, []string{"e"}) {
				t.Fatalf("Apply of the same list: %+v, %v; want e started again", ch, err)
			}
			wantIDs(t, "e, from the Apply that added it", e, e2)
			wantIDs(t, "d", d, e1, e2)
		})
	}
}

// readAddedFile reads a sinks-added file as the manager writes it.
func readAddedFile(t testing.TB, path string) map[string]time.Time {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var at map[string]time.Time
	if err := json.Unmarshal(raw, &at); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return at
}
