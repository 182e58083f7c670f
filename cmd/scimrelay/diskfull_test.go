// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/disk/disktest"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestDiskFullIsSaidOnce: a full data disk is said once when it fills and
// once when it has room again (README), however many requests are refused
// meanwhile and whatever writes still fit. An on-call review counted, in
// 45 s of a full tmpfs, 86 "scim request answered 5xx" lines for 507s the
// store had said already, 69 "writing the provisioning log" warnings, and
// "full" and "room again" alternating 5 and 4 times, since any write that
// fitted into pages bbolt had freed said "room again". Room again takes
// the 4 MiB /readyz asks for, and is said at Info; the provisioning log's
// failures are a line a minute, its lost entries counted in
// scimrelay_provisioning_log_dropped_total.
func TestDiskFullIsSaidOnce(t *testing.T) {
	p, dataDir, logs := startOnSmallDisk(t)
	n := 0
	post := func() int {
		n++
		return p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d"}`, n)).status
	}
	// until wants status within tries (bbolt reuses pages it freed, so
	// a few writes still fit a full disk).
	until := func(status, tries int, when string) {
		t.Helper()
		for range tries {
			if post() == status {
				return
			}
		}
		t.Fatalf("%s: no %d in %d writes", when, status, tries)
	}

	filler := disktest.Fill(t, dataDir)
	until(507, 500, "the disk full")
	for range 10 {
		post()
	}
	// 2 MiB free: writes fit, but it is not room (4 MiB): still full.
	fi, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, fi.Size()-2<<20); err != nil {
		t.Fatal(err)
	}
	until(201, 20, "2 MiB free")
	disktest.Fill(t, dataDir)
	until(507, 500, "the disk full again")
	// Each refused request is an entry to write; a flush that fits into
	// pages bbolt freed succeeds, so keep sending until one fails.
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "writing the provisioning log failed") {
			post()
			return fmt.Errorf("the provisioning log has not failed to write yet")
		}
		return nil
	})
	// More entries it cannot write: flushes that fail (some fit in pages
	// bbolt freed, and succeed), each one a request refused.
	failed, last := 0, metric(t, p, "scimrelay_provisioning_log_dropped_total")
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if d := metric(t, p, "scimrelay_provisioning_log_dropped_total"); d > last {
			failed, last = failed+1, d
		}
		if failed < 3 {
			post()
			return fmt.Errorf("%d more flushes of the provisioning log failed, want 3", failed)
		}
		return nil
	})
	p.wantStatus("/readyz", 503, 5*time.Second)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p.wantStatus("/readyz", 200, 10*time.Second)
	p.createUser(t, "after")
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "the provisioning log is written again") {
			return fmt.Errorf("the provisioning log does not say it is written again")
		}
		return nil
	})
	out := logs.String()
	count := func(s string) int { return strings.Count(out, s) }
	if c := count("the data disk is full;"); c != 1 {
		t.Errorf(`"the data disk is full" said %d times, want once`, c)
	}
	if c := count("the data disk has room again"); c != 1 || !strings.Contains(out, `level=INFO msg="the data disk has room again`) {
		t.Errorf(`"room again" said %d times, want once, at Info`, c)
	}
	if c := count("the provisioning log is written again"); c != 1 {
		t.Errorf(`"the provisioning log is written again" said %d times, want once`, c)
	}
	if c := count("scim request answered 5xx"); c != 0 {
		t.Errorf("%d lines for 507s the store had said", c)
	}
	if c := count("writing the provisioning log failed"); c != 1 {
		t.Errorf("the provisioning log's failures said %d times within a minute, want once", c)
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

// TestAdminWritesOnAFullDisk: an admin API write refused for a full data
// disk (a token issued) is 507 saying so, as a SCIM write is, and logs no
// Error for it; it was 500 "internal error".
func TestAdminWritesOnAFullDisk(t *testing.T) {
	p, dataDir, logs := startOnSmallDisk(t)
	disktest.Fill(t, dataDir)
	for i := 0; ; i++ {
		r := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"full%d"}`, i))
		if r.status == 507 {
			break
		}
		if r.status != 201 || i == 500 {
			t.Fatalf("write %d on a full disk: %d %s", i, r.status, r.raw)
		}
	}
	var r reply
	for i := range 500 {
		req, err := http.NewRequest("POST", p.adminURL+"/admin/v1/tokens", strings.NewReader(fmt.Sprintf(`{"tenant":"acme","name":"during-%d"}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+adminSecret)
		req.Header.Set("Content-Type", "application/json")
		r = do(t, req)
		if r.status == 201 || r.status == 200 {
			continue // it fitted into pages bbolt had freed
		}
		break
	}
	if r.status != 507 || !strings.Contains(string(r.raw), "disk is full") {
		t.Errorf("issuing a token on a full data disk: %d %s, want 507 saying the data disk is full", r.status, r.raw)
	}
	if n := strings.Count(logs.String(), "admin request failed"); n != 0 {
		t.Errorf("a token refused for a full disk logged %d Error lines:\n%s", n, logs)
	}
}

// TestFirstTokenOnAFullDisk: a start on a full disk that cannot write a
// new tenant's first token to data_dir/initial-token stores no token, so
// that the next start, with room, makes one and writes it; stored first,
// it was a token nobody had, and the tenant got none again.
func TestFirstTokenOnAFullDisk(t *testing.T) {
	cfg, dataDir := smallDiskConfig(t)
	log := slog.New(slog.DiscardHandler)
	p := startRelayWith(t, cfg, roleAll, log, nil)
	var ids []string
	for i := range 50 {
		ids = append(ids, p.createUser(t, fmt.Sprintf("u%d", i)))
	}
	for _, id := range ids { // pages bbolt frees and reuses
		p.scim("acme", acmeToken, "DELETE", "/Users/"+id, "").want(t, 204)
	}
	p.stop()

	filler := disktest.Fill(t, dataDir)
	cfg.Tenants = append(cfg.Tenants, config.Tenant{Name: "newco"})
	srv, err := newServer(context.Background(), cfg, roleAll, log, nil)
	if err == nil {
		runServer(t, srv).stop()
	} else {
		t.Logf("the start on a full disk: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p = startRelayWith(t, cfg, roleAll, log, nil)
	text, _ := os.ReadFile(cfg.InitialTokenPath())
	token := tokenPattern.FindString(string(text))
	if token == "" || !strings.Contains(string(text), "/scim/v2/newco") {
		r := adminRequest(t, p, "GET", "/admin/v1/tokens?tenant=newco", adminSecret, "")
		t.Fatalf("once the disk has room, %s holds %q; the tenant's tokens: %s", cfg.InitialTokenPath(), text, r.raw)
	}
	p.scim("newco", token, "GET", "/Users", "").want(t, 200)
}

// TestAdminTokenOnAFullDisk: a start on a full disk that cannot write the
// generated admin token leaves no empty admin.token behind, which every
// later start refused ("0 characters").
func TestAdminTokenOnAFullDisk(t *testing.T) {
	cfg, dataDir := smallDiskConfig(t)
	startRelayWith(t, cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard).stop()

	cfg.Admin.Token = "" // serve generates data_dir/admin.token
	filler := disktest.Fill(t, dataDir)
	if srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard); err == nil {
		srv.close()
		t.Skip("the start wrote its admin token on a full disk")
	} else {
		t.Logf("the start on a full disk: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatalf("once the disk has room, the start: %v", err)
	}
	runServer(t, srv)
}

// smallDiskConfig is a relay's configuration whose data_dir is a 24 MiB
// tmpfs of its own (the NATS server outside it, on another disk).
func smallDiskConfig(t *testing.T) (*config.Config, string) {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	disktest.MountTmpfs(t, dataDir, "24m")
	cfg := testConfig(t, dataDir)
	cfg.NATS.URL = eventstest.RunServer(t).ClientURL()
	return cfg, dataDir
}
