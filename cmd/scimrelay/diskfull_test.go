// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

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
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "writing the provisioning log failed") {
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
