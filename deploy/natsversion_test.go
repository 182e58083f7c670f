// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The relay refuses a NATS server below JetStream API level 4
// (nats-server 2.14; sinks/manager.go, minAPILevel). Every NATS server the
// deployment files run, or tell a user to install, is the version the tests
// run, go.mod's, so that a bump of one without the others fails here.

// testedNATSVersion returns go.mod's nats-server version without its "v",
// e.g. 2.15.2.
func testedNATSVersion(t *testing.T) string {
	t.Helper()
	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	v := regexp.MustCompile(`(?m)^\s*github.com/nats-io/nats-server/v2 v(\d+\.\d+\.\d+)\s*$`).FindSubmatch(mod)
	if v == nil {
		t.Fatal("go.mod requires no release of github.com/nats-io/nats-server/v2")
	}
	return string(v[1])
}

// TestComposeRunsTheTestedNATS holds compose.yaml's NATS image to go.mod's
// nats-server: an older one (it ran nats:2.11-alpine) makes every relay
// refuse to start, and the stack never becomes healthy.
func TestComposeRunsTheTestedNATS(t *testing.T) {
	want := "nats:" + testedNATSVersion(t) + "-alpine"
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, s := range p.Services {
		if strings.HasPrefix(s.Image, "nats:") || strings.Contains(s.Image, "/nats:") {
			n++
			if s.Image != want {
				t.Errorf("%s runs %s; the tests run %s (go.mod), and the relay refuses a server below 2.14", name, s.Image, want)
			}
		}
	}
	if n == 0 {
		t.Error("compose.yaml runs no NATS image")
	}
}

// TestREADMEInstallsTheTestedNATS holds the README's `helm install nats`
// to go.mod's nats-server: the NATS chart pinned with --version (its
// chart versions follow the server's) and its server image pinned with
// container.image.tag, so that neither a newer chart's default nor an
// older cluster's decides which server runs.
func TestREADMEInstallsTheTestedNATS(t *testing.T) {
	v := testedNATSVersion(t)
	section := readmeSection(t, "### Kubernetes (Helm)", "### systemd")
	cmd := regexp.MustCompile("(?s)helm install nats nats/nats(.*?)\n```").FindStringSubmatch(section)
	if cmd == nil {
		t.Fatal("the README's Helm section does not install NATS with helm install nats nats/nats")
	}
	args := strings.Fields(strings.ReplaceAll(cmd[1], "\\\n", " "))
	if got := flagValue(args, "--version"); got != v {
		t.Errorf("the README installs NATS chart version %q; want %s, go.mod's nats-server", got, v)
	}
	tag := ""
	for i, a := range args {
		if a == "--set" && i+1 < len(args) && strings.HasPrefix(args[i+1], "container.image.tag=") {
			tag = strings.TrimPrefix(args[i+1], "container.image.tag=")
		}
	}
	if tag != v+"-alpine" {
		t.Errorf("the README runs NATS image tag %q; want %s-alpine, go.mod's nats-server", tag, v)
	}
}
