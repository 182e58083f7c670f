// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnit checks that the unit runs a command the binary accepts,
// reloads it through the admin API and may write where the relay keeps its data.
func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile("systemd/scimrelay.service")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	exec := strings.Fields(strings.Join(keys["ExecStart"], " "))
	if len(exec) < 2 || exec[0] != "/usr/local/bin/scimrelay" {
		t.Fatalf("ExecStart %q; the README installs the binary as /usr/local/bin/scimrelay", exec)
	}
	checkCommandLine(t, "ExecStart", exec[1:])
	// deploy/systemd/README.md: "The unit gives the relay no capabilities,
	// so it cannot bind a port below 1024": an empty bounding set and
	// ambient set (a unit's bounding set is otherwise every one).
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if !slices.Equal(keys[k], []string{""}) {
			t.Errorf("%s=%q; the systemd README says the unit gives the relay no capabilities (%s= empty)", k, keys[k], k)
		}
	}
	// systemctl reload: scimrelay reload, with the relay.yaml serve reads,
	// so that it fails when the relay refuses the file or is not up yet
	// (TestReloadWhileStarting), where a SIGHUP could end it.
	reload := strings.Fields(strings.Join(keys["ExecReload"], " "))
	if len(keys["ExecReload"]) != 1 || len(reload) < 2 || reload[0] != exec[0] || reload[1] != "reload" || !slices.Equal(reload[2:], exec[len(exec)-2:]) {
		t.Errorf("ExecReload %q; want %s reload with ExecStart's --config", keys["ExecReload"], exec[0])
	}
	checkCommandLine(t, "ExecReload", reload[1:])
	state := "/var/lib/" + strings.Join(keys["StateDirectory"], "")
	if !strings.Contains(strings.Join(keys["ReadWritePaths"], " "), state) || keys["ProtectSystem"][0] != "strict" {
		t.Errorf("ProtectSystem=%v with ReadWritePaths %v: the relay cannot write its StateDirectory %s", keys["ProtectSystem"], keys["ReadWritePaths"], state)
	}
	// relay.yaml's default data_dir, ./data, is relative to the working
	// directory: the state directory, or ProtectSystem=strict makes it
	// read-only.
	if wd := keys["WorkingDirectory"]; len(wd) != 1 || wd[0] != state {
		t.Errorf("WorkingDirectory %q; want %s, where the default data_dir ./data is writable", wd, state)
	}
	// A graceful stop in role all (the unit runs no --role) is serial:
	// limits.shutdown_delay up to 10 s, in-flight SCIM requests up to 30 s,
	// then the sink workers' hand-over up to about 25 s
	// (cmd/scimrelay/server.go).
	if r := flagValue(exec, "--role"); r != "" && r != "all" {
		t.Errorf("the unit runs role %s; this test's stop budget is role all's", r)
	}
	stop := keys["TimeoutStopSec"]
	if n, err := strconv.Atoi(strings.Join(stop, "")); len(stop) != 1 || err != nil || n < 75 {
		t.Errorf("TimeoutStopSec %q; want 75 (seconds) or more: up to 10 s of shutdown_delay, 30 s of SCIM requests, then up to about 25 s of hand-over", stop)
	}
	// The README says what the unit gives, and why it differs from compose.
	if m := regexp.MustCompile("`TimeoutStopSec` is (\\d+)").FindStringSubmatch(readmeSection(t, "### Docker Compose", "### ")); m == nil || m[1] != strings.Join(stop, "") {
		t.Errorf("the README's Docker Compose section says TimeoutStopSec is %v; the unit has %q", m, stop)
	}
	if keys["User"] == nil || keys["User"][0] == "root" || keys["NoNewPrivileges"][0] != "yes" {
		t.Errorf("the unit runs as %v with NoNewPrivileges=%v", keys["User"], keys["NoNewPrivileges"])
	}
}

// TestSystemdREADMEInstall holds deploy/systemd/README.md's install lines
// against the unit's user: /etc/scimrelay and relay.yaml get its group (by
// default install leaves root:root, which the service's user cannot read
// with modes 0750 and 0640), the environment file stays root's alone
// (systemd reads it before dropping privileges), and every CLI example reads
// that file as root rather than as a user who cannot.
func TestSystemdREADMEInstall(t *testing.T) {
	readme, key := systemdFiles(t)
	group, envFile := key("Group"), strings.TrimPrefix(key("EnvironmentFile"), "-")
	conf := flagValue(strings.Fields(key("ExecStart")), "--config")

	// install [-d] [-m MODE] [-o OWNER] [-g GROUP] ... TARGET, by target.
	type install struct{ mode, owner, group string }
	installs := map[string]install{}
	for _, line := range strings.Split(string(readme), "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "sudo" || f[1] != "install" {
			continue
		}
		args := f[2:]
		installs[args[len(args)-1]] = install{flagValue(args, "-m"), flagValue(args, "-o"), flagValue(args, "-g")}
	}
	for _, c := range []struct {
		target    string
		groupRead bool // 0750, 0640: the group's read bit
	}{{path.Dir(conf), true}, {conf, true}, {envFile, false}, {path.Dir(conf) + "/tls", true}} {
		in, ok := installs[c.target]
		if !ok {
			t.Errorf("the README does not install %s", c.target)
			continue
		}
		mode, err := strconv.ParseUint(in.mode, 8, 32)
		if err != nil {
			t.Errorf("install %s: mode %q", c.target, in.mode)
			continue
		}
		if in.owner != "" && in.owner != "root" {
			t.Errorf("install %s -o %s; the service must not own (and so be able to change) its configuration", c.target, in.owner)
		}
		switch {
		case c.groupRead && (in.group != group || mode&0o040 == 0):
			t.Errorf("install %s: -m %s -g %q; the unit's Group=%s cannot read it", c.target, in.mode, in.group, group)
		case !c.groupRead && (in.group != "" || mode&0o077 != 0):
			t.Errorf("install %s: -m %s -g %q; the secrets are for root (systemd) alone", c.target, in.mode, in.group)
		}
	}

	// The certificate hook leaves the key readable by the service's group
	// and no one else.
	hooked := 0
	for _, line := range strings.Split(string(readme), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "install" || !strings.HasPrefix(f[len(f)-1], path.Dir(conf)+"/tls/") {
			continue
		}
		hooked++
		mode, err := strconv.ParseUint(flagValue(f[1:], "-m"), 8, 32)
		if err != nil || flagValue(f[1:], "-g") != group || mode&0o040 == 0 || mode&0o007 != 0 {
			t.Errorf("the certificate hook's %q: the unit's Group=%s must read it, and no other user", line, group)
		}
	}
	if hooked != 2 {
		t.Errorf("the certificate hook installs %d files, want the certificate and its key", hooked)
	}

	// Each CLI line runs as root with the environment file's variables.
	cli := regexp.MustCompile(`\bscimrelay (token|subscriber|check|backup)\b`)
	n := 0
	for _, line := range strings.Split(string(readme), "\n") {
		if !cli.MatchString(line) {
			continue
		}
		n++
		if !strings.Contains(line, "sudo sh -c 'set -a; . "+envFile+"; exec ") {
			t.Errorf("the README runs the CLI without reading %s as root: %s", envFile, line)
		}
	}
	if n == 0 {
		t.Error("the README gives no CLI command")
	}
}

// systemdFiles reads deploy/systemd's README and returns it with a lookup
// of the unit's keys (the first value of each).
func systemdFiles(t *testing.T) (readme []byte, key func(string) string) {
	t.Helper()
	readme, err := os.ReadFile("systemd/README.md")
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("systemd/scimrelay.service")
	if err != nil {
		t.Fatal(err)
	}
	return readme, func(k string) string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + k + `=(.*)$`).FindStringSubmatch(string(unit))
		if m == nil {
			t.Fatalf("the unit has no %s", k)
		}
		return m[1]
	}
}
