// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/scimrelay/scimrelay/config"
)

// composeEnv is what compose.yaml's header tells a user to export.
var composeEnv = map[string]string{
	"SCIMRELAY_ADMIN_TOKEN": "admin-token-0123456789abcdef",
	"DEFAULT_SCIM_TOKEN":    "scim-token-0123456789abcdef",
	"DEMO_WEBHOOK_SECRET":   "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	"NATS_SCIM_PASSWORD":    "nats-scim-0123456789abcdef",
	"NATS_SINKS_PASSWORD":   "nats-sinks-0123456789abcdef",
	"NATS_ROUTE_PASSWORD":   "natsroute0123456789abcdef",
}

// loadCompose loads compose.yaml with the loader of the Compose v2 CLI,
// with env as the only environment.
func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{"compose.yaml"}, cli.WithWorkingDirectory("."), cli.WithEnv(list))
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

// TestComposeFile loads deploy/compose.yaml as `docker compose` does and
// checks the deployment it describes: a 3-node JetStream cluster, one relay
// in role scim and two in role sinks, each relay with a health check the
// distroless image can run, and a start order that waits for health.
func TestComposeFile(t *testing.T) {
	// The secrets are required: without them compose refuses to start.
	if _, err := loadCompose(t, nil); err == nil || !strings.Contains(err.Error(), "set SCIMRELAY_ADMIN_TOKEN") {
		t.Fatalf("compose.yaml loads without SCIMRELAY_ADMIN_TOKEN: %v", err)
	}
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}

	var nats, relays []string
	roles := map[string]int{}
	for name, s := range p.Services {
		switch {
		case strings.HasPrefix(s.Image, "nats:"):
			nats = append(nats, name)
			cmd := strings.Join(s.Command, " ")
			if o := composeNodeConfig(t, p, name); !strings.Contains(cmd, "--jetstream") || len(o.Routes) == 0 || !strings.Contains(cmd, "--http_port 8222") {
				t.Errorf("%s is not a clustered JetStream node with its monitoring port: %s, %d routes", name, cmd, len(o.Routes))
			}
			if hc := s.HealthCheck; hc == nil || hc.Disable || !slices.Contains(hc.Test, "http://127.0.0.1:8222/healthz") {
				t.Errorf("%s: health check %+v; want NATS's /healthz", name, hc)
			}
		case s.Image == "scimrelay:local" && len(s.Command) > 0 && s.Command[0] == "serve":
			relays = append(relays, name)
			roles[flagValue(s.Command, "--role")]++
			// A graceful stop (HTTP requests 30 s, a worker's hand-over)
			// must not be cut short by Docker's 10 s default.
			if g := s.StopGracePeriod; g == nil || time.Duration(*g) < 60*time.Second {
				t.Errorf("%s: stop_grace_period %v, want at least 60s, as the chart gives (one role: SCIM requests 30 s and their events 15 s, or a hand-over up to about 25 s)", name, g)
			}
		}
	}
	slices.Sort(nats)
	if !slices.Equal(nats, []string{"nats-1", "nats-2", "nats-3"}) || roles["scim"] != 1 || roles["sinks"] != 2 || len(relays) != 3 {
		t.Fatalf("compose runs NATS %v and relays %v with roles %v; want 3 nodes, one scim, two sinks", nats, relays, roles)
	}

	for _, name := range relays {
		s := p.Services[name]
		checkCommandLine(t, name, s.Command)
		conf := flagValue(s.Command, "--config")

		// The health check is the binary itself, reading the same relay.yaml.
		hc := s.HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/usr/local/bin/scimrelay" || hc.Test[2] != "healthcheck" {
			t.Errorf("%s: health check %+v; want [CMD /usr/local/bin/scimrelay healthcheck ...] (no shell in the image)", name, hc)
		} else {
			checkCommandLine(t, name+" healthcheck", hc.Test[2:])
			if got := flagValue(hc.Test, "--config"); got != conf {
				t.Errorf("%s: the health check reads %s, serve reads %s", name, got, conf)
			}
			if hc.StartPeriod == nil || hc.Interval == nil || hc.Timeout == nil {
				t.Errorf("%s: health check without start_period, interval or timeout", name)
			}
		}

		// Start only when every NATS node (and, for workers, the scim
		// relay) is healthy.
		for _, n := range nats {
			if d, ok := s.DependsOn[n]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s does not wait for %s to be healthy: %+v", name, n, s.DependsOn)
			}
		}
		if flagValue(s.Command, "--role") == "sinks" {
			if d := s.DependsOn["relay-scim"]; d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s does not wait for relay-scim to be healthy: %+v", name, s.DependsOn)
			}
		}

		// The relay.yaml it mounts validates with the environment compose
		// gives the container.
		var source string
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind && v.Target == conf {
				source = v.Source
				if !v.ReadOnly {
					t.Errorf("%s mounts %s writable", name, conf)
				}
			}
		}
		if source == "" {
			t.Fatalf("%s reads %s, which it does not mount", name, conf)
		}
		text, err := os.ReadFile(source)
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		checkRoleYAML(t, name, flagValue(s.Command, "--role"), string(text), env)
		// The workers are given no tenant's token, which their role does
		// not read (checked above); the rest is read alike.
		cfg, err := config.Parse(text, func(k string) (string, bool) { v, ok := env[k]; return v, ok || k == "DEFAULT_SCIM_TOKEN" })
		if err != nil {
			t.Fatal(err)
		}
		// Replicas 0 is automatic: 3 on a cluster.
		if r := cfg.NATS.Stream.Replicas; cfg.Embedded() || (r != 0 && r != len(nats)) || len(cfg.Sinks) == 0 {
			t.Errorf("%s: relay.yaml uses NATS %q with %d stream replicas and %d sinks; want the %d-node cluster, R%d, the demo sink",
				name, cfg.NATS.URL, r, len(cfg.Sinks), len(nats), len(nats))
		}
		for _, n := range nats {
			if !strings.Contains(cfg.NATS.URL, "nats://"+n+":4222") {
				t.Errorf("%s: nats.url %s does not name %s", name, cfg.NATS.URL, n)
			}
		}

		// Built from this repository's Dockerfile, with its build arguments.
		if b := s.Build; b == nil || filepath.Clean(b.Context) != filepath.Clean(mustAbs(t, repoRoot)) || b.Dockerfile != "deploy/Dockerfile" {
			t.Errorf("%s: build %+v; want the repository root with deploy/Dockerfile", name, s.Build)
		} else {
			for arg := range b.Args {
				if !dockerfileArgs(t)[arg] {
					t.Errorf("%s passes build argument %s, which the Dockerfile does not declare", name, arg)
				}
			}
		}
		// The admin API is published on loopback at most.
		for _, port := range s.Ports {
			if port.Target == 8081 && port.Published != "" && port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes the admin port on %q", name, port.HostIP)
			}
		}
	}

	// Every service waited on for health has a health check, and a
	// service running the image for something else than serve switches off
	// the image's own check (it would probe an admin listener that is not
	// there and report the service unhealthy).
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			if hc := p.Services[dep].HealthCheck; d.Condition == types.ServiceConditionHealthy && (hc == nil || hc.Disable) {
				t.Errorf("%s waits for %s to be healthy, which has no health check", name, dep)
			}
		}
		if s.Image == "scimrelay:local" && !slices.Contains(relays, name) {
			if s.HealthCheck == nil || !s.HealthCheck.Disable {
				t.Errorf("%s runs %v in the scimrelay image without disabling its HEALTHCHECK", name, s.Command)
			}
			checkCommandLine(t, name, s.Command)
		}
	}
}

// TestComposeKeepsTheRoutePasswordOffCommandLines: a container's processes
// are the host's, and every user of the host reads their command lines (ps,
// /proc/<pid>/cmdline; docker inspect shows them, with the environment and
// labels) and reaches the Compose network, where the route password would
// let a process join the NATS cluster as a route, which the nodes trust
// with every message. So no service has it on its command line, in its
// health check, environment, labels or build arguments: it is in the NATS
// nodes' config file alone, which Compose copies into each node's
// container, readable by its owner (root there) and group alone. The
// environment keeps the users' passwords, which nats.conf reads from it:
// /proc/<pid>/environ is for the process's owner only.
func TestComposeKeepsTheRoutePasswordOffCommandLines(t *testing.T) {
	// Required still: without it compose refuses to start.
	without := maps.Clone(composeEnv)
	delete(without, "NATS_ROUTE_PASSWORD")
	if _, err := loadCompose(t, without); err == nil || !strings.Contains(err.Error(), "set NATS_ROUTE_PASSWORD") {
		t.Errorf("compose.yaml loads without NATS_ROUTE_PASSWORD: %v", err)
	}
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	pass := composeEnv["NATS_ROUTE_PASSWORD"]
	var holders []string
	for name, s := range p.Services {
		seen := map[string][]string{"command": s.Command, "entrypoint": s.Entrypoint}
		if s.HealthCheck != nil {
			seen["health check"] = s.HealthCheck.Test
		}
		for k, v := range serviceEnv(t, s.Environment) {
			seen["environment "+k] = []string{v}
		}
		for k, v := range s.Labels {
			seen["label "+k] = []string{v}
		}
		if s.Build != nil {
			for k, v := range s.Build.Args {
				if v != nil {
					seen["build argument "+k] = []string{*v}
				}
			}
		}
		for what, values := range seen {
			if slices.ContainsFunc(values, func(v string) bool { return strings.Contains(v, pass) }) {
				t.Errorf("%s has the route password in its %s", name, what)
			}
		}
		for _, ref := range s.Configs {
			if !strings.Contains(p.Configs[ref.Source].Content, pass) {
				continue
			}
			holders = append(holders, name)
			if ref.Mode == nil || *ref.Mode != 0o400 {
				t.Errorf("%s gets the route password in %s with mode %v; want 0400 (README)", name, ref.Target, ref.Mode)
			}
		}
	}
	if slices.Sort(holders); !slices.Equal(holders, []string{"nats-1", "nats-2", "nats-3"}) {
		t.Errorf("the route password is in the config files of %v; want the three NATS nodes'", holders)
	}
}

// dockerfileArgs lists the build arguments deploy/Dockerfile declares.
func dockerfileArgs(t *testing.T) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	for _, in := range readDockerfile(t) {
		if in.keyword == "ARG" {
			name, _, _ := strings.Cut(in.args, "=")
			m[name] = true
		}
	}
	return m
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestCIGivesComposeItsVariables: .ci/run checks compose.yaml with
// `docker compose config` where the plugin exists, with the variables it
// sets on that command; compose refuses to load without every one it
// requires, so a variable compose.yaml comes to require must be added
// there too.
func TestCIGivesComposeItsVariables(t *testing.T) {
	script, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(script), `echo "== docker compose config"`)
	if !ok {
		t.Fatal(`.ci/run no longer has the step that says echo "== docker compose config"; this test reads the variables that step sets`)
	}
	if block, _, ok = strings.Cut(block, "docker compose -f deploy/compose.yaml config"); !ok {
		t.Fatal(".ci/run no longer runs docker compose config on deploy/compose.yaml")
	}
	env := map[string]string{}
	for _, f := range strings.Fields(block) {
		if k, v, ok := strings.Cut(f, "="); ok && k == strings.ToUpper(k) {
			env[k] = v
		}
	}
	if _, err := loadCompose(t, env); err != nil {
		t.Errorf("compose.yaml does not load with the variables .ci/run gives it (%v): %v", slices.Sorted(maps.Keys(env)), err)
	}
}

// TestComposeRoutePasswordIsURLSafe: the route password is in the route
// URLs (nats://route:PASSWORD@nats-2:6222), so the command compose.yaml's
// header gives for it strips what base64 writes that a URL's user info
// cannot hold as is (/ + =). The command is run as a user would run it.
func TestComposeRoutePasswordIsURLSafe(t *testing.T) {
	raw, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cmd string
	for _, line := range strings.Split(string(raw), "\n") {
		if _, c, ok := strings.Cut(line, "export NATS_ROUTE_PASSWORD="); ok {
			cmd = c
		}
	}
	if cmd == "" {
		t.Fatal("compose.yaml's header gives no command for NATS_ROUTE_PASSWORD")
	}
	for range 5 { // base64 of 32 bytes always ends in =, and mostly holds / or +
		out, err := exec.Command("bash", "-c", "printf %s "+cmd).Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		if pass := string(out); len(pass) < 32 || strings.ContainsAny(pass, "/+=") {
			t.Fatalf("%s gave %q: want 32 or more characters a URL's user info holds as they are", cmd, pass)
		}
	}
}

// TestREADMEComposeCommandsNameTheFile: compose.yaml's header runs every
// command from the repository root with -f deploy/compose.yaml; the
// README's backup, restore, compaction and health commands left it out,
// and run from there Compose finds no compose.yaml ("no configuration
// file provided").
func TestREADMEComposeCommandsNameTheFile(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	uses := regexp.MustCompile(`docker compose [^\n`+"`"+`]*`).FindAllString(string(readme), -1)
	if len(uses) < 5 {
		t.Fatalf("the README has %d docker compose commands; the test reads it wrongly", len(uses))
	}
	for _, use := range uses {
		if !strings.HasPrefix(use, "docker compose -f deploy/compose.yaml ") {
			t.Errorf("the README's %q does not name deploy/compose.yaml", use)
		}
	}
}
