// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestRelayCredentialStaysInProcess: the relay's own nkey, which may do
// anything, works only in-process, and its seed is written nowhere.
func TestRelayCredentialStaysInProcess(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	dir := t.TempDir()
	e, err := StartEmbedded(Options{Listen: addr, StoreDir: dir}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := Connect(Options{}, e, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("in-process: %v", err)
	}
	nc.Close()
	pub, _ := e.relay.PublicKey()
	if nc, err := nats.Connect("nats://"+addr, nats.Nkey(pub, e.relay.Sign), nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("the relay's nkey over TCP: %v, want an authorization violation", err)
	}
	seed, _ := e.relay.Seed()
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, seed) || bytes.Contains(b, []byte(pub)) {
			return fmt.Errorf("%s holds the relay's credential", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
