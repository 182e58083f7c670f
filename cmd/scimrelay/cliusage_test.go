// SPDX-License-Identifier: Apache-2.0

package main

import (
	"strings"
	"testing"
)

// TestCLIBadUsage: a bad flag value is bad usage (exit 2) and the hint names
// the subcommand's own help; a filter naming no tenant or sink of the
// relay is bad usage too, instead of an empty answer; token list says
// hours when less than a day is left.
func TestCLIBadUsage(t *testing.T) {
	c := testConfig(t, t.TempDir())
	withSink(c, "crm", newHook(t).URL, nil)
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"dlq", "list", "--sink", "crm", "--limit", "many"}, "invalid argument \"many\" for \"--limit\""},  // cobra refuses the value
		{[]string{"log", "--since", "yesterday-ish"}, "since"},                                                      // the admin API refuses it (400)
		{[]string{"token", "create", "--tenant", "acme", "--expires", "soon"}, "expires: want a duration"},          // same
		{[]string{"log", "--tenant", "initech"}, "--tenant initech: no such tenant (tenants: acme, globex)"},        // a filter naming nothing
		{[]string{"log", "--deliveries", "--sink", "erp"}, "--sink erp: no such sink"},                              //
		{[]string{"events", "tail", "--tenant", "initech", "--no-follow"}, "--tenant initech: no such tenant"},      //
		{[]string{"token", "list", "--tenant", "initech"}, "--tenant initech: no such tenant"},                      //
		{[]string{"client", "list", "--tenant", "initech"}, "--tenant initech: no such tenant"},                     //
		{[]string{"dlq", "list", "--sink", "erp"}, "--sink erp: no such sink"},                                      //
		{[]string{"serve", "--role", "everything"}, "must be all, scim or sinks"},                                   // refused while parsing
		{[]string{"healthcheck", "--timeout", "-1s"}, "--timeout must be positive"},                                 //
		{[]string{"events", "tail", "--since", "10m", "--from-seq", "3", "--tenant", "acme"}, "exclude each other"}, //
	} {
		code, stdout, stderr := cli(t, append(tc.args, "--config", cfg)...)
		hint := "Run 'scimrelay " + strings.Join(subcommandOf(tc.args), " ") + " --help' for usage."
		if code != exitUsage || !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, hint) || stdout != "" {
			t.Errorf("%v: exit %d, want %d (bad usage); stdout %q; stderr %q, want it to say %q and %q", tc.args, code, exitUsage, stdout, stderr, tc.says, hint)
		}
	}

	// A token with hours to live says so, not "0d".
	if code, _, stderr := cli(t, "token", "create", "--tenant", "acme", "--name", "short", "--expires", "5h", "--config", cfg); code != exitOK {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	code, out, _ := cli(t, "token", "list", "--tenant", "acme", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "expires in 4h") {
		t.Errorf("token list of a token expiring in 5 h: %d\n%s", code, out)
	}
}

// subcommandOf returns the command words of args (up to the first flag).
func subcommandOf(args []string) []string {
	for i, a := range args {
		if strings.HasPrefix(a, "-") {
			return args[:i]
		}
	}
	return args
}

// TestCLIBench: without a terminal the bench draws no progress bar; with
// --fail-on-errors a run whose requests failed exits 1 after its report.
func TestCLIBench(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	run := func() (int, string, string) {
		return cli(t, "bench", "--url", p.scimURL+"/scim/v2/acme", "--token", acmeToken, "--users", "6", "--groups", "1",
			"--members-per-group", "2", "--concurrency", "2", "--prefix", "cli-bench", "--fail-on-errors")
	}
	code, out, stderr := run()
	if code != exitOK || !strings.Contains(out, "create-user") {
		t.Fatalf("a clean run with --fail-on-errors: exit %d\n%s\n%s", code, out, stderr)
	}
	if strings.ContainsAny(stderr, "█|") || strings.Contains(stderr, "%") {
		t.Errorf("a progress bar was drawn though stderr is not a terminal:\n%s", stderr)
	}
	// The same names again: every filter GET finds what the first run made.
	code, out, stderr = run()
	if code != exitError || !strings.Contains(stderr, "--fail-on-errors:") || !strings.Contains(stderr, "requests failed") || !strings.Contains(out, "create-user") {
		t.Errorf("a run with failures and --fail-on-errors: exit %d, want %d, with the report first\nstdout:\n%s\nstderr:\n%s", code, exitError, out, stderr)
	}
	// So does the ops mode's: with a token the relay refuses, every
	// request fails.
	code, out, stderr = cli(t, "bench", "--mode", "ops", "--url", p.scimURL+"/scim/v2/acme", "--token", "not-a-token",
		"--requests", "5", "--rounds", "1", "--concurrency", "2", "--prefix", "cli-bench-ops", "--fail-on-errors")
	if code != exitError || !strings.Contains(stderr, "--fail-on-errors:") || !strings.Contains(stderr, "requests failed (401") {
		t.Errorf("an ops run with failures and --fail-on-errors: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitError, out, stderr)
	}
}
