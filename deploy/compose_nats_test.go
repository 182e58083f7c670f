// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// runComposeNATS starts compose.yaml's three NATS nodes in this process,
// each from its service's command line as nats-server parses it (JetStream,
// and its config file: node.conf as Compose writes it, with the cluster and
// the routes with their password, including compose/nats.conf), on
// loopback ports in place of the Compose network's names, and waits for
// their JetStream cluster. nats.conf's passwords come from the
// environment, which the caller sets.
func runComposeNATS(t *testing.T, p *types.Project) []*natsserver.Server {
	t.Helper()
	// The route ports are picked free and then bound: another test may
	// take one in between, and that node never becomes ready. Such a start
	// is shut down and tried again on other ports, as eventstest.RunCluster.
	for attempt := 1; ; attempt++ {
		nodes, err := startComposeNATS(t, p)
		if err == nil {
			t.Cleanup(func() {
				for _, s := range nodes {
					s.Shutdown()
					s.WaitForShutdown()
				}
			})
			eventstest.AwaitMetaLeader(t, nodes)
			return nodes
		}
		for _, s := range nodes {
			s.Shutdown()
			s.WaitForShutdown()
		}
		if attempt == 3 {
			t.Fatalf("starting compose.yaml's NATS nodes, 3 times: %v", err)
		}
		t.Logf("starting compose.yaml's NATS nodes: %v; trying again on other ports", err)
	}
}

// startComposeNATS starts the nodes and waits for each to be ready; on
// error it returns those it started, for the caller to shut down.
func startComposeNATS(t *testing.T, p *types.Project) ([]*natsserver.Server, error) {
	names := []string{"nats-1", "nats-2", "nats-3"}
	routePorts := eventstest.FreePorts(t, len(names))
	var nodes []*natsserver.Server
	for i, name := range names {
		onLoopback := func(text string) string {
			text = strings.ReplaceAll(text, "0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", routePorts[i]))
			for k, other := range names {
				text = strings.ReplaceAll(text, other+":6222", fmt.Sprintf("127.0.0.1:%d", routePorts[k]))
			}
			return text
		}
		files := composeNodeFiles(t, p, name, onLoopback)
		args := slices.Clone([]string(p.Services[name].Command))
		for j, arg := range args {
			arg = onLoopback(arg)
			switch local, ok := files[arg]; {
			case ok:
				arg = local
			case arg == "/data":
				arg = t.TempDir()
			case j > 0 && args[j-1] == "--http_port":
				arg = "-1"
			}
			args[j] = arg
		}
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		o, err := natsserver.ConfigureOptions(fs, args, func() {}, func() {}, func() {})
		if err != nil {
			t.Fatalf("%s's command line %v: %v", name, args, err)
		}
		o.Host, o.Port, o.HTTPHost, o.NoLog, o.NoSigs = "127.0.0.1", -1, "127.0.0.1", true, true
		s, err := natsserver.NewServer(o)
		if err != nil {
			return nodes, fmt.Errorf("%s: %w", name, err)
		}
		go s.Start()
		nodes = append(nodes, s)
	}
	for i, s := range nodes {
		if !s.ReadyForConnections(20 * time.Second) {
			return nodes, fmt.Errorf("%s did not become ready (its route port %d taken?)", names[i], routePorts[i])
		}
	}
	return nodes, nil
}

// composeNodeFiles writes the files Compose gives NATS node name (the
// files it mounts and the configs it copies into the container), each
// passed through rewrite, under a temporary directory at their paths in
// the container, so that an include finds its file as in the container. It
// returns the local path of each by its path in the container.
func composeNodeFiles(t *testing.T, p *types.Project, name string, rewrite func(string) string) map[string]string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{}
	put := func(target, content string) {
		local := filepath.Join(root, filepath.FromSlash(target))
		if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(local, []byte(rewrite(content)), 0o600); err != nil {
			t.Fatal(err)
		}
		files[target] = local
	}
	s := p.Services[name]
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind {
			text, err := os.ReadFile(v.Source)
			if err != nil {
				t.Fatalf("%s mounts %s: %v", name, v.Source, err)
			}
			put(v.Target, string(text))
		}
	}
	for _, ref := range s.Configs {
		c, ok := p.Configs[ref.Source]
		if !ok || c.Content == "" {
			t.Fatalf("%s: config %s has no content of its own", name, ref.Source)
		}
		put(ref.Target, c.Content)
	}
	return files
}

// composeNodeConfig parses NATS node name's config file (its --config) as
// nats-server does in the container, with the node's environment.
func composeNodeConfig(t *testing.T, p *types.Project, name string) *natsserver.Options {
	t.Helper()
	s := p.Services[name]
	for k, v := range serviceEnv(t, s.Environment) {
		t.Setenv(k, v)
	}
	conf := flagValue(s.Command, "--config")
	local, ok := composeNodeFiles(t, p, name, func(text string) string { return text })[conf]
	if !ok {
		t.Fatalf("%s reads %s, which Compose does not give it", name, conf)
	}
	o, err := natsserver.ProcessConfigFile(local)
	if err != nil {
		t.Fatalf("%s's %s: %v", name, conf, err)
	}
	return o
}

// connectAsRoute connects to s's route port as a server would, as user
// route with password pass, and returns what s answered until it closed
// the connection or answered a PING.
func connectAsRoute(t *testing.T, s *natsserver.Server, pass string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.ClusterAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("the route port's INFO: %v", err)
	}
	connect, _ := json.Marshal(map[string]any{"user": "route", "pass": pass, "name": "NROGUE", "cluster": "scimrelay"})
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nPING\r\n", connect); err != nil {
		t.Fatal(err)
	}
	var reply strings.Builder
	for {
		line, err := r.ReadString('\n')
		reply.WriteString(line)
		if err != nil || strings.HasPrefix(line, "-ERR") || strings.HasPrefix(line, "PONG") {
			return strings.TrimPrefix(reply.String(), info)
		}
	}
}

// serviceEnv is the environment compose gives a service.
func serviceEnv(t *testing.T, env map[string]*string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range env {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// TestComposeNATSAdmitsOnlyItsUsers runs compose.yaml's shape with its
// files and each service's environment (its three NATS nodes, each started
// from its own command line with the node.conf Compose writes, which
// includes compose/nats.conf and clusters them through their
// password-protected routes; relay-scim, relay-sinks-1 and
// relay-sinks-2 with theirs, the streams with their three replicas, the
// demo sink pointed at a receiver here) and holds what its header says: NATS admits no client
// without a user, the nodes route to each other only with the route
// password, the sink workers' user may not publish an event, each role
// works as its user (an event parked after its failed deliveries is read
// back and delivered), each service holds only its secrets, and the relays
// and the receiver run hardened.
func TestComposeNATSAdmitsOnlyItsUsers(t *testing.T) {
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	routePass := composeEnv["NATS_ROUTE_PASSWORD"]
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s := p.Services[name]
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Target == "/etc/nats/nats.conf" && strings.HasSuffix(v.Source, "compose/nats.conf") && v.ReadOnly
		}) {
			t.Errorf("%s does not mount compose/nats.conf read-only at /etc/nats/nats.conf: %v", name, s.Volumes)
		}
		// Its config file is compose/nats.conf's users and the cluster.
		o := composeNodeConfig(t, p, name)
		if len(o.Users) != 2 {
			t.Errorf("%s's %s has %d users, want compose/nats.conf's scim and sinks", name, flagValue(s.Command, "--config"), len(o.Users))
		}
		// The routes: the node listens for them with a password, and
		// gives it to every node (itself included, which it ignores).
		if c := o.Cluster; c.Name != "scimrelay" || c.Host != "0.0.0.0" || c.Port != 6222 || c.Username != "route" || c.Password != routePass {
			t.Errorf("%s's cluster: %s on %s:%d, user %q, route password %t", name, c.Name, c.Host, c.Port, c.Username, c.Password == routePass)
		}
		var peers []string
		for _, u := range o.Routes {
			if pass, ok := u.User.Password(); !ok || u.User.Username() != "route" || pass != routePass {
				t.Errorf("%s: route to %s without the route password", name, u.Host)
			}
			peers = append(peers, u.Host)
		}
		if slices.Sort(peers); !slices.Equal(peers, []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}) {
			t.Errorf("%s routes to %v; want the three nodes", name, peers)
		}
	}
	nodeEnv := serviceEnv(t, p.Services["nats-1"].Environment)
	for k, v := range nodeEnv {
		t.Setenv(k, v) // nats.conf reads the passwords from the node's environment
	}
	conf, err := natsserver.ProcessConfigFile("compose/nats.conf")
	if err != nil {
		t.Fatalf("compose/nats.conf: %v", err)
	}
	if len(conf.Users) != 2 {
		t.Fatalf("compose/nats.conf has %d users, want scim and sinks", len(conf.Users))
	}
	nodes := runComposeNATS(t, p)
	natsURL := eventstest.ClusterURLs(nodes)
	// A server without the route password cannot join the cluster.
	for what, pass := range map[string]string{"no password": "", "a wrong password": composeEnv["NATS_ROUTE_PASSWORD"] + "x"} {
		if reply := connectAsRoute(t, nodes[0], pass); !strings.Contains(reply, "Authorization Violation") {
			t.Errorf("nats-1 answers a route with %s: %q; want an authorization violation", what, reply)
		}
	}

	// Each service's secrets: the workers get no SCIM or admin token, the
	// receiver nothing but the webhook secret.
	scimEnv := serviceEnv(t, p.Services["relay-scim"].Environment)
	sinksEnv := serviceEnv(t, p.Services["relay-sinks-1"].Environment)
	for name, env := range map[string]map[string]string{"relay-sinks-1": sinksEnv, "relay-sinks-2": serviceEnv(t, p.Services["relay-sinks-2"].Environment)} {
		if got := slices.Sorted(maps.Keys(env)); !slices.Equal(got, []string{"DEMO_WEBHOOK_SECRET", "NATS_PASSWORD", "NATS_USER"}) {
			t.Errorf("%s is given %v; want the webhook secret and its NATS user alone", name, got)
		}
	}
	if got := slices.Sorted(maps.Keys(serviceEnv(t, p.Services["receiver"].Environment))); !slices.Equal(got, []string{"SCIMRELAY_RECEIVER_SECRET"}) {
		t.Errorf("the receiver is given %v", got)
	}
	// As the chart's pods: a read-only root, no capability, no privilege
	// gained through a set-uid file.
	for _, name := range []string{"relay-scim", "relay-sinks-1", "relay-sinks-2", "receiver"} {
		s := p.Services[name]
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s runs with read_only %t, cap_drop %v, security_opt %v", name, s.ReadOnly, s.CapDrop, s.SecurityOpt)
		}
	}

	// A receiver that fails the first deliveries, quick retries included,
	// so that the worker parks the resource and reads it back from the
	// stream as user sinks.
	var mu sync.Mutex
	var bodies []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, string(b))
		if len(bodies) <= 4 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	relayYAML, err := os.ReadFile("compose/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	onNATS := func(cfg map[string]any) {
		natsCfg := cfg["nats"].(map[string]any)
		natsCfg["url"] = natsURL // its replicas stay 3
		sink := cfg["sinks"].([]any)[0].(map[string]any)
		sink["url"], sink["retry"] = recv.URL+"/", []string{"1s"}
	}
	scim := runShape(t, string(relayYAML), "scim", scimEnv, onNATS)
	runShape(t, string(relayYAML), "sinks", sinksEnv, onNATS)
	runShape(t, string(relayYAML), "sinks", serviceEnv(t, p.Services["relay-sinks-2"].Environment), onNATS)

	// NATS: no user, a wrong password, or the workers' user publishing an
	// event, all refused.
	for what, opts := range map[string][]nats.Option{
		"no user":          nil,
		"a wrong password": {nats.UserInfo("sinks", sinksEnv["NATS_PASSWORD"]+"x")},
	} {
		if nc, err := nats.Connect(natsURL, opts...); err == nil {
			nc.Close()
			t.Errorf("NATS admits a client with %s", what)
		}
	}
	refused := make(chan error, 1)
	worker, err := nats.Connect(natsURL, nats.UserInfo(sinksEnv["NATS_USER"], sinksEnv["NATS_PASSWORD"]),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case refused <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("the workers' user: %v", err)
	}
	defer worker.Close()
	if err := worker.Publish("scimrelay.default.user.created.forged", []byte(`{"specversion":"1.0"}`)); err != nil {
		t.Fatal(err)
	}
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refused:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("the workers' publish of an event: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the workers' user published an event on scimrelay.> unrefused")
	}

	// Each role works as its user: a user created through SCIM reaches the
	// receiver after its first deliveries failed.
	req, err := http.NewRequest(http.MethodPost, scim.scimURL+"/scim/v2/default/Users",
		strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"compose@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+scimEnv["DEFAULT_SCIM_TOKEN"])
	req.Header.Set("Content-Type", "application/scim+json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("SCIM create: %d", res.StatusCode)
	}
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) < 5 || !strings.Contains(bodies[len(bodies)-1], "compose@example.com") {
			return fmt.Errorf("the receiver got %d deliveries", len(bodies))
		}
		return nil
	})

	// Only the front end's event is in the stream: the forged one is not.
	owner, err := nats.Connect(natsURL, nats.UserInfo(scimEnv["NATS_USER"], scimEnv["NATS_PASSWORD"]))
	if err != nil {
		t.Fatalf("the front end's user: %v", err)
	}
	defer owner.Close()
	js, err := jetstream.New(owner)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(t.Context(), "SCIMRELAY")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("the stream holds %d events, want the one created", n)
	}
	if c := st.CachedInfo().Cluster; c == nil || len(c.Replicas) != 2 {
		t.Errorf("the stream's cluster: %+v; want a leader and two replicas, on the three nodes", c)
	}
}

// natsDefaultSyncInterval is how often nats-server writes JetStream's store
// to disk when its configuration says nothing (its defaultSyncInterval).
const natsDefaultSyncInterval = 2 * time.Minute

// TestComposeRelayKnowsItsNATSSyncInterval holds deploy/compose/relay.yaml's
// comment: "The three nodes share this host (and its power), and write to
// disk every 2m (nats-server's default): the relay keeps published events
// 3 x 2m, so that a crash of the host loses none." The relay's
// nats.sync_interval must be what compose.yaml's NATS nodes do: shorter (or
// 0, "the nodes are on separate machines"), and a crash of the one host
// loses events NATS acknowledged but had not written.
func TestComposeRelayKnowsItsNATSSyncInterval(t *testing.T) {
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	var nodes time.Duration
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		o := composeNodeConfig(t, p, name)
		if o.SyncAlways {
			t.Fatalf("%s writes every message to disk (sync_always); the relay.yaml comment says every 2m", name)
		}
		every := o.SyncInterval
		if every == 0 {
			every = natsDefaultSyncInterval
		}
		if nodes != 0 && every != nodes {
			t.Fatalf("the nodes write to disk at different intervals: %s and %s", nodes, every)
		}
		nodes = every
	}
	text, err := os.ReadFile("compose/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"NATS_USER": "scim", "NATS_PASSWORD": composeEnv["NATS_SCIM_PASSWORD"]}
	for k, v := range composeEnv {
		env[k] = v
	}
	cfg, err := config.Parse(text, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(cfg.NATS.SyncInterval); got != nodes {
		t.Errorf("compose/relay.yaml: nats.sync_interval %s, but compose.yaml's NATS nodes, all on one host, write to disk every %s: the relay would delete from its outbox events a crash of the host can still lose", got, nodes)
	}
	if cfg.NATS.Stream.Replicas != 3 {
		t.Errorf("compose/relay.yaml: stream replicas %d; its header says replicated streams on the 3-node cluster", cfg.NATS.Stream.Replicas)
	}
}
