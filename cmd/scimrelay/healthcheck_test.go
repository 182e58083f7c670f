// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// healthcheckConfig writes the relay.yaml a container's health check reads:
// admin_listen on the wildcard address, as in the image, and no admin token.
func healthcheckConfig(t *testing.T, adminAddr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte("admin_listen: 0.0.0.0:"+port+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantOneLine fails unless s is exactly one line containing every want.
func wantOneLine(t *testing.T, what, s string, want ...string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Errorf("%s: want one line, got %q", what, s)
	}
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s: %q does not say %q", what, s, w)
		}
	}
}

// TestHealthcheck runs the health check against a relay that is ready, one
// that is gone, and one whose /readyz answers 503 because its NATS is gone.
func TestHealthcheck(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := healthcheckConfig(t, strings.TrimPrefix(p.adminURL, "http://"))

	code, out, stderr := cli(t, "healthcheck", "--config", cfg)
	if code != exitOK {
		t.Fatalf("ready relay: exit %d, stderr %q", code, stderr)
	}
	wantOneLine(t, "ready relay", out, "ready", "/readyz answered 200")

	// relay.yaml edited with a mistake elsewhere, not yet loaded: the
	// relay runs on, and its probe says so; a mistake in what the probe
	// reads is still one.
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, mistake := range []string{"limits:\n  rate: fast\n", "limtis:\n  rate: 5\n"} {
		if err := os.WriteFile(cfg, append(slices.Clip(text), mistake...), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _, stderr := cli(t, "healthcheck", "--config", cfg); code != exitOK {
			t.Errorf("ready relay, relay.yaml with %q: exit %d, stderr %q", mistake, code, stderr)
		}
	}
	if err := os.WriteFile(cfg, []byte("admin_listen: [1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, "healthcheck", "--config", cfg); code == exitOK || !strings.Contains(stderr, "admin_listen: want a string") {
		t.Errorf("admin_listen a list: exit %d, stderr %q", code, stderr)
	}
	if err := os.WriteFile(cfg, text, 0o600); err != nil {
		t.Fatal(err)
	}

	p.stop()
	code, _, stderr = cli(t, "healthcheck", "--config", cfg)
	if code != exitNotReady {
		t.Fatalf("stopped relay: exit %d, want %d; stderr %q", code, exitNotReady, stderr)
	}
	wantOneLine(t, "stopped relay", stderr, "cannot reach http://127.0.0.1:", "connection refused")

	// A delivery worker whose NATS goes away is up but not ready.
	ns := eventstest.RunServer(t)
	c := testConfig(t, t.TempDir())
	c.NATS.URL = eventstest.URL(ns)
	startFrontEndFor(t, c)
	w := startRelay(t, c, roleSinks)
	cfg = healthcheckConfig(t, strings.TrimPrefix(w.adminURL, "http://"))
	if code, _, stderr := cli(t, "healthcheck", "--config", cfg); code != exitOK {
		t.Fatalf("worker with NATS: exit %d, stderr %q", code, stderr)
	}
	ns.Shutdown()
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		res, err := http.Get(w.adminURL + "/readyz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz answered %d", res.StatusCode)
		}
		return nil
	})
	code, out, stderr = cli(t, "healthcheck", "--config", cfg)
	if code != exitError || out != "" {
		t.Fatalf("worker without NATS: exit %d, want %d; stdout %q, stderr %q", code, exitError, out, stderr)
	}
	wantOneLine(t, "worker without NATS", stderr, "not ready", "answered 503", "nats: ")
}

// TestHealthcheckHungRelay checks that a relay which accepts the connection
// but never answers fails the check within --timeout.
func TestHealthcheckHungRelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			held <- conn // held open, never answered
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for len(held) > 0 {
			(<-held).Close()
		}
	})
	start := time.Now()
	code, _, stderr := cli(t, "healthcheck", "--timeout", "300ms", "--config", healthcheckConfig(t, ln.Addr().String()))
	if code != exitNotReady || time.Since(start) > 10*time.Second {
		t.Fatalf("hung relay: exit %d after %s; stderr %q", code, time.Since(start), stderr)
	}
	wantOneLine(t, "hung relay", stderr, "did not answer in time")

	if code, _, stderr := cli(t, "healthcheck", "--timeout", "0s", "--config", healthcheckConfig(t, ln.Addr().String())); code != exitUsage {
		t.Errorf("--timeout 0s: exit %d, stderr %q", code, stderr)
	}
}

func TestReadinessReason(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{"[-]nats failed: not connected to NATS\n[-]sinks failed: sink crm: cannot consume partitions [3]\nreadyz check failed\n",
			"nats: not connected to NATS; sinks: sink crm: cannot consume partitions [3]"},
		{"upstream down\nmore detail\n", "upstream down"},
		{"", "no reason given"},
	} {
		if got := readinessReason([]byte(c.body)); got != c.want {
			t.Errorf("readinessReason(%q) = %q, want %q", c.body, got, c.want)
		}
	}
}
