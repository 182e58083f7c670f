// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

var tokenPattern = regexp.MustCompile(`scimrelay_[A-Za-z0-9_-]{20,}`)

// TestFirstStartToken: a tenant without a token gets one on first start. A
// relay whose output is not a terminal writes it to data_dir/initial-token
// (0600) and logs only where it is; a terminal gets it printed. A start
// that fails (a port taken) creates no token, so none is lost unseen.
func TestFirstStartToken(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Tenants = []config.Tenant{{Name: "acme"}}
	var logBuf eventstest.Log
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))

	// A port taken: the start fails before any token exists.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = taken.Addr().String()
	if _, err := newServer(context.Background(), cfg, roleAll, log, nil); err == nil || !strings.Contains(err.Error(), "SCIM listener") {
		t.Fatalf("start on a taken port: %v", err)
	}
	_ = taken.Close()
	if _, err := os.Stat(cfg.InitialTokenPath()); !os.IsNotExist(err) {
		t.Fatalf("a failed start wrote %s", cfg.InitialTokenPath())
	}

	// Not a terminal: the token goes to the file, never to the log.
	cfg.Listen = "127.0.0.1:0"
	p := startRelayWith(t, cfg, roleAll, log, nil)
	fi, err := os.Stat(cfg.InitialTokenPath())
	if err != nil {
		t.Fatalf("no %s: %v (the token was created on this start)", cfg.InitialTokenPath(), err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v", cfg.InitialTokenPath(), fi.Mode().Perm())
	}
	text, _ := os.ReadFile(cfg.InitialTokenPath())
	token := tokenPattern.FindString(string(text))
	if token == "" || !strings.Contains(string(text), "/scim/v2/acme") {
		t.Fatalf("%s holds:\n%s", cfg.InitialTokenPath(), text)
	}
	if strings.Contains(logBuf.String(), token) || !strings.Contains(logBuf.String(), cfg.InitialTokenPath()) {
		t.Fatalf("the log must name the file, never hold the token:\n%s", logBuf.String())
	}
	p.scim("acme", token, "GET", "/Users", "").want(t, 200)
	p.stop()

	// A terminal gets it printed, and no file.
	cfg2 := testConfig(t, t.TempDir())
	cfg2.Tenants = cfg.Tenants
	var terminal bytes.Buffer
	srv2, err := newServer(context.Background(), cfg2, roleAll, log, &terminal)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.close()
	if tokenPattern.FindString(terminal.String()) == "" || !strings.Contains(terminal.String(), "Secret Token:") {
		t.Fatalf("printed:\n%s", terminal.String())
	}
	if _, err := os.Stat(cfg2.InitialTokenPath()); !os.IsNotExist(err) {
		t.Fatal("the token went to a file as well")
	}
}

// TestFirstTokenSaysWhenItsHostIsUnreachable: a relay listening on every
// address (0.0.0.0, as in a container) with public_url empty writes its
// first token's Tenant URL with a line saying to put the host name Entra
// reaches in place of 0.0.0.0; with public_url set, the Tenant URL is
// under it and there is no such line.
func TestFirstTokenSaysWhenItsHostIsUnreachable(t *testing.T) {
	for _, public := range []string{"", "https://relay.example.com"} {
		cfg := testConfig(t, t.TempDir())
		cfg.Tenants = []config.Tenant{{Name: "acme"}}
		cfg.Listen, cfg.PublicURL = "0.0.0.0:0", public
		p := startRelayWith(t, cfg, roleAll, slog.New(slog.DiscardHandler), nil)
		text, err := os.ReadFile(cfg.InitialTokenPath())
		if err != nil {
			t.Fatal(err)
		}
		hinted := strings.Contains(string(text), "in place of 0.0.0.0, or set public_url")
		switch {
		case public == "" && !hinted:
			t.Errorf("listening on 0.0.0.0 without public_url, %s does not say the host must be replaced:\n%s", cfg.InitialTokenPath(), text)
		case public != "" && (hinted || !strings.Contains(string(text), "Tenant URL:    "+public+"/scim/v2/acme\n")):
			t.Errorf("with public_url %s, %s holds:\n%s", public, cfg.InitialTokenPath(), text)
		}
		p.stop()
	}
}

// TestFirstTokenIsNotWrittenThroughALink: a link put where the first
// token's file goes (data_dir/initial-token) stops the start, naming the
// file, and the token reaches neither the link's target nor the log.
func TestFirstTokenIsNotWrittenThroughALink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		exists bool
	}{{"a link to a file others can read", true}, {"a link to nothing", false}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			cfg.Tenants = []config.Tenant{{Name: "acme"}}
			target := filepath.Join(t.TempDir(), "readable-by-all")
			if tc.exists {
				if err := os.WriteFile(target, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, cfg.InitialTokenPath()); err != nil {
				t.Fatal(err)
			}
			logs := &eventstest.Log{}
			srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.NewTextHandler(logs, nil)), nil)
			if err == nil {
				_ = srv.close()
				t.Fatal("the relay started with a link in place of its first token's file")
			}
			if !strings.Contains(err.Error(), cfg.InitialTokenPath()) || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("the refusal does not name the file and why: %v", err)
			}
			if !tc.exists {
				if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("the link's target was created: %v", err)
				}
			} else {
				if text, err := os.ReadFile(target); err != nil || len(text) > 0 {
					t.Errorf("the link's target holds %q (%v), want nothing", text, err)
				}
				if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o644 {
					t.Errorf("the link's target changed: %v, %v", fi, err)
				}
			}
			if tokenPattern.MatchString(logs.String()) {
				t.Errorf("the log holds a secret:\n%s", logs.String())
			}
		})
	}
}

// TestClientCreateSaysWhenItsHostIsUnreachable: client create prints the
// token endpoint under listen when public_url is empty; listening on
// every address, it says on stderr that the host must be replaced, and
// says nothing of it with public_url set. stdout keeps its three lines.
func TestClientCreateSaysWhenItsHostIsUnreachable(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	for _, public := range []string{"", "https://relay.example.com"} {
		path := filepath.Join(t.TempDir(), "relay.yaml")
		text := fmt.Sprintf("listen: 0.0.0.0:8080\npublic_url: %q\nadmin_listen: %s\nadmin:\n  token: %q\ntenants:\n  - name: acme\n",
			public, strings.TrimPrefix(p.adminURL, "http://"), adminSecret)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := cli(t, "client", "create", "--tenant", "acme", "--config", path)
		if code != exitOK {
			t.Fatalf("client create: %d %s", code, stderr)
		}
		hinted := strings.Contains(stderr, "in place of 0.0.0.0, or set public_url")
		switch {
		case public == "" && (!hinted || !strings.Contains(out, "token_endpoint: http://0.0.0.0:8080/oauth2/acme/token\n")):
			t.Errorf("listening on 0.0.0.0 without public_url, client create printed %q and said %q", out, stderr)
		case public != "" && hinted:
			t.Errorf("with public_url, client create said %q", stderr)
		}
		if lines := strings.Count(out, "\n"); lines != 3 {
			t.Errorf("client create printed %d lines on stdout, want 3: %q", lines, out)
		}
	}
}
