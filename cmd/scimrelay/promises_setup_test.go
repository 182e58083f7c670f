// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// readme returns the README, or the part of it under a "## " heading.
func readme(t *testing.T, section string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if section == "" {
		return text
	}
	_, after, ok := strings.Cut(text, "\n## "+section+"\n")
	if !ok {
		t.Fatalf("the README has no section %q", section)
	}
	if i := strings.Index(after, "\n## "); i >= 0 {
		after = after[:i]
	}
	return after
}

// TestSetUpAsTheREADMESays holds the README's Set up section as far as the
// repository decides it: the Go version it names is go.mod's, and the
// repository's relay.yaml, which `go run ./cmd/scimrelay serve` reads (it
// is ./relay.yaml, the default: TestCLIFindsItsConfig), is a file serve
// accepts, with SCIM on 127.0.0.1:8080, the admin listener on
// 127.0.0.1:8081, an embedded NATS on 127.0.0.1:4222, data in ./data and
// a tenant "default" without a token.
func TestSetUpAsTheREADMESays(t *testing.T) {
	setUp := readme(t, "Set up")
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVersion == nil || !strings.Contains(setUp, "You need Go "+string(goVersion[1])+" ") {
		t.Errorf("go.mod needs Go %s; the README says:\n%s", goVersion[1], setUp[:200])
	}
	// The test command is the one CI runs, as it is written here.
	testCommand := regexp.MustCompile(`(?m)^(go test [^#\n]*?)\s*#`).FindStringSubmatch(setUp)
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if testCommand == nil || !strings.Contains(testCommand[1], "-race") || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(testCommand[1])+`$`).Match(ci) {
		t.Errorf("the Set up section's test command %q is not a line of .ci/run, or lacks -race", testCommand)
	}
	for _, want := range []string{"go run ./cmd/scimrelay serve", "`127.0.0.1:8080`", "`127.0.0.1:8081`", "`127.0.0.1:4222`", "`./data`", `Tenant "default"`} {
		if !strings.Contains(setUp, want) {
			t.Errorf("the Set up section no longer says %s; this test holds it", want)
		}
	}
	if configPathOf(newServeCommand()) != "relay.yaml" && os.Getenv(configEnv) == "" {
		t.Errorf("serve without --config reads %s, not ./relay.yaml", configPathOf(newServeCommand()))
	}
	cfg, err := loadConfig("../../relay.yaml", roleAll)
	if err != nil {
		t.Fatalf("serve refuses the repository's relay.yaml: %v", err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.AdminListen != "127.0.0.1:8081" || !cfg.Embedded() || cfg.NATS.Listen != "127.0.0.1:4222" || cfg.DataDir != "./data" {
		t.Errorf("relay.yaml: listen %s, admin_listen %s, embedded NATS %v on %s, data_dir %s", cfg.Listen, cfg.AdminListen, cfg.Embedded(), cfg.NATS.Listen, cfg.DataDir)
	}
	if len(cfg.Tenants) != 1 || cfg.Tenants[0].Name != "default" || slices.ContainsFunc(cfg.Tenants[0].Tokens, func(s string) bool { return s != "" }) {
		t.Errorf("relay.yaml's tenants: %+v, want one, default, without a token", cfg.Tenants)
	}
}

// pipeOutput is a serve's stdout as systemd or Kubernetes gives it: a
// pipe, not a terminal. It keeps what was written.
type pipeOutput struct {
	w    *os.File
	mu   sync.Mutex
	got  bytes.Buffer
	done chan struct{}
}

func newPipeOutput(t *testing.T) *pipeOutput {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeOutput{w: w, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			p.mu.Lock()
			p.got.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				_ = r.Close()
				return
			}
		}
	}()
	return p
}

// close ends the pipe and returns everything written to it.
func (p *pipeOutput) close() string {
	_ = p.w.Close()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got.String()
}

// serveProcess is `scimrelay serve` run in-process as main runs it, with
// its stdout a pipe.
type serveProcess struct {
	cancel context.CancelFunc
	code   chan int
	stdout *pipeOutput
	stderr *eventstest.Log
}

func startServe(t *testing.T, configPath string) *serveProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &serveProcess{cancel: cancel, code: make(chan int, 1), stdout: newPipeOutput(t), stderr: &eventstest.Log{}}
	go func() { s.code <- execute(ctx, []string{"serve", "--config", configPath}, s.stdout.w, s.stderr) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop ends serve as SIGTERM does and returns what it wrote on stdout.
func (s *serveProcess) stop(t *testing.T) string {
	t.Helper()
	if s.cancel == nil {
		return ""
	}
	s.cancel()
	s.cancel = nil
	select {
	case code := <-s.code:
		if code != exitOK {
			t.Errorf("serve exited %d: %s", code, s.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s")
	}
	return s.stdout.close()
}

// TestFirstTokenUnderAServiceManager holds the Set up section's promises
// about the token made on first start, for serve as systemd, Docker or
// Kubernetes run it (stdout a pipe): it is written to data_dir/initial-token
// (mode 0600) with the tenant URL, never to stdout or the log, which names
// the file; it works for SCIM. A start that fails because a port is taken
// makes no token; a restart after the file was deleted makes none for a
// tenant that has one; and a file someone created or widened before is
// made 0600 before a token goes in.
func TestFirstTokenUnderAServiceManager(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	tokenFile := filepath.Join(data, "initial-token")
	addrs := freeAddrs(t, 2)
	scimAddr, adminAddr := addrs[0], addrs[1]
	write := func(adminListen, tenants string) string {
		path := filepath.Join(dir, "relay.yaml")
		text := fmt.Sprintf("listen: %s\nadmin_listen: %s\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  listen: \"\"\ntenants:\n%s",
			scimAddr, adminListen, data, adminSecret, tenants)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	const firstTenants = "  - name: acme\n  - name: globex\n    tokens: [" + globexToken + "]\n"

	// The admin port taken: serve fails, and no token exists.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := cli(t, "serve", "--config", write(taken.Addr().String(), firstTenants))
	_ = taken.Close()
	if code != exitError || !strings.Contains(stderr, "admin listener") {
		t.Fatalf("serve with its admin port taken: exit %d, %s", code, stderr)
	}
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Fatalf("a start that failed wrote %s: %v", tokenFile, err)
	}

	// First start: the token goes to the file.
	path := write(adminAddr, firstTenants)
	s := startServe(t, path)
	waitServing(t, s, adminAddr)
	token := readFirstToken(t, tokenFile, "acme", scimAddr)
	for _, held := range []string{"scimrelay.db", "nats"} { // relay.yaml: data_dir holds the bbolt file and the NATS store
		if _, err := os.Stat(filepath.Join(data, held)); err != nil {
			t.Errorf("data_dir has no %s: %v", held, err)
		}
	}
	if text, _ := os.ReadFile(tokenFile); strings.Contains(string(text), "globex") {
		t.Errorf("globex has a static token, yet %s holds one for it:\n%s", tokenFile, text)
	}
	createUser(t, scimAddr, "acme", token, "ann@acme.example").want(t, http.StatusCreated)
	stdout := s.stop(t)
	if strings.Contains(stdout, token) || strings.Contains(s.stderr.String(), token) {
		t.Errorf("the token went to stdout or the log:\nstdout: %s\nstderr: %s", stdout, s.stderr.String())
	}
	if !strings.Contains(s.stderr.String(), tokenFile) {
		t.Errorf("the log does not name %s:\n%s", tokenFile, s.stderr.String())
	}

	// The operator pastes it and deletes the file. A file created with a
	// wider mode sits there when the relay restarts with a new tenant.
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tokenFile, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	s = startServe(t, write(adminAddr, firstTenants+"  - name: beta\n"))
	waitServing(t, s, adminAddr)
	beta := readFirstToken(t, tokenFile, "beta", scimAddr)
	if text, _ := os.ReadFile(tokenFile); strings.Contains(string(text), "acme") {
		t.Errorf("a restart made acme, which has a token, another one:\n%s", text)
	}
	createUser(t, scimAddr, "acme", token, "bob@acme.example").want(t, http.StatusCreated)
	createUser(t, scimAddr, "beta", beta, "bob@beta.example").want(t, http.StatusCreated)
	if stdout := s.stop(t); strings.Contains(stdout, beta) || strings.Contains(s.stderr.String(), beta) {
		t.Errorf("the token went to stdout or the log:\nstdout: %s\nstderr: %s", stdout, s.stderr.String())
	}
}

// TestServeBinaryAsAServiceRunsIt holds serve's --help as the built binary
// runs under a service manager: stdout is a pipe, so the first token goes
// to data_dir/initial-token, which the log names, and neither stream holds
// it; SIGINT (as SIGTERM, TestGracefulAndExclusive) stops it gracefully,
// exit status 0.
func TestServeBinaryAsAServiceRunsIt(t *testing.T) {
	bin := binary(t)
	data := t.TempDir()
	addrs := freeAddrs(t, 2)
	a := procAddrs{scim: addrs[0], admin: addrs[1]}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	text := fmt.Sprintf("listen: %s\nadmin_listen: %s\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  listen: \"\"\ntenants:\n  - name: acme\n", a.scim, a.admin, data, adminSecret)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, bin, path) // stdout and stderr: a pipe to the test
	waitReady(t, p, a.admin)
	tokenFile := filepath.Join(data, "initial-token")
	token := readFirstToken(t, tokenFile, "acme", a.scim)
	createUser(t, a.scim, "acme", token, "ann@acme.example").want(t, http.StatusCreated)
	p.stopWith(t, os.Interrupt)
	if out := p.stderr.String(); strings.Contains(out, token) || !strings.Contains(out, tokenFile) || !strings.Contains(out, "shutting down") {
		t.Errorf("stdout and stderr must name %s, never hold the token, and say it shut down:\n%s", tokenFile, out)
	}
	// What an operator reads first and last: which build, role, file and
	// data directory started, and that the stop is over.
	out := p.stderr.String()
	for _, want := range []string{`msg=starting version=`, `role=all config=` + path, `data_dir=` + data, `nats=embedded`, `msg=stopped`} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "msg=stopped") < strings.LastIndex(out, "shutting down") {
		t.Errorf("stopped is not the last word:\n%s", out)
	}
}

// waitServing waits for a serveProcess to answer /readyz.
func waitServing(t *testing.T, s *serveProcess, admin string) {
	t.Helper()
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case code := <-s.code:
			t.Fatalf("serve exited %d: %s", code, s.stderr.String())
		default:
		}
		return ready(admin)
	})
}

// readFirstToken reads data_dir/initial-token, checks that only its owner
// may read it and that it gives tenant's URL, and returns tenant's token.
func readFirstToken(t *testing.T, path, tenant, scimAddr string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no %s: %v", path, err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^tenant ` + tenant + ` .*\n  Tenant URL: +(\S+)\n  Secret Token: +(scimrelay_\S+)$`).FindStringSubmatch(string(text))
	if m == nil || m[1] != "http://"+scimAddr+"/scim/v2/"+tenant {
		t.Fatalf("%s does not give tenant %s's URL and token:\n%s", path, tenant, text)
	}
	return m[2]
}

// createUser POSTs a user to a tenant of the SCIM listener at addr.
func createUser(t *testing.T, addr, tenant, token, userName string) reply {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+addr+"/scim/v2/"+tenant+"/Users",
		strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+userName+`","active":true}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/scim+json")
	return do(t, req)
}

// TestFirstTokenAsTheREADMEShowsIt holds the text the Set up section shows
// for a terminal: serve prints those lines, with the tenant's URL and a
// token that works.
func TestFirstTokenAsTheREADMEShowsIt(t *testing.T) {
	m := regexp.MustCompile("(?s)```\n(Tenant \"default\" had no token.*?)\n```").FindStringSubmatch(readme(t, "Set up"))
	if m == nil {
		t.Fatal("the Set up section shows no first-start output")
	}
	cfg := testConfig(t, t.TempDir())
	cfg.Tenants = []config.Tenant{{Name: "default"}}
	var terminal bytes.Buffer
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.DiscardHandler), &terminal)
	pattern := regexp.QuoteMeta(m[1])
	pattern = strings.ReplaceAll(pattern, regexp.QuoteMeta("http://127.0.0.1:8080"), regexp.QuoteMeta("http://"+cfg.Listen))
	pattern = strings.ReplaceAll(pattern, regexp.QuoteMeta("scimrelay_..."), `(scimrelay_[A-Za-z0-9_-]{20,})`)
	got := regexp.MustCompile(pattern).FindStringSubmatch(terminal.String())
	if got == nil {
		t.Fatalf("serve printed\n%s\nthe README shows\n%s", terminal.String(), m[1])
	}
	p.scim("default", got[1], "GET", "/Users", "").want(t, http.StatusOK)
}

// TestCodeMapNamesWhatExists holds the README's Code map: every Go package
// of the repository has its row; every file, folder and exported name a
// row names exists in that folder (or, for a path, from the repository's
// root); and the import rules it points at are a test.
func TestCodeMapNamesWhatExists(t *testing.T) {
	const root = "../.."
	section := readme(t, "Code map")
	// The .ci row names the go test commands .ci/run runs, and no other
	// (it named a step without -race that .ci/run had dropped).
	if m := regexp.MustCompile("(?m)^\\| `\\.ci` \\| (.*) \\|$").FindStringSubmatch(section); m == nil {
		t.Error("the Code map has no .ci row")
	} else if ci, err := os.ReadFile(filepath.Join(root, ".ci", "run")); err != nil {
		t.Error(err)
	} else {
		for _, line := range regexp.MustCompile(`(?m)^\s*go test .*$`).FindAllString(string(ci), -1) {
			if line = strings.TrimSpace(line); !strings.Contains(m[1], "`"+line+"`") {
				t.Errorf(".ci/run runs %q; the Code map's .ci row does not name it: %s", line, m[1])
			}
		}
		if strings.Contains(m[1], "without `-race`") {
			t.Errorf("the Code map's .ci row names a step without -race, which .ci/run has not: %s", m[1])
		}
	}
	if _, ok := testFuncs(t, ".")["TestImportRules"]; !ok || !strings.Contains(section, "`cmd/scimrelay/imports_test.go`") {
		t.Error("the Code map points at cmd/scimrelay/imports_test.go for the import rules; it must hold TestImportRules")
	}
	rows := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\| (.*) \\|$").FindAllStringSubmatch(section, -1) {
		rows[m[1]] = m[2]
	}
	if len(rows) < 15 {
		t.Fatalf("found %d rows in the Code map", len(rows))
	}
	exists := func(p string) bool { _, err := os.Stat(filepath.Join(root, p)); return err == nil }
	identifier := regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)
	for folder, text := range rows {
		if !exists(folder) {
			t.Errorf("the Code map names %s, which does not exist", folder)
			continue
		}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(text, -1) {
			name := m[1]
			switch {
			case strings.HasSuffix(name, ".go"):
				if !exists(filepath.Join(folder, name)) {
					t.Errorf("the Code map says %s holds %s, which does not exist", folder, name)
				}
			case strings.Contains(name, "/") && !strings.HasPrefix(name, "/") && !strings.ContainsAny(name, " *$"):
				if !exists(filepath.Join(folder, name)) && !exists(name) {
					t.Errorf("the Code map names %s (in the row of %s), which does not exist", name, folder)
				}
			case identifier.MatchString(name):
				if !declares(t, filepath.Join(root, folder), name) {
					t.Errorf("the Code map says %s has %s, which it does not declare", folder, name)
				}
			}
		}
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		pkg, _ := filepath.Rel(root, filepath.Dir(path))
		if _, ok := rows[filepath.ToSlash(pkg)]; !ok {
			t.Errorf("package %s has no row in the README's Code map", pkg)
			rows[filepath.ToSlash(pkg)] = "" // once
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testFuncs returns the names of the top-level functions of the test files
// in a package folder.
func testFuncs(t *testing.T, dir string) map[string]*ast.FuncDecl {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	funcs := map[string]*ast.FuncDecl{}
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
				funcs[fd.Name.Name] = fd
			}
		}
	}
	return funcs
}

// TestTestsSectionCommands holds the commands and names of the README's
// Tests section: each fuzz command's -fuzz matches exactly one fuzz target
// of its package (as go test requires); the tests it names exist where it
// says; no test skips under -race;
// the variable TestOlderNATSIsRefusedAtStart reads is the one it names;
// .ci/run runs what the section says it runs; golden files are compared
// through scimtest.Golden, which -update rewrites.
func TestTestsSectionCommands(t *testing.T) {
	const root = "../.."
	section := readme(t, "Tests")
	fuzz := regexp.MustCompile(`(?m)^go test \./(\S+) -run x -fuzz (\S+) -fuzztime \S+$`).FindAllStringSubmatch(section, -1)
	if len(fuzz) < 7 {
		t.Errorf("found %d fuzz commands in the Tests section", len(fuzz))
	}
	for _, m := range fuzz {
		re := regexp.MustCompile(m[2])
		var matched []string
		for name := range testFuncs(t, filepath.Join(root, m[1])) {
			if strings.HasPrefix(name, "Fuzz") && re.MatchString(name) {
				matched = append(matched, name)
			}
		}
		if len(matched) != 1 {
			t.Errorf("go test ./%s -fuzz %s matches %v; it must match exactly one fuzz target", m[1], m[2], matched)
		}
	}
	for _, named := range []struct{ test, dir, says string }{
		{"TestOlderNATSIsRefusedAtStart", "cmd/scimrelay", "`TestOlderNATSIsRefusedAtStart`"},
		{"TestBackendConformance", "relay", "`go test ./relay -run TestBackendConformance`"},
		{"TestMemoryBackend", "scim/scimtest", "`go test ./scim/scimtest`"},
	} {
		if _, ok := testFuncs(t, filepath.Join(root, named.dir))[named.test]; !ok || !strings.Contains(section, named.says) {
			t.Errorf("the Tests section says %s; ./%s has %s: %v", named.says, named.dir, named.test, ok)
		}
	}
	for _, dir := range []string{"relay", "scim/scimtest"} {
		if !calls(t, filepath.Join(root, dir), "RunBackendTests") {
			t.Errorf("./%s's tests do not run scimtest.RunBackendTests, which the Tests section says it passes", dir)
		}
	}

	// No test asks whether -race is on: each runs under the README's test
	// command (TestEmbeddedNATSStoreFull skipped itself while the heal
	// restarted nats-server's whole JetStream, which raced upstream).
	var skipping []string
	goldenDirs := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules"):
			return filepath.SkipDir
		case strings.HasSuffix(path, ".golden"):
			goldenDirs[path[:strings.Index(path, string(filepath.Separator)+"testdata"+string(filepath.Separator))]] = true
		case strings.HasSuffix(path, "_test.go"):
			file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			for _, d := range file.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil && mentions(fd.Body, "raceDetector") {
					skipping = append(skipping, fd.Name.Name)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(skipping) != 0 || !strings.Contains(section, "No test skips itself under `-race`.") {
		t.Errorf("tests that depend on -race: %v; the Tests section says none", skipping)
	}

	if !strings.Contains(section, "SCIMRELAY_OLD_NATS_SERVER=") || oldNATSEnv != "SCIMRELAY_OLD_NATS_SERVER" {
		t.Errorf("TestOlderNATSIsRefusedAtStart reads %s; the Tests section names SCIMRELAY_OLD_NATS_SERVER", oldNATSEnv)
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci/run"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"go install github.com/nats-io/nats-server/v2@v2.10.22", "export SCIMRELAY_OLD_NATS_SERVER=",
		"go test -race -timeout 30m ./...",
	} {
		if !strings.Contains(string(ci), want) || !strings.Contains(section, strings.Fields(want)[len(strings.Fields(want))-1]) {
			t.Errorf(".ci/run or the Tests section lacks %q", want)
		}
	}

	if !strings.Contains(section, "`go test ./<pkg> -run <Test> -args -update`") || !calls(t, filepath.Join(root, "scim/scimtest"), "Bool") {
		t.Error("the Tests section's -update needs scimtest's update flag")
	}
	if len(goldenDirs) < 3 {
		t.Errorf("found golden files in only %v", goldenDirs)
	}
	for dir := range goldenDirs {
		if !calls(t, dir, "Golden") {
			t.Errorf("%s has golden files its tests do not compare through scimtest.Golden (which -update rewrites)", dir)
		}
	}
}

// declares reports whether the non-test Go files in dir declare or use
// the identifier name (relay uses scim's Backend, which it implements).
func declares(t *testing.T, dir, name string) bool { return namedIn(t, dir, name, false) }

// calls reports whether the Go files in dir, tests included, call or name
// name (scimtest.Golden, flag.Bool ...).
func calls(t *testing.T, dir, name string) bool { return namedIn(t, dir, name, true) }

// namedIn reports whether a Go file in dir (a test file only when tests)
// names the identifier name.
func namedIn(t *testing.T, dir, name string, tests bool) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !tests && strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		if mentions(file, name) {
			return true
		}
	}
	return false
}

// mentions reports whether node calls name, or names the identifier name.
func mentions(node ast.Node, name string) bool {
	found := false
	ast.Inspect(node, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			found = found || n.Sel.Name == name
		case *ast.Ident:
			found = found || n.Name == name
		}
		return !found
	})
	return found
}

// TestTheREADMEFirstLookRuns runs the Set up section's first look as given:
// the repository's relay.yaml (ports of the test's own) served by the
// binary from a directory of its own, then the block's commands through
// bash, with the token the first start wrote and `go run ./cmd/scimrelay`
// standing for the binary. The user is created, found by its userName,
// and its event read back.
func TestTheREADMEFirstLookRuns(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl (.ci/run installs it)")
	}
	bin := binary(t)
	block := codeBlock(t, readme(t, "Set up"), "### A first look, without Entra", "sh")
	yaml, err := os.ReadFile("../../relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]string{}
	addrs := freeAddrs(t, 3)
	ours := func(addr string) string {
		if ports[addr] == "" {
			ports[addr] = addrs[len(ports)]
		}
		return ports[addr]
	}
	config := loopbackAddr.ReplaceAllStringFunc(string(yaml), ours)
	block = loopbackAddr.ReplaceAllStringFunc(block, ours)
	scim, admin := ports["127.0.0.1:8080"], ports["127.0.0.1:8081"]
	if scim == "" || admin == "" {
		t.Fatalf("relay.yaml does not listen on 127.0.0.1:8080 and 8081, as the README's first look assumes:\n%s", config)
	}
	if !strings.Contains(block, scim) {
		t.Fatalf("the first look does not reach the relay.yaml's SCIM listener:\n%s", block)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv(configEnv, "")
	t.Setenv("SCIMRELAY_ADMIN_TOKEN", "")
	if err := os.WriteFile("relay.yaml", []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, bin, "relay.yaml")
	defer p.stopWith(t, os.Interrupt)
	waitReady(t, p, admin)
	token := readFirstToken(t, filepath.Join(dir, "data", "initial-token"), "default", scim)

	script := regexp.MustCompile(`(?m)^TOKEN=scimrelay_\.\.\.`).ReplaceAllString(block, "TOKEN="+token)
	if script == block {
		t.Fatalf("the first look sets no TOKEN=scimrelay_... to replace:\n%s", block)
	}
	script = strings.ReplaceAll(script, "go run ./cmd/scimrelay", bin)
	cmd := exec.Command(bash, "-euo", "pipefail", "-c", script)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the first look's commands: %v\n%s\n%s", err, out.String(), stderr.String())
	}
	for _, want := range []string{`"userName":"ann@example.com"`, `"totalResults":1`, `"type":"io.scimrelay.user.created"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the first look's output has no %s:\n%s", want, out.String())
		}
	}
}

// TestQuotedCommandsAreTheCLIs holds what an operator copies to the CLI:
// every command README.md quotes whose first word is a group of commands
// (`sinks list`, `scimrelay dlq list --sink crm`), and every command an
// alert's annotations quote (deploy/prometheus/alerts.yaml, in backquotes,
// `scimrelay check --config relay.yaml`), is one the CLI has, with flags
// it takes and arguments it accepts. The README named a `sinks status`
// the CLI never had, and an alert `scimrelay check relay.yaml`, refused.
func TestQuotedCommandsAreTheCLIs(t *testing.T) {
	text := readme(t, "")
	alerts, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	groups := map[string]bool{}
	for _, c := range newRootCommand().Commands() {
		groups[c.Name()] = c.HasSubCommands()
	}
	quoted := regexp.MustCompile("`([^`\n]+)`")
	template := regexp.MustCompile(`\{\{[^}]*\}\}`)
	// check finds the command and its flags; whole, it parses the line
	// as the CLI would (the README names commands in prose, `token
	// revoke`, with their arguments left out).
	check := func(where, line string, whole bool) {
		words := strings.Fields(template.ReplaceAllString(strings.TrimPrefix(line, "scimrelay "), "x"))
		root := newRootCommand()
		cmd, args, err := root.Find(words)
		switch {
		case err == nil && cmd.HasSubCommands():
			err = fmt.Errorf("%s has no subcommand %q", cmd.CommandPath(), strings.Join(args, " "))
		case err == nil && whole:
			if err = cmd.ParseFlags(args); err == nil {
				err = cmd.ValidateArgs(cmd.Flags().Args())
			}
		case err == nil:
			for _, w := range args {
				name, ok := strings.CutPrefix(strings.TrimPrefix(w, "["), "--")
				name, _, _ = strings.Cut(name, "=")
				if ok && name != "help" && cmd.Flags().Lookup(name) == nil && cmd.InheritedFlags().Lookup(name) == nil {
					err = fmt.Errorf("%s has no flag --%s", cmd.CommandPath(), name)
				}
			}
		}
		if err != nil {
			t.Errorf("%s quotes `%s`: %v", where, line, err)
		}
	}
	for _, m := range quoted.FindAllStringSubmatchIndex(text, -1) {
		words := strings.Fields(strings.TrimPrefix(text[m[2]:m[3]], "scimrelay "))
		if len(words) < 2 || !groups[words[0]] || strings.HasPrefix(words[1], "-") || strings.Join(words[:2], " ") == "token revok" { // its example of bad usage
			continue
		}
		check(fmt.Sprintf("README line %d", strings.Count(text[:m[0]], "\n")+1), text[m[2]:m[3]], false)
	}
	n := 0
	for _, m := range quoted.FindAllStringSubmatch(string(alerts), -1) {
		if strings.HasPrefix(m[1], "scimrelay ") {
			check("alerts.yaml", m[1], true)
			n++
		}
	}
	if n < 8 {
		t.Errorf("alerts.yaml quotes %d commands; its descriptions name at least 8", n)
	}
}
