// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

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
// files and each service's environment (a NATS node from compose/nats.conf,
// relay-scim and relay-sinks-1 with theirs, the demo sink pointed at a
// receiver here) and holds what its header says: NATS admits no client
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
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s := p.Services[name]
		if flagValue(s.Command, "--config") != "/etc/nats/nats.conf" || !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Target == "/etc/nats/nats.conf" && strings.HasSuffix(v.Source, "compose/nats.conf") && v.ReadOnly
		}) {
			t.Errorf("%s does not read compose/nats.conf: %v", name, s.Command)
		}
		// The routes: the node listens for them with a password, and
		// gives it to each other node.
		urls := append([]string{flagValue(s.Command, "--cluster")}, strings.Split(flagValue(s.Command, "--routes"), ",")...)
		for _, u := range urls {
			parsed, err := url.Parse(u)
			if pass, ok := parsed.User.Password(); err != nil || !ok || pass != composeEnv["NATS_ROUTE_PASSWORD"] {
				t.Errorf("%s: route URL %s without the route password", name, u)
			}
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
	ns := eventstest.RunServerWith(t, t.TempDir(), -1, func(o *natsserver.Options) { o.Users = conf.Users })

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
		natsCfg["url"] = ns.ClientURL()
		natsCfg["stream"].(map[string]any)["replicas"] = 1 // one node here
		sink := cfg["sinks"].([]any)[0].(map[string]any)
		sink["url"], sink["retry"] = recv.URL+"/", []string{"1s"}
	}
	scim := runShape(t, string(relayYAML), "scim", scimEnv, onNATS)
	runShape(t, string(relayYAML), "sinks", sinksEnv, onNATS)

	// NATS: no user, a wrong password, or the workers' user publishing an
	// event, all refused.
	for what, opts := range map[string][]nats.Option{
		"no user":          nil,
		"a wrong password": {nats.UserInfo("sinks", sinksEnv["NATS_PASSWORD"]+"x")},
	} {
		if nc, err := nats.Connect(ns.ClientURL(), opts...); err == nil {
			nc.Close()
			t.Errorf("NATS admits a client with %s", what)
		}
	}
	refused := make(chan error, 1)
	worker, err := nats.Connect(ns.ClientURL(), nats.UserInfo(sinksEnv["NATS_USER"], sinksEnv["NATS_PASSWORD"]),
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
	owner, err := nats.Connect(ns.ClientURL(), nats.UserInfo(scimEnv["NATS_USER"], scimEnv["NATS_PASSWORD"]))
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
}
