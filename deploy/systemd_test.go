// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnit checks that the unit runs a command the binary accepts,
// reloads it with SIGHUP and may write where the relay keeps its data.
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
	// systemctl reload: SIGHUP, which serve answers by re-reading relay.yaml.
	if r := keys["ExecReload"]; len(r) != 1 || r[0] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload %q; want /bin/kill -HUP $MAINPID", r)
	}
	state := "/var/lib/" + strings.Join(keys["StateDirectory"], "")
	if !strings.Contains(strings.Join(keys["ReadWritePaths"], " "), state) || keys["ProtectSystem"][0] != "strict" {
		t.Errorf("ProtectSystem=%v with ReadWritePaths %v: the relay cannot write its StateDirectory %s", keys["ProtectSystem"], keys["ReadWritePaths"], state)
	}
	// A graceful stop: in-flight SCIM requests 30 s, a sink worker's
	// hand-over up to about 25 s.
	stop := keys["TimeoutStopSec"]
	if n, err := strconv.Atoi(strings.Join(stop, "")); len(stop) != 1 || err != nil || n < 45 {
		t.Errorf("TimeoutStopSec %q; want 45 (seconds) or more", stop)
	}
	if keys["User"] == nil || keys["User"][0] == "root" || keys["NoNewPrivileges"][0] != "yes" {
		t.Errorf("the unit runs as %v with NoNewPrivileges=%v", keys["User"], keys["NoNewPrivileges"])
	}
}
