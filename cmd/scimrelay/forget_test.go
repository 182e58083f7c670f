// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// TestCLISinksForget: sinks forget refuses without --yes, refuses a sink
// still configured and a name under which nothing is stored, deleting
// nothing; once the sink is removed by a reload it deletes what it left,
// says so, and the admin action is audited; the other sink delivers on.
func TestCLISinksForget(t *testing.T) {
	crm, _ := goneHook(t)
	erp := newHook(t)
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	tenant := "log:\n  level: info\ntenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n"
	f.write(tenant + "sinks:\n" + sinkYAML("crm", crm.URL) + sinkYAML("erp", erp.URL))
	var logs eventstest.Log
	p := startReloadable(t, f.path, &logs)
	cfg := cliConfig(t, p, adminSecret)
	p.createUser(t, "ann")
	waitDelivered(t, erp, 1)
	crmHolds1 := regexp.MustCompile(`(?m)^crm\s+1\s+yes$`)
	deadLetters := func() string {
		t.Helper()
		code, out, stderr := cli(t, "dlq", "queues", "--config", cfg)
		if code != exitOK {
			t.Fatalf("dlq queues: %d %s", code, stderr)
		}
		return out
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if out := deadLetters(); !crmHolds1.MatchString(out) {
			return fmt.Errorf("crm has not dead-lettered ann's event:\n%s", out)
		}
		// Its attempt is written after the dead letter, without waiting
		// for NATS: forget counts it once it is stored.
		if code, out, stderr := cli(t, "log", "--deliveries", "--sink", "crm", "--since", "1h", "--config", cfg); code != exitOK || !strings.Contains(out, "dead_lettered") {
			return fmt.Errorf("crm's attempt is not in the delivery log yet: %d %s %s", code, out, stderr)
		}
		return nil
	})

	for _, c := range []struct {
		args []string
		code int
		say  string
	}{
		{[]string{"crm"}, exitUsage, "add --yes to do it"},
		{[]string{"crm", "--yes"}, exitError, "the sink is configured: remove it from relay.yaml and reload every process first"},
		{[]string{"nope", "--yes"}, exitUsage, `no such sink "nope", nor anything stored under that name`},
		{nil, exitUsage, "accepts 1 arg"},
	} {
		code, out, stderr := cli(t, append([]string{"sinks", "forget", "--config", cfg}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.say) || out != "" {
			t.Errorf("sinks forget %v: exit %d, %q %q; want %d saying %q", c.args, code, out, stderr, c.code, c.say)
		}
	}
	if out := deadLetters(); !crmHolds1.MatchString(out) {
		t.Fatalf("a refused forget deleted crm's dead letter:\n%s", out)
	}

	f.write(tenant + "sinks:\n" + sinkYAML("erp", erp.URL))
	if code, out, stderr := cli(t, "reload", "--config", cfg); code != exitOK {
		t.Fatalf("reload: %d %s %s", code, out, stderr)
	}
	code, out, stderr := cli(t, "sinks", "forget", "crm", "--yes", "--json", "--config", cfg)
	var got sinks.Forgotten
	if code != exitOK || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("sinks forget crm: %d %q %s", code, out, stderr)
	}
	if want := (sinks.Forgotten{Sink: "crm", Consumers: 16, Buckets: 1, DeadLetters: 1, Attempts: 1}); got != want {
		t.Errorf("sinks forget crm deleted %+v, want %+v", got, want)
	}
	if want := `action=sink.forget sink=crm consumers=16 undelivered=0 buckets=1 parked=0 dead_letters=1 attempts=1 via=api`; !strings.Contains(logs.String(), want) {
		t.Errorf("the relay's log has no line %s:\n%s", want, logs.String())
	}
	if out := deadLetters(); strings.Contains(out, "crm") {
		t.Errorf("dlq queues lists crm after it was forgotten:\n%s", out)
	}
	if code, _, stderr := cli(t, "sinks", "forget", "crm", "--yes", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "nor anything stored under that name") {
		t.Errorf("sinks forget crm again: %d %s", code, stderr)
	}
	p.createUser(t, "bob")
	waitDelivered(t, erp, 2)
}
