// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/scimrelay/scimrelay/relay/disk"
)

// addedSinks is when Apply added each sink whose partition consumers do not
// all exist yet (its setup failed: NATS away), kept in a file of the
// process's data_dir as well as in memory: a process that restarts before a
// reload makes those consumers still starts them from the reload that added
// the sink, not with the events after the restart (docs/decisions.md,
// Delivery). The file is a JSON object, sink name to RFC 3339 time; it is
// removed when it would be empty, so that it exists only while a sink
// waits for its consumers.
//
// One that cannot be read is logged and ignored: such a sink starts, as a
// sink configured at start does, with the events after its consumers are
// made. One that cannot be written is logged too: the time still applies
// while the process runs.
type addedSinks struct {
	path string // "" keeps the times in memory only
	log  *slog.Logger

	mu sync.Mutex
	at map[string]time.Time
}

// readAdded reads the file at path; a missing one holds nothing.
func readAdded(path string, log *slog.Logger) *addedSinks {
	a := &addedSinks{path: path, log: log, at: map[string]time.Time{}}
	if path == "" {
		return a
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return a
	}
	var at map[string]time.Time
	if err == nil {
		err = json.Unmarshal(raw, &at)
	}
	if err != nil {
		log.Warn("ignoring the file of sinks added by a reload whose consumers were not made yet: such a sink starts with the events after its consumers are made, not from the reload that added it; `scimrelay sinks replay --sink <name> --since <duration>` sends it what it missed",
			"file", path, "err", err)
		return a
	}
	for name, t := range at {
		if !t.IsZero() {
			a.at[name] = t
		}
	}
	return a
}

// since returns when Apply added the sink, zero when the file does not say.
func (a *addedSinks) since(name string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.at[name]
}

// except returns the sinks the file holds that are not among names.
func (a *addedSinks) except(names []string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for name := range a.at {
		if !slices.Contains(names, name) {
			out = append(out, name)
		}
	}
	return out
}

// note records that Apply added names at t and forgets drop (sinks removed,
// or whose consumers now exist), writing the file when that changed it. A
// failed write is logged; the times in memory apply all the same.
func (a *addedSinks) note(t time.Time, names []string, drop []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := maps.Clone(a.at)
	for _, name := range names {
		next[name] = t.UTC()
	}
	for _, name := range drop {
		delete(next, name)
	}
	if maps.EqualFunc(next, a.at, time.Time.Equal) {
		return
	}
	a.at = next
	if a.path == "" {
		return
	}
	if err := a.write(next); err != nil {
		if len(names) > 0 {
			a.log.Warn("could not keep when the reload added sinks: they start from this reload as long as this process runs, but one restarted before their consumers are made starts them with the events after it; `scimrelay sinks replay --sink <name> --since <duration>` sends those missed",
				"file", a.path, "sinks", names, "err", err)
			return
		}
		// The consumers exist and keep their position: an entry left
		// for them changes nothing.
		a.log.Warn("could not remove sinks whose consumers exist from the file of sinks a reload added", "file", a.path, "sinks", drop, "err", err)
	}
}

// write replaces the file with at, atomically: a crash leaves the old file
// or the new one, never part of either. An empty at removes it.
func (a *addedSinks) write(at map[string]time.Time) error {
	dir := filepath.Dir(a.path)
	if len(at) == 0 {
		if err := os.Remove(a.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return disk.SyncDir(dir)
	}
	raw, err := json.MarshalIndent(at, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(a.path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails once renamed
	_, err = tmp.Write(append(raw, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), a.path); err != nil {
		return err
	}
	return disk.SyncDir(dir)
}
