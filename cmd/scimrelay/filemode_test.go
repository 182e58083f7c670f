// SPDX-License-Identifier: Apache-2.0

//go:build unix

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/certfile/certfiletest"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// warnings are the records of a JSON log at Warn whose message begins
// with msg.
func warnings(t *testing.T, log, msg string) []map[string]any {
	t.Helper()
	var found []map[string]any
	for sc := bufio.NewScanner(strings.NewReader(log)); sc.Scan(); {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("a log line that is not JSON: %s", sc.Text())
		}
		if m, _ := r["msg"].(string); r["level"] == "WARN" && strings.HasPrefix(m, msg) {
			found = append(found, r)
		}
	}
	return found
}

// everyoneReadsWarning begins the Warn of a key file every user can read.
const everyoneReadsWarning = "a private key or credential file can be read by every user of this machine"

// chmod sets the mode of each path.
func chmod(t *testing.T, mode fs.FileMode, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// saidOf returns, by field, the paths and modes of the records of an
// everyoneReadsWarning.
func saidOf(t *testing.T, log string) map[string]string {
	t.Helper()
	said := map[string]string{}
	for _, r := range warnings(t, log, everyoneReadsWarning) {
		field, _ := r["field"].(string)
		said[field] = fmt.Sprintf("%v %v", r["path"], r["mode"])
	}
	return said
}

// TestKeysEveryoneReadsAreSaid holds README's "TLS on the relay's
// listeners": serve says at Warn, naming the relay.yaml field, the path
// and the mode, of a private key (tls, admin.tls, nats.tls) or a NATS
// credential file that every user of the machine can read, and starts
// with it, its mode unchanged (the file is not the relay's). A key its
// group reads (the Helm chart's 0440, the systemd unit's 0640) or its
// owner alone, and certificates everyone reads, are not said.
func TestKeysEveryoneReadsAreSaid(t *testing.T) {
	for _, c := range []struct {
		keyMode fs.FileMode
		said    bool
	}{
		{0o644, true},
		{0o640, false},
		{0o600, false},
	} {
		t.Run(c.keyMode.String(), func(t *testing.T) {
			scim := certfiletest.Write(t, t.TempDir(), time.Now().Add(time.Hour))
			admin := certfiletest.Write(t, t.TempDir(), time.Now().Add(time.Hour))
			nats := certfiletest.Write(t, t.TempDir(), time.Now().Add(time.Hour))
			chmod(t, c.keyMode, scim.KeyFile, admin.KeyFile, nats.KeyFile)
			chmod(t, 0o644, scim.CertFile, admin.CertFile, nats.CertFile)
			cfg := testConfig(t, t.TempDir())
			cfg.TLS = config.ListenerTLS{CertFile: scim.CertFile, KeyFile: scim.KeyFile}
			cfg.Admin.TLS = config.ListenerTLS{CertFile: admin.CertFile, KeyFile: admin.KeyFile}
			// The embedded server's listener, which reads nats.tls.
			cfg.NATS.Listen = fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
			cfg.NATS.TLS = config.TLS{CertFile: nats.CertFile, KeyFile: nats.KeyFile}
			var logs eventstest.Log
			p := startRelayWith(t, cfg, roleAll, slog.New(slog.NewJSONHandler(&logs, nil)), io.Discard)
			if status, _, err := send(trusting(t, scim), "GET", p.scimURL+"/scim/v2/acme/ServiceProviderConfig", acmeToken, ""); err != nil || status != http.StatusOK {
				t.Fatalf("the SCIM listener: %d %v", status, err)
			}

			want := map[string]string{}
			if c.said {
				for field, path := range map[string]string{"tls.key_file": scim.KeyFile, "admin.tls.key_file": admin.KeyFile, "nats.tls.key_file": nats.KeyFile} {
					want[field] = path + " " + c.keyMode.String()
				}
			}
			if got := saidOf(t, logs.String()); !maps.Equal(got, want) {
				t.Errorf("said %v, want %v; the log:\n%s", got, want, logs.String())
			}
			for _, path := range []string{scim.KeyFile, admin.KeyFile, nats.KeyFile} {
				if info, err := os.Stat(path); err != nil || info.Mode().Perm() != c.keyMode {
					t.Errorf("%s: %v %v, want its mode left at %s", path, info.Mode(), err, c.keyMode)
				}
			}
		})
	}

	// An external NATS's credential: nats.nkey, a user's seed.
	t.Run("nats.nkey", func(t *testing.T) {
		user, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := user.PublicKey()
		seed, _ := user.Seed()
		ns := eventstest.RunServerWith(t, t.TempDir(), -1, func(o *natsserver.Options) {
			o.Nkeys = []*natsserver.NkeyUser{{Nkey: pub}}
		})
		seedFile := filepath.Join(t.TempDir(), "relay.nk")
		if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		chmod(t, 0o644, seedFile)
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL, cfg.NATS.Nkey = ns.ClientURL(), seedFile
		var logs eventstest.Log
		startRelayWith(t, cfg, roleAll, slog.New(slog.NewJSONHandler(&logs, nil)), io.Discard)
		if got, want := saidOf(t, logs.String()), map[string]string{"nats.nkey": seedFile + " -rw-r--r--"}; !maps.Equal(got, want) {
			t.Errorf("said %v, want %v; the log:\n%s", got, want, logs.String())
		}
	})
}
