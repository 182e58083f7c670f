// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = ".."

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the binary the tests built once they have run.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// scimrelay builds the binary once per test run: the deployment files are
// checked against the real command line, not a copy of its rules.
func scimrelay(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "scimrelay-deploy")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "scimrelay")
		buildErr = goBuild(binPath, nil)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// goBuild builds ./cmd/scimrelay to out with extra go build flags.
func goBuild(out string, flags []string) error {
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, "./cmd/scimrelay")...)
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, b)
	}
	return nil
}

// run runs the binary with args and env (nothing else of the test's
// environment) and returns its exit code and combined output.
func run(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(scimrelay(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, out.String()
}

// checkCommandLine fails unless args (without the program name) are a
// scimrelay command with flags and values it accepts: the flags are parsed
// as when the command runs, and --help stops it there.
func checkCommandLine(t *testing.T, where string, args []string) {
	t.Helper()
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		t.Errorf("%s: %q does not start with a scimrelay command", where, args)
		return
	}
	code, out := run(t, nil, append(append([]string{}, args...), "--help")...)
	if code != 0 {
		t.Errorf("%s: scimrelay refuses %q (exit %d):\n%s", where, args, code, out)
		return
	}
	// An unknown command would print the root help instead of its own.
	if !strings.Contains(out, "scimrelay "+args[0]) {
		t.Errorf("%s: %q is not a scimrelay command:\n%s", where, args[0], out)
	}
}

// checkRelayYAML fails unless scimrelay check accepts text as relay.yaml
// with env as the only environment: the check serve itself makes first.
func checkRelayYAML(t *testing.T, where, text string, env map[string]string) {
	t.Helper()
	checkRoleYAML(t, where, "all", text, env)
}

// checkRoleYAML is checkRelayYAML for a process of role (serve --role).
func checkRoleYAML(t *testing.T, where, role, text string, env map[string]string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := run(t, env, "check", "--role", role, "--config", path); code != 0 {
		t.Errorf("%s: scimrelay check --role %s refuses its relay.yaml (exit %d):\n%s\n--- relay.yaml:\n%s", where, role, code, out, text)
	}
}

// flagValue returns the value of --name in args, or "".
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// TestBinaryLeavesDeployDependenciesOut checks that the libraries these
// tests use (Helm, Kubernetes, Compose) are not linked into scimrelay.
func TestBinaryLeavesDeployDependenciesOut(t *testing.T) {
	out, err := exec.Command("go", "version", "-m", scimrelay(t)).Output()
	if err != nil {
		t.Fatal(err)
	}
	deps := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "dep" {
			continue
		}
		deps++
		for _, heavy := range []string{"helm.sh/", "k8s.io/", "sigs.k8s.io/", "github.com/compose-spec/", "github.com/moby/", "github.com/prometheus-operator/"} {
			if strings.HasPrefix(f[1], heavy) {
				t.Errorf("scimrelay links %s", f[1])
			}
		}
	}
	if deps == 0 {
		t.Fatalf("go version -m lists no dependencies:\n%s", out)
	}
}
