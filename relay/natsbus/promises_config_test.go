// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestEmbeddedInProcessOnly holds relay.yaml's nats.listen comment, ""
// = in-process only: the embedded server then opens no socket a client on
// the network could reach, and has no client URL to give; with an address
// it opens exactly one, there.
func TestEmbeddedInProcessOnly(t *testing.T) {
	if _, err := os.Stat("/proc/self/net/tcp"); err != nil {
		t.Skip("counting this process's listening sockets needs Linux's /proc")
	}
	log := slog.New(slog.DiscardHandler)
	before := listeningSockets(t)
	e, err := natsbus.StartEmbedded(natsbus.Options{StoreDir: t.TempDir()}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsbus.Connect(natsbus.Options{}, e, log)
	if err != nil {
		t.Fatalf("the relay's in-process connection: %v", err)
	}
	if got := listeningSockets(t); got != before || e.ClientURL() != "" {
		t.Errorf("nats.listen \"\": %d listening sockets, %d before; client URL %q", got, before, e.ClientURL())
	}
	nc.Close()
	e.Shutdown()

	addr := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	e, err = natsbus.StartEmbedded(natsbus.Options{Listen: addr, StoreDir: t.TempDir()}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if got := listeningSockets(t); got != before+1 || e.ClientURL() != "nats://"+addr {
		t.Errorf("nats.listen %s: %d listening sockets, %d before; client URL %q", addr, got, before, e.ClientURL())
	}
}

// listeningSockets counts the TCP sockets of this process that listen.
func listeningSockets(t *testing.T) int {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 && f[3] == "0A" && inodes[f[9]] { // 0A: LISTEN
				n++
			}
		}
	}
	return n
}

// TestConnectExternalTokenAndCreds holds the two credentials of relay.yaml's
// nats section that TestConnectExternalCredentials leaves out: nats.token
// against a server that requires that token, and nats.credentials, a .creds
// file (a user JWT and its nkey seed), against a server in operator mode
// that trusts the account which signed it. Without them, or with a token
// or a user JWT the server does not accept, the relay is refused.
func TestConnectExternalTokenAndCreds(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	withToken := runAuthServer(t, func(o *server.Options) { o.Authorization = "a-token-the-operator-chose-0123" })
	for name, c := range map[string]struct {
		o     natsbus.Options
		admit bool
	}{
		"token":       {natsbus.Options{URL: withToken.ClientURL(), Token: "a-token-the-operator-chose-0123"}, true},
		"no token":    {natsbus.Options{URL: withToken.ClientURL()}, false},
		"wrong token": {natsbus.Options{URL: withToken.ClientURL(), Token: "a-token-the-operator-chose-0124"}, false},
	} {
		checkConnect(t, name, c.o, c.admit, log)
	}

	operator, trusted := newOperator(t), newOperator(t)
	resolver := &server.MemAccResolver{}
	account := trusted.account(t, resolver)
	withJWT := runAuthServer(t, func(o *server.Options) {
		o.JetStream = false // the accounts here have no JetStream limits; connecting is what is tested
		o.TrustedOperators = []*jwt.OperatorClaims{trusted.claims}
		o.AccountResolver = resolver
	})
	stranger := operator.account(t, &server.MemAccResolver{}) // signed by an operator the server does not trust
	for name, c := range map[string]struct {
		o     natsbus.Options
		admit bool
	}{
		".creds":                     {natsbus.Options{URL: withJWT.ClientURL(), Credentials: account.creds(t, "relay")}, true},
		"no credential":              {natsbus.Options{URL: withJWT.ClientURL()}, false},
		".creds of another operator": {natsbus.Options{URL: withJWT.ClientURL(), Credentials: stranger.creds(t, "relay")}, false},
	} {
		checkConnect(t, name, c.o, c.admit, log)
	}
}

// checkConnect connects with o and checks that the server admits it or
// refuses it as an authorization violation.
func checkConnect(t *testing.T, name string, o natsbus.Options, admit bool, log *slog.Logger) {
	t.Helper()
	nc, err := natsbus.Connect(o, nil, log)
	switch {
	case admit && err != nil:
		t.Errorf("%s: %v", name, err)
	case admit:
		if err := nc.Flush(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		nc.Close()
	case err == nil:
		nc.Close()
		t.Errorf("%s: connected", name)
	case !strings.Contains(err.Error(), "Authorization Violation"):
		t.Errorf("%s: %v, want an authorization violation", name, err)
	}
}

// operatorKeys is a NATS operator, as in a decentralised (JWT) set-up.
type operatorKeys struct {
	kp     nkeys.KeyPair
	claims *jwt.OperatorClaims
}

func newOperator(t *testing.T) operatorKeys {
	t.Helper()
	kp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	claims := jwt.NewOperatorClaims(pub)
	if _, err := claims.Encode(kp); err != nil {
		t.Fatal(err)
	}
	return operatorKeys{kp: kp, claims: claims}
}

// accountKeys is an account an operator signed.
type accountKeys struct{ kp nkeys.KeyPair }

// account creates an account signed by the operator and stores its JWT in
// the resolver.
func (op operatorKeys) account(t *testing.T, resolver *server.MemAccResolver) accountKeys {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	token, err := jwt.NewAccountClaims(pub).Encode(op.kp)
	if err != nil {
		t.Fatal(err)
	}
	if err := resolver.Store(pub, token); err != nil {
		t.Fatal(err)
	}
	return accountKeys{kp: kp}
}

// creds writes a .creds file for a new user of the account.
func (a accountKeys) creds(t *testing.T, name string) string {
	t.Helper()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	claims := jwt.NewUserClaims(pub)
	claims.Name = name
	token, err := claims.Encode(a.kp)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	text, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".creds")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
