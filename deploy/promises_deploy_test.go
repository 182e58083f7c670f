// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// The README's "Deploying and scaling out" section holds promises about the
// files beside this test; the ones the other tests of this package leave
// out are held here, with the relay run in the shape a file describes where
// no Docker engine or cluster is needed for it.

// operator is a NATS operator with one account for the relay, as an
// operator-mode (JWT) NATS deployment has it.
type operator struct {
	kp, account nkeys.KeyPair
	claims      *jwt.OperatorClaims
	resolver    *natsserver.MemAccResolver
	system      string // the system account's public key
}

func newOperator(t *testing.T) *operator {
	t.Helper()
	o := &operator{resolver: &natsserver.MemAccResolver{}}
	var err error
	if o.kp, err = nkeys.CreateOperator(); err != nil {
		t.Fatal(err)
	}
	opPub, _ := o.kp.PublicKey()
	o.claims = jwt.NewOperatorClaims(opPub)
	// JetStream needs a system account; the relay's account may use it.
	addAccount := func(name string, jetStream bool) nkeys.KeyPair {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if jetStream {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		text, err := ac.Encode(o.kp)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.resolver.Store(pub, text); err != nil {
			t.Fatal(err)
		}
		return kp
	}
	o.system, _ = addAccount("SYS", false).PublicKey()
	o.account = addAccount("SCIMRELAY", true)
	return o
}

// creds writes a .creds file (a user JWT and its seed) of a user that
// signer signed for the relay's account; the operator's account key signs
// a real user, any other key a forgery.
func (o *operator) creds(t *testing.T, signer nkeys.KeyPair) string {
	t.Helper()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	userPub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(userPub)
	accPub, _ := o.account.PublicKey()
	uc.IssuerAccount = accPub
	userJWT, err := uc.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	text, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "relay.creds")
	if err := os.WriteFile(path, text, 0o400); err != nil {
		t.Fatal(err)
	}
	return path
}

// server runs an operator-mode NATS with JetStream that admits only users
// of its account.
func (o *operator) server(t *testing.T) *natsserver.Server {
	t.Helper()
	return eventstest.RunServerWith(t, t.TempDir(), -1, func(opts *natsserver.Options) {
		opts.TrustedOperators = []*jwt.OperatorClaims{o.claims}
		opts.AccountResolver = o.resolver
		opts.SystemAccount = o.system
	})
}

// shape is a relay run as a deployment file runs it: the binary, the
// file's relay.yaml, its role and environment; only addresses and
// directories changed to this machine's (loopback ports, temporary
// directories, the test's NATS).
type shape struct {
	scimURL, adminURL string
	dataDir           string
}

// runShape starts `scimrelay serve --role role` with relayYAML, and stops it
// with SIGTERM when the test ends. set changes keys of relay.yaml first.
func runShape(t *testing.T, relayYAML, role string, env map[string]string, set func(map[string]any)) *shape {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(relayYAML), &cfg); err != nil {
		t.Fatal(err)
	}
	s := &shape{dataDir: t.TempDir()}
	scimAddr := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	cfg["listen"], cfg["admin_listen"], cfg["data_dir"] = scimAddr, adminAddr, s.dataDir
	s.scimURL, s.adminURL = "http://"+scimAddr, "http://"+adminAddr
	if set != nil {
		set(cfg)
	}
	text, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(scimrelay(t), "serve", "--role", role, "--config", path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(45 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("role %s did not stop within 45 s of SIGTERM", role)
		}
	})
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("role %s exited (%v):\n%s", role, err, out)
		default:
		}
		if status, _ := get(t, s.adminURL+"/readyz", ""); status != http.StatusOK {
			return fmt.Errorf("role %s: /readyz answers %d", role, status)
		}
		return nil
	})
	return s
}

// get sends a GET with a bearer token ("": none) and returns the status and
// body; a refused connection is status 0.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// TestChartShapeRefusesAttackers runs both roles of the Helm chart with
// the relay.yaml it renders, each with its own Secret, on a NATS that asks
// for credentials (nats.credentialsSecret), and holds "Who reaches what": the
// relay gets in with its .creds file where the chart mounts it, a client
// without one or with a forged one does not; the SCIM port answers only a
// tenant's token; the admin API of each pod only the admin token (here
// generated into the pod's data directory, as without secret.adminToken),
// while /healthz, /readyz and /metrics need none.
func TestChartShapeRefusesAttackers(t *testing.T) {
	m := mustRender(t, "scimrelay", `
config:
  tenants:
    - name: acme
      tokens: ["${ACME_SCIM_TOKEN}"]
secret:
  scimTokens: {ACME_SCIM_TOKEN: acme-token-0123456789abcdef}
nats:
  credentialsSecret: {name: scimrelay-nats, key: relay.creds}
`)
	relayYAML, env := m.relayYAML(t), m.envOf(t, "scim")
	if _, ok := m.secretEnv(t)["SCIMRELAY_ADMIN_TOKEN"]; ok {
		t.Fatal("the Secret carries an admin token although secret.adminToken is empty")
	}
	op := newOperator(t)
	ns := op.server(t)
	creds := op.creds(t, op.account)
	onNATS := func(cfg map[string]any) {
		natsCfg := cfg["nats"].(map[string]any)
		if natsCfg["credentials"] != "/etc/scimrelay-nats/relay.creds" {
			t.Fatalf("relay.yaml reads NATS credentials from %v, not the chart's mount", natsCfg["credentials"])
		}
		natsCfg["url"], natsCfg["credentials"] = ns.ClientURL(), creds
		// One server here, where the NATS chart runs three.
		natsCfg["stream"].(map[string]any)["replicas"] = 1
	}
	// Each role with what its pod gets: the workers' Secret holds no
	// ACME_SCIM_TOKEN (TestChartKeepsSCIMTokensFromTheWorkers), and they
	// start without it.
	scim := runShape(t, relayYAML, "scim", env, onNATS)
	sinks := runShape(t, relayYAML, "sinks", m.envOf(t, "sinks"), onNATS)

	// NATS: the relay's credentials admit it (both roles are ready); no
	// credentials, or a user signed by a key that is not the account's, do
	// not.
	forger, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	for what, opts := range map[string][]nats.Option{
		"no credentials":     nil,
		"forged credentials": {nats.UserCredentials(op.creds(t, forger))},
	} {
		if nc, err := nats.Connect(ns.ClientURL(), opts...); err == nil {
			nc.Close()
			t.Errorf("NATS admits a client with %s", what)
		}
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(creds))
	if err != nil {
		t.Fatalf("the relay's credentials: %v", err)
	}
	nc.Close()

	// SCIM: a tenant's token, nothing else.
	users := scim.scimURL + "/scim/v2/acme/Users"
	for what, token := range map[string]string{"no token": "", "a wrong token": "acme-token-0123456789abcdeX"} {
		if status, _ := get(t, users, token); status != http.StatusUnauthorized {
			t.Errorf("SCIM with %s: %d, want 401", what, status)
		}
	}
	if status, body := get(t, users, env["ACME_SCIM_TOKEN"]); status != http.StatusOK {
		t.Errorf("SCIM with the tenant's token: %d %s", status, body)
	}

	// Admin port: health and metrics open, the admin API behind the token
	// each pod generated.
	for role, s := range map[string]*shape{"scim": scim, "sinks": sinks} {
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			if status, _ := get(t, s.adminURL+p, ""); status != http.StatusOK {
				t.Errorf("%s pod: GET %s without a token: %d, want 200", role, p, status)
			}
		}
		b, err := os.ReadFile(filepath.Join(s.dataDir, "admin.token"))
		if err != nil {
			t.Fatalf("%s pod: no generated admin token: %v", role, err)
		}
		adminToken := strings.TrimSpace(string(b))
		for _, p := range []string{"/admin/v1/backup", "/admin/v1/tenants", "/admin/v1/sinks", "/admin/v1/events"} {
			for what, token := range map[string]string{"no token": "", "a wrong token": adminToken + "x", "a tenant's token": env["ACME_SCIM_TOKEN"]} {
				if status, _ := get(t, s.adminURL+p, token); status != http.StatusUnauthorized {
					t.Errorf("%s pod: GET %s with %s: %d, want 401", role, p, what, status)
				}
			}
		}
		if status, body := get(t, s.adminURL+"/admin/v1/sinks", adminToken); status != http.StatusOK {
			t.Errorf("%s pod: the admin API with its token: %d %s", role, status, body)
		}
	}
	if status, _ := get(t, sinks.scimURL+"/scim/v2/acme/Users", env["ACME_SCIM_TOKEN"]); status != 0 {
		t.Errorf("a sinks pod answers SCIM: %d", status)
	}
}

// TestChartRollsPodsOnChange holds "pods roll when the ConfigMap or the
// chart's Secret changes": the pod templates' checksums follow each. A
// Secret of your own (secret.existingSecret) has no checksum, so the README
// gives the restart that rolls the pods then, naming the chart's objects.
func TestChartRollsPodsOnChange(t *testing.T) {
	m := mustRender(t, "scimrelay", "secret: {existingSecret: scimrelay-secrets}")
	section := readmeSection(t, "### Kubernetes (Helm)", "### systemd")
	restart := regexp.MustCompile("`kubectl -n scimrelay rollout restart ([^`]+)`").FindStringSubmatch(section)
	want := "statefulset/" + m.statefulSets[0].Name + " deployment/" + m.deployments[0].Name
	if restart == nil || strings.Join(strings.Fields(restart[1]), " ") != want {
		t.Errorf("the README restarts %v after a change to secret.existingSecret; want rollout restart %s", restart, want)
	}
	if !strings.Contains(section, "cannot see into a Secret of your own") {
		t.Error("the README does not say that a change to secret.existingSecret rolls no pod")
	}
	if !strings.Contains(strings.Join(strings.Fields(section), " "), "nor into a NATS credentials Secret (`nats.credentialsSecret`") {
		t.Error("the README does not say that a change to a NATS credentials Secret rolls no pod")
	}

	annotations := func(values string) map[string]map[string]string {
		m := mustRender(t, "scimrelay", values)
		return map[string]map[string]string{"scim": m.podOf(t, "scim").Annotations, "sinks": m.podOf(t, "sinks").Annotations}
	}
	base := annotations("")
	config := annotations("config: {log: {level: debug}}")
	secret := annotations("secret: {webhookSecrets: {CRM_WEBHOOK_SECRET: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}}")
	for _, role := range []string{"scim", "sinks"} {
		if config[role]["checksum/config"] == base[role]["checksum/config"] {
			t.Errorf("%s pods do not roll when relay.yaml changes", role)
		}
		if secret[role]["checksum/secret"] == base[role]["checksum/secret"] {
			t.Errorf("%s pods do not roll when the Secret changes", role)
		}
		if secret[role]["checksum/config"] != base[role]["checksum/config"] {
			t.Errorf("%s pods: a Secret change changes the config checksum", role)
		}
	}
}

// TestChartSetsTheKeysItOwns holds "the chart sets listen, admin_listen,
// data_dir and nats.url itself": values that set them under config: do not
// reach relay.yaml, so that the pods listen where their Services and
// probes point and keep data on their volume.
func TestChartSetsTheKeysItOwns(t *testing.T) {
	m := mustRender(t, "scimrelay", `
config:
  listen: 127.0.0.1:9999
  admin_listen: 127.0.0.1:9998
  data_dir: /tmp/elsewhere
  nats: {url: "nats://elsewhere:4222"}
`)
	var cfg struct {
		Listen      string `json:"listen"`
		AdminListen string `json:"admin_listen"`
		DataDir     string `json:"data_dir"`
		NATS        struct {
			URL         string `json:"url"`
			Credentials string `json:"credentials"`
		} `json:"nats"`
	}
	if err := yaml.Unmarshal([]byte(m.relayYAML(t)), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:8080" || cfg.AdminListen != "0.0.0.0:8081" || cfg.DataDir != "/var/lib/scimrelay" || cfg.NATS.URL != "nats://nats:4222" {
		t.Errorf("relay.yaml takes config: over the chart: %+v", cfg)
	}
}

// TestChartNetworkPolicyLimits holds "Egress is not restricted" (workers
// must reach the webhooks) and "A NATS in another namespace needs
// networkPolicy.nats.enabled: false": then no policy selects the NATS
// pods, while the relay's own stay.
func TestChartNetworkPolicyLimits(t *testing.T) {
	m := mustRender(t, "scimrelay", "")
	for _, p := range m.netpols {
		for _, pt := range p.Spec.PolicyTypes {
			if pt == networkingv1.PolicyTypeEgress {
				t.Errorf("NetworkPolicy %s restricts egress", p.Name)
			}
		}
	}
	natsPod := map[string]string{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"}
	m = mustRender(t, "scimrelay", "networkPolicy: {nats: {enabled: false}}")
	if len(m.netpols) != 2 {
		t.Errorf("with networkPolicy.nats.enabled false: %d NetworkPolicies, want the 2 of the relay's pods", len(m.netpols))
	}
	for _, p := range m.netpols {
		if selects(t, &p.Spec.PodSelector, natsPod) {
			t.Errorf("with networkPolicy.nats.enabled false, NetworkPolicy %s still selects the NATS pods", p.Name)
		}
	}
}

// TestChartNATSPolicyOnASharedNATS holds what the README and the install
// notes say of the policy on the NATS pods: on by default, it cuts off
// whatever it does not list (leafnodes, gateways, other applications'
// clients), networkPolicy.nats.extraIngress and clientsFrom open what
// others use, and while the relay has no NATS credentials the notes warn
// that any pod admitted to 4222 can forge events.
func TestChartNATSPolicyOnASharedNATS(t *testing.T) {
	natsPod := map[string]string{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"}
	inNamespace := func(ns string) pod {
		return pod{labels: map[string]string{"app": "x"}, namespace: map[string]string{"kubernetes.io/metadata.name": ns}}
	}
	other := pod{labels: map[string]string{"app": "billing"}, sameNamespace: true}
	m := mustRender(t, "scimrelay", "")
	for _, c := range []struct {
		what string
		port int32
	}{{"a leafnode", 7422}, {"a gateway", 7222}, {"another application's client", 4222}, {"an MQTT client", 1883}} {
		if admits(t, m.netpols, natsPod, "", c.port, other) {
			t.Errorf("by default the NATS policy admits %s on %d; the README says it is cut off", c.what, c.port)
		}
	}
	m = mustRender(t, "scimrelay", `
networkPolicy:
  nats:
    clientsFrom: [{podSelector: {matchLabels: {app: billing}}}]
    extraIngress:
      - ports: [{port: 7422, protocol: TCP}]
        from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: edge}}}]
`)
	for _, c := range []struct {
		what string
		port int32
		from pod
		want bool
	}{
		{"a leafnode from edge", 7422, inNamespace("edge"), true},
		{"a client from edge", 4222, inNamespace("edge"), false},
		{"a leafnode from elsewhere", 7422, inNamespace("elsewhere"), false},
		{"billing's client", 4222, other, true},
	} {
		if got := admits(t, m.netpols, natsPod, "", c.port, c.from); got != c.want {
			t.Errorf("with extraIngress and clientsFrom: %s on %d: admitted %v, want %v", c.what, c.port, got, c.want)
		}
	}

	notes := func(values string) string {
		files, err := render(t, "scimrelay", values)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(files["scimrelay/templates/NOTES.txt"]), " ")
	}
	const forge = "any pod that can connect to port 4222 can publish on scimrelay.> an event the relay signs and delivers"
	const cutOff = "leafnodes (7422), gateways (7222), websocket and MQTT listeners"
	for _, c := range []struct {
		values        string
		warns, policy bool
		more          string
	}{
		{"", true, true, "Only NetworkPolicy scimrelay-nats stands in the way"},
		{"networkPolicy: {nats: {enabled: false}}", true, false, "that is any pod in the cluster"},
		{"nats: {credentialsSecret: {name: scimrelay-nats}}", false, true, ""},
		{`config: {nats: {user: relay, password: "${NATS_PASSWORD}"}}`, false, true, ""},
		{"networkPolicy: {enabled: false}", true, false, "that is any pod in the cluster"},
	} {
		n := notes(c.values)
		if strings.Contains(n, forge) != c.warns || !strings.Contains(n, c.more) {
			t.Errorf("values %q: the notes warn of forged events %v (want %v), saying %q:\n%s", c.values, strings.Contains(n, forge), c.warns, c.more, n)
		}
		if strings.Contains(n, cutOff) != c.policy {
			t.Errorf("values %q: the notes list what the NATS policy cuts off: %v, want %v:\n%s", c.values, !c.policy, c.policy, n)
		}
	}

	section := strings.Join(strings.Fields(readmeSection(t, "### Kubernetes (Helm)", "### systemd")), " ")
	for _, want := range []string{cutOff, "`networkPolicy.nats.extraIngress`", "`TestChartNATSPolicyOnASharedNATS`"} {
		if !strings.Contains(section, want) {
			t.Errorf("the README's Helm section does not say %q", want)
		}
	}
}

// TestChartPersistenceSizeIsSetOnce holds the README's way to grow the
// scim pod's volume: scim.persistence.size is in the StatefulSet's
// volumeClaimTemplates, which an upgrade cannot change, so the README
// patches the claim the StatefulSet made, by its name.
func TestChartPersistenceSizeIsSetOnce(t *testing.T) {
	m := mustRender(t, "scimrelay", "scim: {persistence: {size: 7Gi}}")
	sts := m.statefulSets[0]
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String() != "7Gi" {
		t.Fatalf("scim.persistence.size 7Gi gives volumeClaimTemplates %+v", sts.Spec.VolumeClaimTemplates)
	}
	section := readmeSection(t, "### Kubernetes (Helm)", "### systemd")
	patch := regexp.MustCompile("`kubectl -n scimrelay patch pvc (\\S+) -p '([^']+)'`").FindStringSubmatch(section)
	if patch == nil {
		t.Fatal("the README does not say how to grow the scim pod's volume")
	}
	if want := sts.Spec.VolumeClaimTemplates[0].Name + "-" + sts.Name + "-0"; patch[1] != want {
		t.Errorf("the README patches PersistentVolumeClaim %s; the StatefulSet's is %s", patch[1], want)
	}
	var body struct {
		Spec struct {
			Resources struct {
				Requests map[string]string `json:"requests"`
			} `json:"resources"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict([]byte(patch[2]), &body); err != nil || body.Spec.Resources.Requests["storage"] == "" {
		t.Errorf("the README's patch %s does not set spec.resources.requests.storage (%v)", patch[2], err)
	}
	if !strings.Contains(section, "`scim.persistence.size`") || !strings.Contains(section, "allowVolumeExpansion") {
		t.Error("the README does not say that scim.persistence.size is set once and that the StorageClass must allow expansion")
	}
}

// readmeSection returns the README's text from the line start to the next
// line starting with end.
func readmeSection(t *testing.T, start, end string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n"+start+"\n")
	if i < 0 {
		t.Fatalf("README.md has no line %q", start)
	}
	text = text[i+1:]
	if j := strings.Index(text, "\n"+end); j >= 0 {
		text = text[:j]
	}
	return text
}

// TestREADMEHelmInstall renders the chart with the README's my-values.yaml,
// as its `helm install scimrelay ... -f my-values.yaml` does, with a Secret
// holding the keys its comment names: relay.yaml validates, the Service the
// README routes to exists on the port it names, and the README's first
// token command runs in the pod it names, reading the pod's relay.yaml.
func TestREADMEHelmInstall(t *testing.T) {
	section := readmeSection(t, "### Kubernetes (Helm)", "### systemd")
	block := regexp.MustCompile("(?s)```yaml\n# my-values.yaml\n(.*?)```").FindStringSubmatch(section)
	if block == nil {
		t.Fatal("the README's Helm section has no my-values.yaml")
	}
	values := block[1]
	m := mustRender(t, "scimrelay", values)
	checkNames(t, m)

	// The existing Secret holds what its comment says.
	comment := regexp.MustCompile(`existingSecret: (\S+)\s+# (.*)`).FindStringSubmatch(values)
	if comment == nil {
		t.Fatal("my-values.yaml names no existing Secret with its keys")
	}
	env := map[string]string{}
	for _, k := range strings.Split(comment[2], ", ") {
		env[k] = strings.ToLower(k) + "-0123456789abcdef"
	}
	env["CRM_WEBHOOK_SECRET"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	checkRelayYAML(t, "my-values.yaml's relay.yaml", m.relayYAML(t), env)
	for _, role := range []string{"scim", "sinks"} {
		ef := m.podOf(t, role).Spec.Containers[0].EnvFrom
		if len(ef) != 1 || ef[0].SecretRef == nil || ef[0].SecretRef.Name != comment[1] {
			t.Errorf("%s pods take their environment from %+v, not Secret %s", role, ef, comment[1])
		}
	}

	route := regexp.MustCompile("Route HTTPS from your ingress to Service `([^`]+)`, port (\\d+)").FindStringSubmatch(section)
	if route == nil {
		t.Fatal("the README names no Service to route to")
	}
	svc := m.service(t, route[1])
	if len(svc.Spec.Ports) != 1 || fmt.Sprint(svc.Spec.Ports[0].Port) != route[2] || !selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, m.podOf(t, "scim").Labels) {
		t.Errorf("Service %s: %+v; the README routes to port %s of the scim pod", route[1], svc.Spec, route[2])
	}

	exec := regexp.MustCompile("`kubectl -n (\\S+) exec (\\S+) -- scimrelay ([^`]+)`").FindStringSubmatch(section)
	if exec == nil {
		t.Fatal("the README has no kubectl exec for the first token")
	}
	sts := m.statefulSets[0]
	if exec[1] != "scimrelay" || exec[2] != sts.Name+"-0" {
		t.Errorf("the README execs in %s/%s; the scim pod is scimrelay/%s-0", exec[1], exec[2], sts.Name)
	}
	args := strings.Fields(exec[3])
	checkCommandLine(t, "the README's token command", args)
	if got, want := flagValue(args, "--config"), flagValue(sts.Spec.Template.Spec.Containers[0].Args, "--config"); got != want {
		t.Errorf("the README's token command reads %s, the pod's relay reads %s", got, want)
	}
	if tenant := flagValue(args, "--tenant"); !strings.Contains(values, "name: "+tenant) {
		t.Errorf("the README creates a token for tenant %s, which my-values.yaml does not define", tenant)
	}
}

// TestComposeReceiverAndExposure holds the compose shape's "a demo
// receiver" and what it exposes: the demo sink delivers to the receiver
// service, which verifies with the sink's secret; only the scim relay
// publishes ports (the admin port on loopback), so that nothing outside
// the host reaches NATS (which admits only its users, each with a
// password) or a worker.
func TestComposeReceiverAndExposure(t *testing.T) {
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	recv, ok := p.Services["receiver"]
	if !ok || len(recv.Command) == 0 || recv.Command[0] != "receive" {
		t.Fatalf("no receiver service running scimrelay receive: %+v", recv.Command)
	}
	checkCommandLine(t, "receiver", recv.Command)
	text, err := os.ReadFile("compose/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Sinks []struct {
			URL    string `json:"url"`
			Secret string `json:"secret"`
		} `json:"sinks"`
	}
	if err := yaml.Unmarshal(text, &cfg); err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(flagValue(recv.Command, "--listen"), ":")
	if len(cfg.Sinks) != 1 || cfg.Sinks[0].URL != "http://receiver:"+port+"/" {
		t.Errorf("the demo sink delivers to %+v, not the receiver on port %s", cfg.Sinks, port)
	}
	secret := recv.Environment["SCIMRELAY_RECEIVER_SECRET"]
	if secret == nil || len(cfg.Sinks) == 1 && os.Expand(cfg.Sinks[0].Secret, func(k string) string { return composeEnv[k] }) != *secret {
		t.Errorf("the receiver verifies with %v, not the demo sink's secret", secret)
	}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			switch {
			case name == "relay-scim" && port.Target == 8080:
			case name == "relay-scim" && port.Target == 8081 && port.HostIP == "127.0.0.1":
			default:
				t.Errorf("%s publishes port %d on %q", name, port.Target, port.HostIP)
			}
		}
	}
}

// TestSystemdREADME holds deploy/systemd/README.md against the unit: the
// user it creates is the unit's, every scimrelay command it gives is one
// the binary accepts, reading the relay.yaml the unit's relay reads, and
// the first token is read from the file serve writes in the unit's state
// directory.
func TestSystemdREADME(t *testing.T) {
	readme, key := systemdFiles(t)
	user := regexp.MustCompile(`useradd --system .* (\S+)\n`).FindStringSubmatch(string(readme))
	if user == nil || user[1] != key("User") || key("User") == "root" {
		t.Errorf("the README creates user %v; the unit runs as %s", user, key("User"))
	}
	conf := flagValue(strings.Fields(key("ExecStart")), "--config")
	commands := regexp.MustCompile(`\bscimrelay ((?:check|token|subscriber|serve|reload|backup)\b[^`+"`"+`\n#)']*)`).FindAllStringSubmatch(string(readme), -1)
	if len(commands) < 3 {
		t.Fatalf("found %d scimrelay commands in the README", len(commands))
	}
	for _, c := range commands {
		args := strings.Fields(c[1])
		checkCommandLine(t, "deploy/systemd/README.md", args)
		if got := flagValue(args, "--config"); got != conf {
			t.Errorf("the README runs scimrelay %s with --config %q; the unit's relay reads %s", c[1], got, conf)
		}
	}
	state := "/var/lib/" + key("StateDirectory")
	if !strings.Contains(string(readme), "cat "+state+"/initial-token") {
		t.Errorf("the README does not read the first token from %s/initial-token", state)
	}
}

// TestNATSVersionTheREADMENames holds "the tests run nats-server X": the
// version in go.mod, which every test's in-process server is.
func TestNATSVersionTheREADMENames(t *testing.T) {
	section := readmeSection(t, "## Deploying and scaling out", "## Performance")
	m := regexp.MustCompile(`the tests run\s+nats-server (v?[0-9.]+)`).FindStringSubmatch(section)
	if m == nil {
		t.Fatal("the README does not say which nats-server the tests run")
	}
	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	v := regexp.MustCompile(`github.com/nats-io/nats-server/v2 (v\S+)`).FindSubmatch(mod)
	if v == nil || string(v[1]) != "v"+strings.TrimPrefix(m[1], "v") {
		t.Errorf("the README says the tests run nats-server %s; go.mod has %s", m[1], v)
	}
}

// TestChartHasNoDependencies holds "NATS ... as a prerequisite rather than
// a chart dependency (... the chart renders without fetching anything)".
func TestChartHasNoDependencies(t *testing.T) {
	c := loadChart(t)
	if len(c.Metadata.Dependencies) != 0 || len(c.Dependencies()) != 0 {
		t.Errorf("the chart depends on %v", c.Metadata.Dependencies)
	}
}

// TestChartGivesTenantsTheirTokens holds the README's way to a tenant's
// token under Helm, where the image has no shell, cat or rm to read and
// delete the initial-token file: secret.scimTokens gives the chart's
// default tenant its token (so none is generated into that file), and the
// README tells no one to read the file in a pod.
func TestChartGivesTenantsTheirTokens(t *testing.T) {
	const token = "default-token-0123456789abcdef"
	m := mustRender(t, "scimrelay", "secret: {scimTokens: {DEFAULT_SCIM_TOKEN: "+token+"}}")
	env := m.secretEnv(t)
	relay, err := config.Parse([]byte(m.relayYAML(t)), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if len(relay.Tenants) != 1 || relay.Tenants[0].Name != "default" || !slices.Contains(relay.Tenants[0].Tokens, token) {
		t.Errorf("secret.scimTokens.DEFAULT_SCIM_TOKEN gives tenants %+v; want default with that token", relay.Tenants)
	}
	section := readmeSection(t, "### Kubernetes (Helm)", "### systemd")
	if !strings.Contains(section, "`secret.scimTokens.DEFAULT_SCIM_TOKEN`") {
		t.Error("the README's Helm section does not say how to give the default tenant its token")
	}
	if regexp.MustCompile(`kubectl[^` + "`" + `\n]* exec [^` + "`" + `\n]*-- (cat|rm|sh)\b`).MatchString(section) {
		t.Error("the README runs cat, rm or a shell in a pod of an image that has none")
	}
}

// TestChartAdminFromNodes holds the README's way out when the network
// plugin applies the NetworkPolicy to the kubelet's probes: an ipBlock of
// the nodes in networkPolicy.adminFrom opens the admin port to them.
func TestChartAdminFromNodes(t *testing.T) {
	m := mustRender(t, "scimrelay", "networkPolicy: {adminFrom: [{ipBlock: {cidr: 10.0.0.0/24}}]}")
	for _, role := range []string{"scim", "sinks"} {
		found := false
		for _, p := range m.netpols {
			if !selects(t, &p.Spec.PodSelector, m.podOf(t, role).Labels) {
				continue
			}
			for _, rule := range p.Spec.Ingress {
				for _, peer := range rule.From {
					if peer.IPBlock != nil && peer.IPBlock.CIDR == "10.0.0.0/24" && len(rule.Ports) == 1 && *rule.Ports[0].Port == intstr.FromString("admin") {
						found = true
					}
				}
			}
		}
		if !found {
			t.Errorf("networkPolicy.adminFrom with the nodes' ipBlock does not open the %s pods' admin port to them", role)
		}
	}
	section := readmeSection(t, "### Kubernetes (Helm)", "### systemd")
	if !strings.Contains(section, "network plugin lets the node's traffic through") {
		t.Error("the README does not say that the probes depend on the network plugin letting the node through")
	}
}
