// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// storedOnly leaves out of list the tokens written in relay.yaml.
func storedOnly(list []relay.Token) []relay.Token {
	return slices.DeleteFunc(list, func(t relay.Token) bool { return t.Source == relay.SourceConfig })
}

// TestTokenInRelayYAML follows a tenant's token written in relay.yaml
// through the token commands, as an operator rotating after a leak would:
// token list shows it, marked and without its secret; rotate says it stays
// valid, and it does, after the overlap that ends the stored ones; revoke
// refuses it, saying what to do instead; a reload without it ends it.
func TestTokenInRelayYAML(t *testing.T) {
	const static = "static-token-SECRETVALUE-0123456789"
	sum := sha256.Sum256([]byte(static))
	id := "yaml_" + hex.EncodeToString(sum[:6])
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write("log:\n  level: info\n  format: json\nlimits:\n  rate: 0\ntenants:\n  - name: default\n    tokens: [\"" + static + "\"]\n")
	var logs eventstest.Log
	p := startReloadable(t, f.path, &logs)
	cfg := cliConfig(t, p, adminSecret)
	var said strings.Builder // every output of every command, to look for the secret in
	run := func(args ...string) (int, string, string) {
		t.Helper()
		code, out, stderr := cli(t, append(args, "--config", cfg)...)
		said.WriteString(out + stderr)
		return code, out, stderr
	}

	code, stored, _ := run("token", "create", "--tenant", "default", "--name", "entra")
	stored = strings.TrimSpace(stored)
	if code != exitOK {
		t.Fatalf("token create: %d", code)
	}
	p.scim("default", static, "GET", "/Users", "").want(t, http.StatusOK)
	p.scim("default", stored, "GET", "/Users", "").want(t, http.StatusOK)

	code, out, _ := run("token", "list", "--tenant", "default")
	var row string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, id) {
			row = line
		}
	}
	if code != exitOK || !strings.Contains(row, "tenants[0].tokens[0]") || !strings.Contains(row, "live (relay.yaml)") {
		t.Fatalf("token list: code %d, no row for %s marked relay.yaml:\n%s", code, id, out)
	}
	code, out, _ = run("token", "list", "--json", "--tenant", "default")
	var list []relay.Token
	if code != exitOK || jsonLines(out, &list) != nil || len(list) != 2 {
		t.Fatalf("token list --json: code %d:\n%s", code, out)
	}
	if l := list[0]; l.ID != id || l.Source != relay.SourceConfig || l.Name != "tenants[0].tokens[0]" || l.LastUsed.IsZero() || list[1].Source != "" {
		t.Fatalf("token list --json: %+v, want first %s from relay.yaml, used, then the stored one", list, id)
	}

	// The admin API's answer to a rotation says so too.
	req, _ := http.NewRequest("POST", p.adminURL+"/admin/v1/tokens/rotate", strings.NewReader(`{"tenant":"default","overlap":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	req.Header.Set("Content-Type", "application/json")
	r := do(t, req).want(t, http.StatusCreated)
	said.Write(r.raw)
	var res admin.TokenResponse
	if err := json.Unmarshal(r.raw, &res); err != nil || len(res.StillValid) != 1 || res.StillValid[0].ID != id || res.Note != admin.StillValidNote {
		t.Fatalf("rotate through the admin API: %v\n%s", err, r.raw)
	}

	code, fresh, stderr := run("token", "rotate", "--tenant", "default", "--overlap", "1s")
	fresh = strings.TrimSpace(fresh)
	want := "token " + id + " (tenants[0].tokens[0] in relay.yaml) stays valid after the overlap"
	if code != exitOK || !strings.Contains(stderr, want) || !strings.Contains(stderr, "remove it from relay.yaml and reload the relay (SIGHUP or scimrelay reload)") {
		t.Fatalf("token rotate: code %d, stderr without %q:\n%s", code, want, stderr)
	}
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if r := p.scim("default", stored, "GET", "/Users", ""); r.status != http.StatusUnauthorized {
			return fmt.Errorf("the stored token after the overlap: %d, want 401", r.status)
		}
		return nil
	})
	p.scim("default", static, "GET", "/Users", "").want(t, http.StatusOK)
	p.scim("default", fresh, "GET", "/Users", "").want(t, http.StatusOK)

	code, _, stderr = run("token", "revoke", id)
	if code != exitError || !strings.Contains(stderr, "token "+id+" is tenants[0].tokens[0] in relay.yaml (tenant default)") ||
		!strings.Contains(stderr, "remove it from relay.yaml and reload the relay (SIGHUP or scimrelay reload)") {
		t.Fatalf("token revoke %s: code %d, %s", id, code, stderr)
	}
	p.scim("default", static, "GET", "/Users", "").want(t, http.StatusOK)

	// Out of relay.yaml and reloaded, it stops working and leaves the list.
	f.write("log:\n  level: info\n  format: json\nlimits:\n  rate: 0\ntenants:\n  - name: default\n")
	if code, out, stderr := run("reload"); code != exitOK {
		t.Fatalf("reload: %d %s %s", code, out, stderr)
	}
	p.scim("default", static, "GET", "/Users", "").want(t, http.StatusUnauthorized)
	p.scim("default", fresh, "GET", "/Users", "").want(t, http.StatusOK)
	if _, out, _ = run("token", "list", "--tenant", "default"); strings.Contains(out, id) || strings.Contains(out, "relay.yaml") {
		t.Fatalf("token list after the reload:\n%s", out)
	}

	if strings.Contains(said.String(), "SECRETVALUE") || strings.Contains(logs.String(), "SECRETVALUE") {
		t.Fatal("the relay.yaml token is in an answer or the log")
	}
}

// TestNoRelayYAMLTokenIsAnotherTenantsStoredToken: the secret `token
// create --tenant globex` printed, pasted into acme's relay.yaml tokens by
// mistake, would open both tenants (README, Who can reach what: "a
// credential of one tenant gets 401 on every other"). A reload with it is
// refused (422, said at Error), naming the field and the token it is, and
// so is a start; the secret keeps opening globex alone. Before, both
// answered 200.
func TestNoRelayYAMLTokenIsAnotherTenantsStoredToken(t *testing.T) {
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write(twoTenants)
	cfg, err := loadConfig(f.path, roleAll)
	if err != nil {
		t.Fatal(err)
	}
	logs := &eventstest.Log{}
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.NewTextHandler(logs, nil)), io.Discard, withReload(f.path, nil))
	code, secret, stderr := cli(t, "token", "create", "--tenant", "globex", "--name", "entra", "--config", cliConfig(t, p, adminSecret))
	if code != exitOK {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	secret = strings.TrimSpace(secret)
	f.write("tenants:\n  - name: acme\n    tokens: [" + acmeToken + ", " + secret + "]\n  - name: globex\n    tokens: [" + globexToken + "]\n")
	// As POST /admin/v1/reload: refused as a file check refuses, 422, and
	// said at Error (a SIGHUP's reload has nowhere else to say it).
	req, err := http.NewRequest("POST", p.adminURL+"/admin/v1/reload", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	r := do(t, req)
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.raw), "tenants[0].tokens[1]: is the secret of token ") || !strings.Contains(string(r.raw), "of tenant globex") {
		t.Fatalf("a reload giving acme globex's stored token: %d %s", r.status, r.raw)
	}
	if !strings.Contains(logs.String(), "reloading relay.yaml refused") {
		t.Fatalf("the refused reload is not said at Error:\n%s", logs.String())
	}
	if a, g := p.scim("acme", secret, "GET", "/Users", "").status, p.scim("globex", secret, "GET", "/Users", "").status; a != http.StatusUnauthorized || g != http.StatusOK {
		t.Fatalf("globex's token after the refused reload: acme %d, globex %d; want 401 and 200", a, g)
	}
	p.stop()
	wantStartRefused(t, f.path, "tenants[0].tokens[1]: is the secret of token ")
}

// wantStartRefused starts a relay from the relay.yaml at path and wants it
// refused, saying want.
func wantStartRefused(t *testing.T, path, want string) {
	t.Helper()
	cfg, err := loadConfig(path, roleAll)
	if err != nil {
		t.Fatal(err)
	}
	wantConfigRefused(t, cfg, want)
}

// wantConfigRefused checks that serve refuses to start with cfg, saying
// want, and returns what it said.
func wantConfigRefused(t *testing.T, cfg *config.Config, want string) string {
	t.Helper()
	srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil {
		srv.close()
		t.Fatalf("the relay started; want it refused, saying %q", want)
	} else if !strings.Contains(err.Error(), want) {
		t.Fatalf("start refused with %v; want it to say %q", err, want)
	}
	return err.Error()
}

// TestNoTenantTokenIsTheGeneratedAdminToken: with admin.token empty serve
// writes a generated admin token to data_dir/admin.token, which the CLI
// reads. A relay.yaml giving a tenant that token would give the tenant's
// identity provider the admin API: a reload with it is refused, naming the
// key, and so is a start. check cannot read the file; it refuses a token
// equal to admin.token in relay.yaml (TestCheckAgreesWithServe). Before,
// both took it, and the tenant's token opened /admin/v1/.
func TestNoTenantTokenIsTheGeneratedAdminToken(t *testing.T) {
	dataDir := t.TempDir()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	write := func(globex string) {
		text := fmt.Sprintf("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: %s\nnats:\n  listen: \"\"\ntenants:\n  - name: acme\n    tokens: [%s]\n  - name: globex\n    tokens: [%s]\n", dataDir, acmeToken, globex)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(globexToken)
	p := startReloadable(t, path, io.Discard)
	b, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	generated := strings.TrimSpace(string(b))
	write(generated)
	if _, err := p.srv.reload(context.Background()); !errors.Is(err, admin.ErrReloadRefused) || !strings.Contains(err.Error(), "tenants[1].tokens[0]: is the admin token in force") {
		t.Fatalf("a reload giving globex the generated admin token: %v", err)
	}
	if s := p.scim("globex", generated, "GET", "/Users", "").status; s != http.StatusUnauthorized {
		t.Fatalf("the admin token opens globex's SCIM endpoint after the refused reload: %d", s)
	}
	p.stop()
	wantStartRefused(t, path, "tenants[1].tokens[0]: is the admin token in force")
}

// TestNoStoredCredentialIsTheAdminToken: an admin token that is the secret
// of a tenant's stored token (`token create`, or the first token serve
// writes to data_dir/initial-token, beside data_dir/admin.token) or of an
// OAuth client would give that tenant's identity provider the admin API,
// as a relay.yaml token would (TestNoTenantTokenIsTheGeneratedAdminToken):
// a start with it is refused, naming the credential, not its secret.
// Before, it started, and the one secret opened both.
func TestNoStoredCredentialIsTheAdminToken(t *testing.T) {
	for _, kind := range []string{"token", "client"} {
		t.Run(kind, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			p := startRelay(t, cfg, roleAll)
			req, err := http.NewRequest("POST", p.adminURL+"/admin/v1/"+kind+"s", strings.NewReader(`{"tenant":"acme","name":"entra"}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+adminSecret)
			req.Header.Set("Content-Type", "application/json")
			r := do(t, req)
			if r.status != http.StatusCreated {
				t.Fatalf("creating acme's %s: %d %s", kind, r.status, r.raw)
			}
			secret := r.body["secret"].(string)
			p.stop()
			next := *cfg
			next.Admin.Token = secret
			if said := wantConfigRefused(t, &next, "is the secret of "+kind+" "); strings.Contains(said, secret) {
				t.Errorf("the refusal shows the secret: %s", said)
			}
		})
	}
}
