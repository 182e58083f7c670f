// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/scimrelay/scimrelay/config"
)

// No Docker engine runs here, so the image is checked as far as its files
// allow: the Dockerfile is parsed, its build command is run with the
// toolchain, and .dockerignore is evaluated with the matcher Docker uses.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	stage   int // 0 for the first FROM's stage
	keyword string
	args    string
}

func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	stage, pending := -1, ""
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			pending += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		keyword, args, _ := strings.Cut(pending+trimmed, " ")
		pending = ""
		keyword = strings.ToUpper(keyword)
		if keyword == "FROM" {
			stage++
		}
		out = append(out, instruction{stage: stage, keyword: keyword, args: strings.TrimSpace(args)})
	}
	return out
}

// execForm decodes a JSON-array (exec form) argument list.
func execForm(t *testing.T, where, s string) []string {
	t.Helper()
	var args []string
	if err := json.Unmarshal([]byte(s), &args); err != nil {
		t.Fatalf("%s is not in exec form (a JSON array): %s", where, s)
	}
	return args
}

func TestDockerfile(t *testing.T) {
	ins := readDockerfile(t)
	final := ins[len(ins)-1].stage
	find := func(stage int, keyword string) []instruction {
		var out []instruction
		for _, in := range ins {
			if in.stage == stage && in.keyword == keyword {
				out = append(out, in)
			}
		}
		return out
	}
	args := func(stage int) map[string]bool {
		m := map[string]bool{}
		for _, in := range find(stage, "ARG") {
			name, _, _ := strings.Cut(in.args, "=")
			m[name] = true
		}
		return m
	}

	// The runtime image: distroless, non-root, data on a volume.
	if from := find(final, "FROM"); !strings.HasPrefix(from[0].args, "gcr.io/distroless/static") {
		t.Errorf("the runtime image is %s; distroless/static has no shell to attack", from[0].args)
	}
	if u := find(final, "USER"); len(u) != 1 || u[0].args != "65532:65532" {
		t.Errorf("USER %v; want 65532:65532 (distroless nonroot)", u)
	}
	// The volume's directory is that user's: a named volume (Compose)
	// starts with its ownership, and the relay creates its data file and
	// admin.token in it.
	owned := false
	for _, in := range find(final, "COPY") {
		fields := strings.Fields(in.args)
		owned = owned || slices.Contains(fields, "--chown=65532:65532") && fields[len(fields)-1] == "/var/lib/scimrelay"
	}
	if v := find(final, "VOLUME"); len(v) != 1 || !strings.Contains(v[0].args, `"/var/lib/scimrelay"`) || !owned {
		t.Errorf("VOLUME %v, and /var/lib/scimrelay given to 65532:65532 by a COPY --chown: %t; want both", v, owned)
	}

	// OCI labels, with version, revision and created from build arguments
	// that the final stage declares (an ARG does not cross stages).
	labels := map[string]string{}
	for _, in := range find(final, "LABEL") {
		for _, m := range regexp.MustCompile(`(\S+?)="([^"]*)"`).FindAllStringSubmatch(in.args, -1) {
			labels[m[1]] = m[2]
		}
	}
	want := map[string]string{
		"org.opencontainers.image.title":    "scimrelay",
		"org.opencontainers.image.source":   "https://" + modulePath(t),
		"org.opencontainers.image.licenses": "Apache-2.0",
		"org.opencontainers.image.version":  "${VERSION}",
		"org.opencontainers.image.revision": "${REVISION}",
		"org.opencontainers.image.created":  "${CREATED}",
	}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}
	if labels["org.opencontainers.image.description"] == "" {
		t.Error("no org.opencontainers.image.description label")
	}
	for _, a := range []string{"VERSION", "REVISION", "CREATED"} {
		if !args(final)[a] {
			t.Errorf("the final stage does not declare ARG %s, so its label would be empty", a)
		}
	}
	license, err := os.ReadFile(filepath.Join(repoRoot, "LICENSE"))
	if err != nil || !strings.Contains(string(license), "Apache License\n                           Version 2.0, January 2004") {
		t.Errorf("the image says Apache-2.0; LICENSE: %v", err)
	}

	// The build: static, the version and revision from the build
	// arguments through -ldflags. Run it and ask the binary.
	var build string
	for _, in := range find(0, "RUN") {
		if strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	for _, w := range []string{"CGO_ENABLED=0", "-trimpath", "-buildvcs=false", "./cmd/scimrelay"} {
		if !strings.Contains(build, w) {
			t.Errorf("the go build command lacks %s: %s", w, build)
		}
	}
	for _, a := range []string{"VERSION", "REVISION"} {
		if !args(0)[a] {
			t.Errorf("the build stage does not declare ARG %s", a)
		}
	}
	m := regexp.MustCompile(`-ldflags "([^"]*)"`).FindStringSubmatch(build)
	if m == nil {
		t.Fatalf("no -ldflags in %s", build)
	}
	ldflags := strings.NewReplacer("${VERSION}", "v1.2.3-docker", "${REVISION}", "0123456789abcdef0123456789abcdef01234567").Replace(m[1])
	bin := filepath.Join(t.TempDir(), "scimrelay")
	// -trimpath only changes file names in the binary, and would rebuild every
	// package; the link step is what -ldflags changes.
	if err := goBuild(bin, []string{"-buildvcs=false", "-ldflags", ldflags}); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"version", "--version"} {
		out, err := exec.Command(bin, flag).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "scimrelay v1.2.3-docker\n") || !strings.Contains(string(out), "revision  0123456789abcdef0123456789abcdef01234567\n") {
			t.Errorf("built as the Dockerfile builds, scimrelay %s printed (%v):\n%s", flag, err, out)
		}
	}

	// ENTRYPOINT, CMD and HEALTHCHECK run commands the binary accepts, with
	// the relay.yaml the image carries; that file validates and keeps its
	// data on the volume.
	copies := map[string]string{} // destination -> source, from the context
	for _, in := range find(final, "COPY") {
		if f := strings.Fields(in.args); !strings.HasPrefix(f[0], "--") {
			copies[f[1]] = f[0]
		}
	}
	entry := execForm(t, "ENTRYPOINT", find(final, "ENTRYPOINT")[0].args)
	if len(entry) != 1 || entry[0] != "/usr/local/bin/scimrelay" {
		t.Errorf("ENTRYPOINT %q; want the binary alone", entry)
	}
	cmd := execForm(t, "CMD", find(final, "CMD")[0].args)
	checkCommandLine(t, "Dockerfile CMD", cmd)
	hc := find(final, "HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("%d HEALTHCHECK instructions, want 1", len(hc))
	}
	_, hcArgs, _ := strings.Cut(hc[0].args, "CMD ")
	probe := execForm(t, "HEALTHCHECK", hcArgs)
	if probe[0] != entry[0] || probe[1] != "healthcheck" {
		t.Errorf("HEALTHCHECK runs %q; want %s healthcheck (no shell in the image)", probe, entry[0])
	}
	checkCommandLine(t, "Dockerfile HEALTHCHECK", probe[1:])
	if flagValue(probe, "--config") != flagValue(cmd, "--config") {
		t.Errorf("HEALTHCHECK reads %s, serve reads %s", flagValue(probe, "--config"), flagValue(cmd, "--config"))
	}
	// An operator's `docker exec … scimrelay reload` reads the same file.
	if env := find(final, "ENV"); len(env) != 1 || env[0].args != "SCIMRELAY_CONFIG="+flagValue(cmd, "--config") {
		t.Errorf("ENV %v; want SCIMRELAY_CONFIG=%s, the file serve reads", env, flagValue(cmd, "--config"))
	}
	src, ok := copies[flagValue(cmd, "--config")]
	if !ok {
		t.Fatalf("CMD reads %s, which the image does not contain", flagValue(cmd, "--config"))
	}
	text, err := os.ReadFile(filepath.Join(repoRoot, src))
	if err != nil {
		t.Fatal(err)
	}
	checkRelayYAML(t, src, string(text), map[string]string{"SCIMRELAY_ADMIN_TOKEN": "admin-token-0123456789abcdef"})
	cfg, err := config.Read(filepath.Join(repoRoot, src))
	if err != nil {
		t.Fatal(err)
	}
	if v := find(final, "VOLUME"); len(v) != 1 || !slices.Equal(execForm(t, "VOLUME", v[0].args), []string{cfg.DataDir}) {
		t.Errorf("VOLUME %v; the image's relay.yaml keeps its data in %s", v, cfg.DataDir)
	}
}

// modulePath is the module's path from go.mod.
func modulePath(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^module (\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no module line")
	}
	return string(m[1])
}

// TestDockerignore evaluates .dockerignore as Docker does and checks that
// the build context holds what the Dockerfile copies (and every package the
// binary is built from) and never state, secrets or .git.
func TestDockerignore(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	sent := func(p string) bool {
		excluded, err := pm.MatchesOrParentMatches(p)
		if err != nil {
			t.Fatal(err)
		}
		return !excluded
	}

	// What must never be sent, wherever serve or a test left it.
	for _, p := range []string{
		"data/admin.token", "data/scimrelay.db", "data/nats/jetstream/SCIMRELAY/msgs/1.blk",
		"cmd/scimrelay/data/admin.token", "relay/admin.token", "backup.db", "cmd/scimrelay/x.db",
		".git/config", ".git", "deploy/nats.creds", "relay/testdata/x", "scim/handler_test.go",
		"scimrelay", "bin/scimrelay", ".env", "deploy/compose.yaml", "deploy/helm/scimrelay/values.yaml",
	} {
		if sent(p) {
			t.Errorf(".dockerignore sends %s to the builder", p)
		}
	}

	// What the Dockerfile copies from the context must be there.
	var sources []string
	for _, in := range readDockerfile(t) {
		if f := strings.Fields(in.args); in.keyword == "COPY" && !strings.HasPrefix(f[0], "--") {
			sources = append(sources, f[:len(f)-1]...)
		}
	}
	for _, s := range sources {
		if _, err := os.Stat(filepath.Join(repoRoot, s)); err != nil {
			t.Errorf("the Dockerfile copies %s: %v", s, err)
		}
	}
	// Every package the binary is built from is copied and sent.
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{end}}", "../cmd/scimrelay").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	packages := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dir, files, _ := strings.Cut(line, " ")
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency from the module cache
		}
		packages++
		rel = filepath.ToSlash(rel)
		if top, _, _ := strings.Cut(rel, "/"); !slices.Contains(sources, top) {
			t.Errorf("the binary is built from %s, which the Dockerfile does not copy", rel)
		}
		for _, file := range strings.Fields(files) {
			if !sent(path.Join(rel, file)) {
				t.Errorf(".dockerignore keeps %s/%s, which the build needs, from the builder", rel, file)
			}
		}
	}
	if packages < 8 {
		t.Fatalf("go list found only %d of the project's packages", packages)
	}
	for _, s := range sources {
		if !strings.Contains(s, ".") && !strings.HasSuffix(s, "/") {
			continue // a directory: its files were checked above
		}
		if !sent(s) {
			t.Errorf(".dockerignore keeps %s, which the Dockerfile copies, from the builder", s)
		}
	}

	// And of the files in this checkout, only the copied ones are sent.
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() || rel == "." || rel == ".dockerignore" {
			return nil
		}
		if sent(rel) && !slices.ContainsFunc(sources, func(s string) bool { return rel == s || strings.HasPrefix(rel, s+"/") }) {
			t.Errorf(".dockerignore sends %s, which the Dockerfile does not copy", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDockerImageKeepsNATSInProcess holds the comments of the image's
// relay.yaml (deploy/docker/relay.yaml: the embedded server "stays
// in-process in a container") and of the Dockerfile ("EXPOSE 8080 8081:
// 8080 SCIM, 8081 health/metrics/admin API"): with no SCIMRELAY_NATS_URL,
// the relay runs the embedded NATS with no client port, and the image
// exposes the two ports its relay.yaml listens on, and no other.
func TestDockerImageKeepsNATSInProcess(t *testing.T) {
	t.Setenv("SCIMRELAY_NATS_URL", "")
	cfg, err := config.Read(filepath.Join(repoRoot, "deploy/docker/relay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Embedded() || cfg.NATS.Listen != "" {
		t.Errorf("the image's relay.yaml: embedded %t, nats.listen %q; want the embedded server in-process, with no client port", cfg.Embedded(), cfg.NATS.Listen)
	}
	var ports []string
	for _, addr := range []string{cfg.Listen, cfg.AdminListen} {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		// "listen on all interfaces inside the container": else the
		// published ports reach nothing.
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			t.Errorf("the image's relay.yaml listens on %s; its header says all interfaces inside the container", addr)
		}
		ports = append(ports, port)
	}
	if !slices.Equal(ports, []string{"8080", "8081"}) {
		t.Errorf("the image's relay.yaml listens on %v; the Dockerfile's comment says 8080 SCIM, 8081 admin", ports)
	}
	ins := readDockerfile(t)
	final := ins[len(ins)-1].stage
	var exposed []string
	for _, in := range ins {
		if in.stage == final && in.keyword == "EXPOSE" {
			exposed = append(exposed, strings.Fields(in.args)...)
		}
	}
	if slices.Sort(exposed); !slices.Equal(exposed, ports) {
		t.Errorf("the image EXPOSEs %v; its relay.yaml listens on %v", exposed, ports)
	}
}
