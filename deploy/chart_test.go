// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/scimrelay/scimrelay/config"
)

// The chart is rendered with the Helm SDK, as `helm template` does, without
// a cluster or a network, and every object is decoded strictly into its
// Kubernetes type: a misspelt or misplaced field is an error, as the API
// server's strict field validation would make it.

const chartDir = "helm/scimrelay"

// manifests are a rendered chart's objects, by kind.
type manifests struct {
	statefulSets    []appsv1.StatefulSet
	deployments     []appsv1.Deployment
	services        []corev1.Service
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	serviceAccounts []corev1.ServiceAccount
	pdbs            []policyv1.PodDisruptionBudget
	netpols         []networkingv1.NetworkPolicy
	serviceMonitors []monitoringv1.ServiceMonitor
	prometheusRules []monitoringv1.PrometheusRule

	all []object // every object above
}

// object is any rendered object, for what every kind must hold.
type object struct {
	kind string
	meta metav1.Object
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// render renders the chart as release "scimrelay" with values over its
// defaults, the way `helm template scimrelay deploy/helm/scimrelay -f values` does.
func render(t *testing.T, release string, values string) (map[string]string, error) {
	t.Helper()
	c := loadChart(t)
	vals, err := chartutil.ReadValues([]byte(values))
	if err != nil {
		t.Fatal(err)
	}
	rv, err := chartutil.ToRenderValues(c, vals, chartutil.ReleaseOptions{Name: release, Namespace: "scimrelay", Revision: 1, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Render(c, rv)
}

// decode strictly decodes every object of a render.
func decode(t *testing.T, files map[string]string) *manifests {
	t.Helper()
	m := &manifests{}
	for file, text := range files {
		if !strings.HasSuffix(file, ".yaml") {
			continue // NOTES.txt, helpers
		}
		for _, doc := range releaseutil.SplitManifests(text) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s: %v\n%s", file, err, doc)
			}
			var err error
			switch head.APIVersion + " " + head.Kind {
			case "apps/v1 StatefulSet":
				m.statefulSets, err = decodeInto(m, head.Kind, doc, m.statefulSets)
			case "apps/v1 Deployment":
				m.deployments, err = decodeInto(m, head.Kind, doc, m.deployments)
			case "v1 Service":
				m.services, err = decodeInto(m, head.Kind, doc, m.services)
			case "v1 ConfigMap":
				m.configMaps, err = decodeInto(m, head.Kind, doc, m.configMaps)
			case "v1 Secret":
				m.secrets, err = decodeInto(m, head.Kind, doc, m.secrets)
			case "v1 ServiceAccount":
				m.serviceAccounts, err = decodeInto(m, head.Kind, doc, m.serviceAccounts)
			case "policy/v1 PodDisruptionBudget":
				m.pdbs, err = decodeInto(m, head.Kind, doc, m.pdbs)
			case "networking.k8s.io/v1 NetworkPolicy":
				m.netpols, err = decodeInto(m, head.Kind, doc, m.netpols)
			case "monitoring.coreos.com/v1 ServiceMonitor":
				m.serviceMonitors, err = decodeInto(m, head.Kind, doc, m.serviceMonitors)
			case "monitoring.coreos.com/v1 PrometheusRule":
				m.prometheusRules, err = decodeInto(m, head.Kind, doc, m.prometheusRules)
			default:
				t.Fatalf("%s: an object of %s %s, which this test does not know", file, head.APIVersion, head.Kind)
			}
			if err != nil {
				t.Fatalf("%s: %s does not decode strictly: %v\n%s", file, head.Kind, err, doc)
			}
		}
	}
	return m
}

// decodeInto decodes doc strictly and appends it to list (and to m.all).
func decodeInto[T any](m *manifests, kind, doc string, list []T) ([]T, error) {
	v := new(T)
	if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
		return list, err
	}
	meta, ok := any(v).(metav1.Object)
	if !ok {
		return list, fmt.Errorf("%s has no object metadata", kind)
	}
	m.all = append(m.all, object{kind: kind, meta: meta})
	return append(list, *v), nil
}

func mustRender(t *testing.T, release, values string) *manifests {
	t.Helper()
	files, err := render(t, release, values)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	return decode(t, files)
}

// checkNames checks every object's name (a DNS label for Services and the
// StatefulSet, whose pods' hostnames derive from it; a subdomain otherwise)
// and its labels.
func checkNames(t *testing.T, m *manifests) {
	t.Helper()
	for _, o := range m.all {
		kind, name := o.kind, o.meta.GetName()
		errs := validation.IsDNS1123Subdomain(name)
		if kind == "Service" || kind == "StatefulSet" {
			errs = validation.IsDNS1035Label(name)
		}
		if len(errs) > 0 {
			t.Errorf("%s %q: %v", kind, name, errs)
		}
		l := o.meta.GetLabels()
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if l[k] == "" {
				t.Errorf("%s %s lacks label %s", kind, name, k)
			}
		}
		for k, v := range l {
			if len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
				t.Errorf("%s %s: label %s=%q is not valid", kind, name, k, v)
			}
		}
	}
}

// selects reports whether a label selector selects a pod with labels.
func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return s.Matches(labels.Set(podLabels))
}

// pod is where a connection comes from: a pod's labels and its namespace's.
type pod struct {
	labels, namespace map[string]string
	sameNamespace     bool
}

// admits reports whether the NetworkPolicies let from open a TCP
// connection to port (named, and numbered) of a pod with labels to, as a
// NetworkPolicy implementation decides: a pod no policy selects for ingress
// takes everything; a selected pod takes what one of the rules allows.
func admits(t *testing.T, policies []networkingv1.NetworkPolicy, to map[string]string, portName string, port int32, from pod) bool {
	t.Helper()
	selected := false
	for _, p := range policies {
		if !selects(t, &p.Spec.PodSelector, to) || !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			continue
		}
		selected = true
		for _, rule := range p.Spec.Ingress {
			portOK := len(rule.Ports) == 0
			for _, rp := range rule.Ports {
				if rp.Port == nil || *rp.Port == intstr.FromString(portName) || *rp.Port == intstr.FromInt32(port) {
					portOK = true
				}
			}
			peerOK := len(rule.From) == 0
			for _, peer := range rule.From {
				nsOK := peer.NamespaceSelector == nil && from.sameNamespace ||
					peer.NamespaceSelector != nil && selects(t, peer.NamespaceSelector, from.namespace)
				podOK := peer.PodSelector == nil || selects(t, peer.PodSelector, from.labels)
				if peer.IPBlock == nil && nsOK && podOK {
					peerOK = true
				}
			}
			if portOK && peerOK {
				return true
			}
		}
	}
	return !selected
}

// podOf returns the pod template of a role.
func (m *manifests) podOf(t *testing.T, role string) corev1.PodTemplateSpec {
	t.Helper()
	switch role {
	case "scim":
		if len(m.statefulSets) != 1 {
			t.Fatalf("%d StatefulSets, want 1", len(m.statefulSets))
		}
		return m.statefulSets[0].Spec.Template
	case "sinks":
		if len(m.deployments) != 1 {
			t.Fatalf("%d Deployments, want 1", len(m.deployments))
		}
		return m.deployments[0].Spec.Template
	}
	t.Fatalf("no role %s", role)
	return corev1.PodTemplateSpec{}
}

// relayYAML returns the relay.yaml the ConfigMap carries.
func (m *manifests) relayYAML(t *testing.T) string {
	t.Helper()
	if len(m.configMaps) != 1 {
		t.Fatalf("%d ConfigMaps, want 1", len(m.configMaps))
	}
	text, ok := m.configMaps[0].Data["relay.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no relay.yaml", m.configMaps[0].Name)
	}
	return text
}

// secretEnv returns what the chart's Secret puts into the environment.
func (m *manifests) secretEnv(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, s := range m.secrets {
		for k, v := range s.Data {
			env[k] = string(v)
		}
	}
	return env
}

// envOf returns what a role's pod takes from the chart's Secrets: every
// key of a Secret its container names in envFrom, and each variable its
// env takes from one. A Secret the chart does not render fails the test.
func (m *manifests) envOf(t *testing.T, role string) map[string]string {
	t.Helper()
	secret := func(name string) corev1.Secret {
		t.Helper()
		for _, s := range m.secrets {
			if s.Name == name {
				return s
			}
		}
		t.Fatalf("the %s pod takes its environment from Secret %s, which the chart does not render", role, name)
		return corev1.Secret{}
	}
	c := m.podOf(t, role).Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.EnvFrom {
		if e.SecretRef != nil {
			for k, v := range secret(e.SecretRef.Name).Data {
				env[e.Prefix+k] = string(v)
			}
		}
	}
	for _, e := range c.Env {
		if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
			env[e.Name] = string(secret(ref.SecretKeyRef.Name).Data[ref.SecretKeyRef.Key])
		}
	}
	return env
}

func (m *manifests) service(t *testing.T, name string) corev1.Service {
	t.Helper()
	for _, s := range m.services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %s", name)
	return corev1.Service{}
}

// checkPod checks what both roles' pods must hold.
func checkPod(t *testing.T, m *manifests, role string, relay *config.Config) {
	t.Helper()
	tpl := m.podOf(t, role)
	spec := tpl.Spec
	where := role + " pod"
	if a := spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("%s mounts a service account token", where)
	}
	for _, sa := range m.serviceAccounts {
		if a := sa.AutomountServiceAccountToken; sa.Name == spec.ServiceAccountName && (a == nil || *a) {
			t.Errorf("ServiceAccount %s mounts its token by default", sa.Name)
		}
	}
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext %+v; want non-root with the RuntimeDefault seccomp profile", where, sc)
	}
	if tpl.Annotations["checksum/config"] == "" {
		t.Errorf("%s does not roll when relay.yaml changes (no checksum/config annotation)", where)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s has %d containers", where, len(spec.Containers))
	}
	c := spec.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: container securityContext %+v; want a read-only root, no privilege escalation, ALL capabilities dropped", where, sc)
	}
	if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") && !strings.Contains(c.Image, "@sha256:") {
		t.Errorf("%s runs image %q; want a release tag or a digest", where, c.Image)
	}

	// The command line is one serve accepts, in this role, reading the
	// ConfigMap's relay.yaml.
	checkCommandLine(t, where, c.Args)
	if got := flagValue(c.Args, "--role"); got != role {
		t.Errorf("%s runs role %q", where, got)
	}
	mountOf := func(volume string) string {
		for _, vm := range c.VolumeMounts {
			if vm.Name == volume {
				return vm.MountPath
			}
		}
		return ""
	}
	conf := flagValue(c.Args, "--config")
	var configVolume string
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == m.configMaps[0].Name {
			configVolume = v.Name
		}
	}
	if configVolume == "" || path.Join(mountOf(configVolume), "relay.yaml") != conf {
		t.Errorf("%s reads %s, which is not the ConfigMap's relay.yaml (mounted at %q)", where, conf, mountOf(configVolume))
	}
	if mountOf("data") != relay.DataDir {
		t.Errorf("%s: relay.yaml keeps data in %s, the data volume is at %q", where, relay.DataDir, mountOf("data"))
	}
	secretName := ""
	for _, e := range c.EnvFrom {
		if e.SecretRef != nil {
			secretName = e.SecretRef.Name
		}
	}
	if secretName == "" {
		t.Errorf("%s takes no environment from a Secret", where)
	}

	// Probes: /healthz for start-up and liveness, /readyz for readiness,
	// on the port relay.yaml's admin_listen opens.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	_, adminPort, _ := net.SplitHostPort(relay.AdminListen)
	if fmt.Sprint(ports["admin"]) != adminPort {
		t.Errorf("%s: container port admin is %d, admin_listen is %s", where, ports["admin"], relay.AdminListen)
	}
	if role == "scim" {
		if _, scimPort, _ := net.SplitHostPort(relay.Listen); fmt.Sprint(ports["scim"]) != scimPort {
			t.Errorf("%s: container port scim is %d, listen is %s", where, ports["scim"], relay.Listen)
		}
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"startupProbe", c.StartupProbe, "/healthz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != intstr.FromString("admin") {
			t.Errorf("%s: %s %+v; want GET %s on the admin port", where, p.name, p.probe, p.path)
		}
	}
}

// TestChartDefaults renders the chart with its default values and checks
// the deployment it describes.
func TestChartDefaults(t *testing.T) {
	c := loadChart(t)
	if c.Metadata.Annotations["artifacthub.io/license"] != "Apache-2.0" || c.Metadata.AppVersion == "" || c.Metadata.AppVersion == "latest" {
		t.Errorf("Chart.yaml: license %q, appVersion %q", c.Metadata.Annotations["artifacthub.io/license"], c.Metadata.AppVersion)
	}
	files, err := render(t, "scimrelay", "")
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, files)
	for _, role := range []string{"scim", "sinks"} {
		tpl := m.podOf(t, role)
		if img := tpl.Spec.Containers[0].Image; img != "ghcr.io/scimrelay/scimrelay:"+c.Metadata.AppVersion {
			t.Errorf("%s runs %s by default; want the chart's appVersion as tag", role, img)
		}
		if tpl.Annotations["checksum/secret"] == "" {
			t.Errorf("%s does not roll when the chart's Secret changes", role)
		}
		if g := tpl.Spec.TerminationGracePeriodSeconds; g == nil || *g < 60 {
			t.Errorf("%s: terminationGracePeriodSeconds %v; want at least 60, for a graceful stop (SCIM requests 30 s and their events 15 s, or a worker's hand-over)", role, g)
		}
	}
	checkNames(t, m)
	if len(m.serviceMonitors) != 0 {
		t.Error("a ServiceMonitor by default; it needs the Prometheus Operator's CRDs")
	}
	if len(m.prometheusRules) != 0 {
		t.Error("a PrometheusRule by default; it needs the Prometheus Operator's CRDs")
	}

	// relay.yaml: valid for serve with what the Secret provides, on an
	// external NATS, listening where the manifests say.
	text := m.relayYAML(t)
	checkRelayYAML(t, "ConfigMap relay.yaml", text, m.secretEnv(t))
	relay, err := config.Parse([]byte(text), func(k string) (string, bool) { v, ok := m.secretEnv(t)[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	// A stopping scim pod answers while the Service takes it out of its
	// endpoints, within its grace period with the 30 s for requests and
	// the 15 s to publish their events and delete them from the outbox.
	if d, g := time.Duration(relay.Limits.ShutdownDelay), m.podOf(t, "scim").Spec.TerminationGracePeriodSeconds; d < time.Second || g == nil || d+45*time.Second > time.Duration(*g)*time.Second {
		t.Errorf("relay.yaml: limits.shutdown_delay %s with terminationGracePeriodSeconds %v; want a delay the grace period holds with 30 s for requests and 15 s for their events", d, g)
	}
	// Replicas 0 is automatic: 3 on the cluster the NATS chart runs.
	if r := relay.NATS.Stream.Replicas; relay.Embedded() || relay.NATS.URL != "nats://nats:4222" || (r != 0 && r != 3) {
		t.Errorf("relay.yaml: NATS %q with %d stream replicas; want the NATS chart's release nats, R3", relay.NATS.URL, r)
	}

	// Role scim: a StatefulSet of one, its headless Service, its data on a PVC.
	sts := m.statefulSets[0]
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("StatefulSet %s runs %v replicas; the data file has one writer", sts.Name, sts.Spec.Replicas)
	}
	headless := m.service(t, sts.Spec.ServiceName)
	if headless.Spec.ClusterIP != corev1.ClusterIPNone || !selects(t, &metav1.LabelSelector{MatchLabels: headless.Spec.Selector}, sts.Spec.Template.Labels) {
		t.Errorf("serviceName %s is not a headless Service selecting the scim pod: %+v", headless.Name, headless.Spec)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Errorf("StatefulSet %s: volumeClaimTemplates %+v; want one named data", sts.Name, sts.Spec.VolumeClaimTemplates)
	}
	if !selects(t, sts.Spec.Selector, sts.Spec.Template.Labels) {
		t.Errorf("StatefulSet %s does not select its own pods", sts.Name)
	}
	checkPod(t, m, "scim", relay)

	// Role sinks: a Deployment of two by default, no persistent state.
	dep := m.deployments[0]
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 || !selects(t, dep.Spec.Selector, dep.Spec.Template.Labels) {
		t.Errorf("Deployment %s: %v replicas, selector %v", dep.Name, dep.Spec.Replicas, dep.Spec.Selector)
	}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Name == "data" && v.EmptyDir == nil {
			t.Errorf("the sinks' data volume is %+v; a worker keeps no state", v.VolumeSource)
		}
	}
	checkPod(t, m, "sinks", relay)
	scimPod, sinksPod := sts.Spec.Template.Labels, dep.Spec.Template.Labels
	if tsc := dep.Spec.Template.Spec.TopologySpreadConstraints; len(tsc) != 1 || tsc[0].TopologyKey != "kubernetes.io/hostname" || !selects(t, tsc[0].LabelSelector, sinksPod) {
		t.Errorf("the workers are not spread over nodes: %+v", tsc)
	}
	if selects(t, sts.Spec.Selector, sinksPod) || selects(t, dep.Spec.Selector, scimPod) {
		t.Error("the StatefulSet's and the Deployment's selectors overlap")
	}

	// Services: SCIM reaches the scim pod only; metrics reach every pod.
	scim := m.service(t, sts.Name)
	if !selects(t, &metav1.LabelSelector{MatchLabels: scim.Spec.Selector}, scimPod) || selects(t, &metav1.LabelSelector{MatchLabels: scim.Spec.Selector}, sinksPod) ||
		len(scim.Spec.Ports) != 1 || scim.Spec.Ports[0].TargetPort != intstr.FromString("scim") {
		t.Errorf("Service %s does not route SCIM to the scim pod alone: %+v", scim.Name, scim.Spec)
	}
	metrics := m.service(t, strings.TrimSuffix(sts.Name, "-scim")+"-metrics")
	for _, podLabels := range []map[string]string{scimPod, sinksPod} {
		if !selects(t, &metav1.LabelSelector{MatchLabels: metrics.Spec.Selector}, podLabels) {
			t.Errorf("Service %s does not reach pod %v", metrics.Name, podLabels)
		}
	}
	// An unready pod is scraped too: its scimrelay_ready says why.
	if !metrics.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s leaves unready pods out of Prometheus's scrape", metrics.Name)
	}

	// A node drain takes the workers one at a time; the single scim pod has
	// no budget by default (minAvailable 1 would block every drain).
	if len(m.pdbs) != 1 || !selects(t, m.pdbs[0].Spec.Selector, sinksPod) || selects(t, m.pdbs[0].Spec.Selector, scimPod) ||
		m.pdbs[0].Spec.MaxUnavailable == nil || m.pdbs[0].Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudgets %+v; want one for the sinks, maxUnavailable 1", m.pdbs)
	}
	// With NATS down every worker is unready; the default policy
	// (IfHealthyBudget) would then block a drain until NATS is back.
	for _, p := range m.pdbs {
		if u := p.Spec.UnhealthyPodEvictionPolicy; selects(t, p.Spec.Selector, sinksPod) && (u == nil || *u != policyv1.AlwaysAllow) {
			t.Errorf("PodDisruptionBudget %s: unhealthyPodEvictionPolicy %v; want AlwaysAllow, so that unready workers do not block a drain", p.Name, u)
		}
	}

	// NetworkPolicy: SCIM open, the admin port closed to every pod, NATS
	// open to the relay's pods only.
	other := pod{labels: map[string]string{"app": "something-else"}, sameNamespace: true}
	asPod := func(l map[string]string) pod { return pod{labels: l, sameNamespace: true} }
	natsPod := map[string]string{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"}
	for _, c := range []struct {
		what     string
		to       map[string]string
		portName string
		port     int32
		from     pod
		want     bool
	}{
		{"any pod to SCIM", scimPod, "scim", 8080, other, true},
		{"a pod to the scim pod's admin port", scimPod, "admin", 8081, other, false},
		{"a pod to a worker's admin port", sinksPod, "admin", 8081, other, false},
		{"a worker to the scim pod's admin port", scimPod, "admin", 8081, asPod(sinksPod), false},
		{"a pod to a worker's other ports", sinksPod, "", 9000, other, false},
		{"the scim pod to NATS", natsPod, "", 4222, asPod(scimPod), true},
		{"a worker to NATS", natsPod, "", 4222, asPod(sinksPod), true},
		{"another pod to NATS", natsPod, "", 4222, other, false},
		{"a NATS node to another's routes", natsPod, "", 6222, asPod(natsPod), true},
		{"a relay to NATS routes", natsPod, "", 6222, asPod(scimPod), false},
		{"another pod to NATS monitoring", natsPod, "", 8222, other, false},
		{"another pod to the NATS exporter", natsPod, "", 7777, other, false},
	} {
		if got := admits(t, m.netpols, c.to, c.portName, c.port, c.from); got != c.want {
			t.Errorf("NetworkPolicy: %s: admitted %v, want %v", c.what, got, c.want)
		}
	}

	// `helm lint` has nothing to say.
	for _, msg := range lint.All(chartDir, nil, "scimrelay", false).Messages {
		if msg.Severity > support.InfoSev {
			t.Errorf("helm lint: %s", msg)
		}
	}
}

// TestChartValues renders the chart with the values an operator changes and
// checks that each takes effect, and that the chart refuses what it must.
func TestChartValues(t *testing.T) {
	m := mustRender(t, "relay", `
image: {repository: registry.example.com/scimrelay, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
config:
  public_url: https://relay.example.com
  tenants:
    - name: acme
      tokens: ["${ACME_SCIM_TOKEN}"]
  sinks:
    - name: crm
      type: webhook
      url: https://crm.example.com/hooks/scim
      secret: "${CRM_WEBHOOK_SECRET}"
secret:
  adminToken: admin-token-0123456789abcdef
  scimTokens: {ACME_SCIM_TOKEN: acme-token-0123456789abcdef}
  webhookSecrets: {CRM_WEBHOOK_SECRET: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
nats:
  url: nats://nats.messaging.svc:4222
  credentialsSecret: {name: scimrelay-nats, key: relay.creds}
sinks: {replicas: 3}
scim: {podDisruptionBudget: {enabled: true}}
serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
networkPolicy:
  scimFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}]
  adminFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  nats:
    clientsFrom: [{podSelector: {matchLabels: {app: billing}}}]
    monitoringFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
`)
	checkNames(t, m)
	text := m.relayYAML(t)
	env := m.secretEnv(t)
	// The credentials are a Secret mounted in the pod, and check refuses a
	// file that is not there: here they are a file of the test's.
	creds := filepath.Join(t.TempDir(), "relay.creds")
	if err := os.WriteFile(creds, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	checkRelayYAML(t, "ConfigMap relay.yaml", strings.Replace(text, " /etc/scimrelay-nats/relay.creds\n", " "+creds+"\n", 1), env)
	relay, err := config.Parse([]byte(text), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	// Every variable relay.yaml needs is in the Secret.
	for _, ref := range regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`).FindAllStringSubmatch(text, -1) {
		if _, ok := env[ref[1]]; !ok {
			t.Errorf("relay.yaml needs ${%s}, which the Secret does not hold", ref[1])
		}
	}
	if relay.Admin.Token != "admin-token-0123456789abcdef" || relay.NATS.URL != "nats://nats.messaging.svc:4222" || relay.PublicURL != "https://relay.example.com" {
		t.Errorf("relay.yaml does not carry the values: %+v", relay)
	}

	for _, role := range []string{"scim", "sinks"} {
		checkPod(t, m, role, relay)
		spec := m.podOf(t, role).Spec
		c := spec.Containers[0]
		if c.Image != "registry.example.com/scimrelay@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
			t.Errorf("%s runs %s, not the digest", role, c.Image)
		}
		// The NATS credentials are mounted where relay.yaml looks for them.
		found := false
		for _, v := range spec.Volumes {
			if v.Secret == nil || v.Secret.SecretName != "scimrelay-nats" {
				continue
			}
			for _, vm := range c.VolumeMounts {
				if vm.Name == v.Name && vm.ReadOnly && path.Join(vm.MountPath, "relay.creds") == relay.NATS.Credentials {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s: relay.yaml reads NATS credentials from %q, which no read-only mount of Secret scimrelay-nats provides", role, relay.NATS.Credentials)
		}
	}
	if r := m.deployments[0].Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("sinks.replicas 3 gives %v", r)
	}
	scimPod, sinksPod := m.podOf(t, "scim").Labels, m.podOf(t, "sinks").Labels
	natsPod := map[string]string{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"}
	var scimPDB bool
	for _, p := range m.pdbs {
		if selects(t, p.Spec.Selector, scimPod) && p.Spec.MinAvailable != nil && p.Spec.MinAvailable.IntValue() == 1 {
			scimPDB = true
		}
	}
	if !scimPDB {
		t.Error("scim.podDisruptionBudget.enabled gives no budget for the scim pod")
	}

	// The ServiceMonitor scrapes /metrics on the metrics Service's admin port.
	if len(m.serviceMonitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(m.serviceMonitors))
	}
	sm := m.serviceMonitors[0]
	metrics := m.service(t, "relay-scimrelay-metrics")
	if sm.Labels["release"] != "kube-prometheus-stack" || !selects(t, &sm.Spec.Selector, metrics.Labels) ||
		len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != metrics.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor %+v does not scrape /metrics of Service %s", sm, metrics.Name)
	}
	for _, s := range m.services {
		if s.Name != metrics.Name && selects(t, &sm.Spec.Selector, s.Labels) {
			t.Errorf("the ServiceMonitor also scrapes Service %s", s.Name)
		}
	}

	// NetworkPolicy: the admin port opens to the monitoring namespace only,
	// SCIM to the ingress controller only.
	ns := func(name string) pod {
		return pod{labels: map[string]string{"app": "x"}, namespace: map[string]string{"kubernetes.io/metadata.name": name}}
	}
	for _, c := range []struct {
		what     string
		to       map[string]string
		portName string
		port     int32
		from     pod
		want     bool
	}{
		{"monitoring to the scim pod's admin port", scimPod, "admin", 8081, ns("monitoring"), true},
		{"monitoring to a worker's admin port", sinksPod, "admin", 8081, ns("monitoring"), true},
		{"monitoring to SCIM", scimPod, "scim", 8080, ns("monitoring"), false},
		{"ingress to SCIM", scimPod, "scim", 8080, ns("ingress-nginx"), true},
		{"ingress to the admin port", scimPod, "admin", 8081, ns("ingress-nginx"), false},
		{"a pod of the release's namespace to SCIM", scimPod, "scim", 8080, pod{labels: map[string]string{"app": "x"}, sameNamespace: true}, false},
		{"a subscriber to NATS", natsPod, "", 4222, pod{labels: map[string]string{"app": "billing"}, sameNamespace: true}, true},
		{"a subscriber to NATS routes", natsPod, "", 6222, pod{labels: map[string]string{"app": "billing"}, sameNamespace: true}, false},
		{"monitoring to NATS monitoring", natsPod, "", 8222, ns("monitoring"), true},
		{"monitoring to NATS clients", natsPod, "", 4222, ns("monitoring"), false},
	} {
		if got := admits(t, m.netpols, c.to, c.portName, c.port, c.from); got != c.want {
			t.Errorf("NetworkPolicy: %s: admitted %v, want %v", c.what, got, c.want)
		}
	}

	// An existing Secret replaces the chart's.
	m = mustRender(t, "scimrelay", `secret: {existingSecret: scimrelay-secrets}`)
	if len(m.secrets) != 0 {
		t.Errorf("with secret.existingSecret the chart still renders %d Secrets", len(m.secrets))
	}
	for _, role := range []string{"scim", "sinks"} {
		tpl := m.podOf(t, role)
		if ef := tpl.Spec.Containers[0].EnvFrom; len(ef) != 1 || ef[0].SecretRef == nil || ef[0].SecretRef.Name != "scimrelay-secrets" {
			t.Errorf("%s takes its environment from %+v, not the existing Secret", role, ef)
		}
		if _, ok := tpl.Annotations["checksum/secret"]; ok {
			t.Errorf("%s has a checksum of a Secret the chart does not render", role)
		}
	}

	// A long release name still gives valid names.
	checkNames(t, mustRender(t, strings.Repeat("r", 53), ""))

	// What the chart refuses, with a message that says why.
	for _, c := range []struct{ values, want string }{
		{`image: {tag: latest}`, `"latest" is refused`},
		{`secret: {webhookSecrets: {"crm-secret": x}}`, `"crm-secret" is not an environment variable name`},
		{`secret: {scimTokens: {X_TOKEN: a}, webhookSecrets: {X_TOKEN: b}}`, "X_TOKEN is set twice"},
		{`nats: {url: ""}`, "nats.url must name"},
		{`config: {tls: {cert_file: /tls/tls.crt, key_file: /tls/tls.key}}`, "config.tls and config.admin.tls are not for this chart"},
		{`config: {admin: {tls: {cert_file: /tls/tls.crt, key_file: /tls/tls.key}}}`, "config.tls and config.admin.tls are not for this chart"},
		// values.schema.json: a misspelt or mistyped value fails, rather
		// than being ignored.
		{`image: {tga: v1.0.0}`, "tga"},
		{`sinks: {replicas: two}`, "replicas"},
		{`sinks: {spreadAcrossNodes: "yes"}`, "spreadAcrossNodes"},
		{`prometheusRule: {enabled: "yes"}`, "/prometheusRule/enabled"},
		{`prometheusRule: {lables: {release: prometheus}}`, "lables"},
		{`prometheusRule: {labels: {release: [prometheus]}}`, "/prometheusRule/labels/release"},
	} {
		if _, err := render(t, "scimrelay", c.values); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %s: %v; want an error saying %s", c.values, err, c.want)
		}
	}
	// Listener TLS left off, as relay.yaml writes it, is no TLS.
	mustRender(t, "scimrelay", `config: {tls: {cert_file: "", key_file: ""}, admin: {tls: {cert_file: "", key_file: ""}}}`)
}

// The alerting rules: deploy/prometheus/alerts.yaml, which plain Prometheus
// loads, and the chart's copy of it, which its PrometheusRule holds (Helm
// reads no file outside the chart).
const (
	alertRulesFile      = "prometheus/alerts.yaml"
	chartAlertRulesFile = chartDir + "/files/alerts.yaml"
)

// TestChartAlertRulesFile: the chart's rules file is
// deploy/prometheus/alerts.yaml byte for byte, so that the rules have one
// text: the one under prometheus/, copied into the chart.
func TestChartAlertRulesFile(t *testing.T) {
	want, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(chartAlertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("deploy/%s is not deploy/%s byte for byte; edit the latter and copy it: cp deploy/%[2]s deploy/%[1]s", chartAlertRulesFile, alertRulesFile)
	}
}

// TestChartPrometheusRule: prometheusRule.enabled renders one
// PrometheusRule, with the labels of prometheusRule.labels beside the
// chart's, whose groups and rules are those of deploy/prometheus/alerts.yaml:
// every rule's name, expression, for, labels and annotations as the file
// writes them, the annotations' {{ $labels.sink }} and {{ $value }}
// untouched by Helm's templating. helm lint has nothing to say of it.
func TestChartPrometheusRule(t *testing.T) {
	raw, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	// Strictly: a field a PrometheusRule's spec does not know fails here.
	var want monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(raw, &want); err != nil {
		t.Fatalf("%s as a PrometheusRule's spec: %v", alertRulesFile, err)
	}
	templated := 0
	for _, g := range want.Groups {
		for _, r := range g.Rules {
			for _, a := range r.Annotations {
				if strings.Contains(a, "{{ $labels.") || strings.Contains(a, "{{ $value }}") {
					templated++
				}
			}
		}
	}
	if len(want.Groups) == 0 || templated == 0 {
		t.Fatalf("%s: %d groups, %d annotations with Prometheus templates; this test wants rules that have them", alertRulesFile, len(want.Groups), templated)
	}

	m := mustRender(t, "relay", `prometheusRule: {enabled: true, labels: {release: kube-prometheus-stack, team: identity}}`)
	checkNames(t, m)
	if len(m.serviceMonitors) != 0 {
		t.Error("prometheusRule.enabled renders a ServiceMonitor too")
	}
	if len(m.prometheusRules) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(m.prometheusRules))
	}
	pr := m.prometheusRules[0]
	if pr.Name != "relay-scimrelay" || pr.Labels["release"] != "kube-prometheus-stack" || pr.Labels["team"] != "identity" || pr.Labels["app.kubernetes.io/instance"] != "relay" {
		t.Errorf("PrometheusRule %s has labels %v; want prometheusRule.labels beside the chart's", pr.Name, pr.Labels)
	}
	show := func(v any) string {
		out, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	got := pr.Spec.Groups
	if len(got) != len(want.Groups) {
		t.Errorf("PrometheusRule %s has %d groups, %s %d", pr.Name, len(got), alertRulesFile, len(want.Groups))
	}
	for i := range min(len(got), len(want.Groups)) {
		g, w := got[i], want.Groups[i]
		if g.Name != w.Name || len(g.Rules) != len(w.Rules) {
			alerts := func(rules []monitoringv1.Rule) (names []string) {
				for _, r := range rules {
					names = append(names, r.Alert)
				}
				return names
			}
			t.Errorf("group %d: %q with rules %v; %s has %q with %v", i, g.Name, alerts(g.Rules), alertRulesFile, w.Name, alerts(w.Rules))
			continue
		}
		for j := range g.Rules {
			if !reflect.DeepEqual(g.Rules[j], w.Rules[j]) {
				t.Errorf("group %s, rule %d: the PrometheusRule has\n%s%s has\n%s", g.Name, j, show(g.Rules[j]), alertRulesFile, show(w.Rules[j]))
			}
		}
	}
	// And whatever else a group or the spec may say.
	if !reflect.DeepEqual(pr.Spec, want) {
		t.Errorf("PrometheusRule %s's spec is not %s's:\n%s\nwant\n%s", pr.Name, alertRulesFile, show(pr.Spec), show(want))
	}

	for _, msg := range lint.All(chartDir, map[string]any{"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}}}, "scimrelay", false).Messages {
		if msg.Severity > support.InfoSev {
			t.Errorf("helm lint with prometheusRule.enabled: %s", msg)
		}
	}
}

// mountedSecretsFor returns the Secrets a role's pod mounts read-only
// under the directory of a file relay.yaml names (nats.credentials, say),
// by name, with the file relay.yaml reads from each.
func mountedSecretsFor(t *testing.T, m *manifests, role, credentials string) map[string]string {
	t.Helper()
	spec := m.podOf(t, role).Spec
	found := map[string]string{}
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			continue
		}
		for _, vm := range spec.Containers[0].VolumeMounts {
			if vm.Name == v.Name && vm.ReadOnly && vm.MountPath == path.Dir(credentials) {
				found[v.Secret.SecretName] = path.Base(credentials)
			}
		}
	}
	return found
}

// TestChartNATSCredentialsPerRole: the sink workers can have a NATS user
// of their own, narrower than the front end's (no publish on scimrelay.>;
// README, "Who can reach what"). Each role mounts its own Secret where the
// one relay.yaml both read looks for the credentials; a role left out takes
// nats.credentialsSecret.
func TestChartNATSCredentialsPerRole(t *testing.T) {
	for _, c := range []struct {
		values      string
		scim, sinks string
	}{
		{`nats: {credentialsSecret: {name: scimrelay-nats, key: relay.creds}}
sinks: {natsCredentialsSecret: {name: scimrelay-nats-sinks}}`, "scimrelay-nats", "scimrelay-nats-sinks"},
		{`nats: {credentialsSecret: {key: relay.creds}}
scim: {natsCredentialsSecret: {name: scimrelay-nats-scim}}
sinks: {natsCredentialsSecret: {name: scimrelay-nats-sinks}}`, "scimrelay-nats-scim", "scimrelay-nats-sinks"},
		{`nats: {credentialsSecret: {name: scimrelay-nats, key: relay.creds}}`, "scimrelay-nats", "scimrelay-nats"},
	} {
		m := mustRender(t, "scimrelay", c.values)
		relay, err := config.Parse([]byte(m.relayYAML(t)), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		if path.Base(relay.NATS.Credentials) != "relay.creds" {
			t.Errorf("values %s: relay.yaml reads NATS credentials from %q, not the Secrets' key relay.creds", c.values, relay.NATS.Credentials)
		}
		for role, want := range map[string]string{"scim": c.scim, "sinks": c.sinks} {
			got := mountedSecretsFor(t, m, role, relay.NATS.Credentials)
			if len(got) != 1 || got[want] == "" {
				t.Errorf("values %s: the %s pod mounts %v at %s; want Secret %s alone", c.values, role, got, path.Dir(relay.NATS.Credentials), want)
			}
		}
	}

	// relay.yaml is one for both roles: credentials for one role alone
	// would leave the other reading a file it does not have.
	for _, c := range []struct{ values, want string }{
		{`sinks: {natsCredentialsSecret: {name: scimrelay-nats-sinks}}`, "NATS credentials for one role only"},
		{`scim: {natsCredentialsSecret: {name: scimrelay-nats-scim}}`, "NATS credentials for one role only"},
		{`sinks: {natsCredentialsSecret: {nmae: x}}`, "nmae"},
	} {
		if _, err := render(t, "scimrelay", c.values); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %s: %v; want an error saying %s", c.values, err, c.want)
		}
	}
}

// TestChartNATSTLS: a NATS that requires TLS is reachable from the chart's
// pods: the Secret nats.tlsSecret names (or a role's own) is mounted
// read-only in each role's pod where relay.yaml's nats.tls reads its CA,
// certificate and key, a key left empty leaves its file out, and what
// cannot work is refused.
func TestChartNATSTLS(t *testing.T) {
	const dir = "/etc/scimrelay-nats-tls"
	const (
		noCredentials = "WARNING: the relay connects to NATS without credentials"
		onlyACert     = "NOTE: the relay's only NATS credential is its client certificate"
	)
	for _, c := range []struct {
		values        string
		ca, cert, key string
		scim, sinks   string
		notes         string // what NOTES says of the relay's NATS credential
	}{
		{`nats: {url: "tls://nats:4222", tlsSecret: {name: nats-tls}}`, dir + "/ca.crt", dir + "/tls.crt", dir + "/tls.key", "nats-tls", "nats-tls", onlyACert},
		{`nats: {url: "tls://nats:4222", tlsSecret: {name: nats-ca, certKey: "", keyKey: ""}}`, dir + "/ca.crt", "", "", "nats-ca", "nats-ca", noCredentials},
		{`nats: {url: "tls://nats:4222", tlsSecret: {caKey: "", certKey: client.pem, keyKey: client-key.pem}}
scim: {natsTLSSecret: {name: nats-tls-scim}}
sinks: {natsTLSSecret: {name: nats-tls-sinks}}`, "", dir + "/client.pem", dir + "/client-key.pem", "nats-tls-scim", "nats-tls-sinks", onlyACert},
		{`nats: {url: "tls://nats:4222", tlsSecret: {name: nats-tls}, credentialsSecret: {name: nats-creds}}
sinks: {natsTLSSecret: {name: nats-tls-sinks}}
config: {nats: {tls: {ca_file: "", cert_file: "", key_file: ""}}}`, dir + "/ca.crt", dir + "/tls.crt", dir + "/tls.key", "nats-tls", "nats-tls-sinks", ""},
	} {
		files, err := render(t, "scimrelay", c.values)
		if err != nil {
			t.Fatalf("values %s: %v", c.values, err)
		}
		m := decode(t, files)
		relay, err := config.Parse([]byte(m.relayYAML(t)), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		if got := relay.NATS.TLS; got.CAFile != c.ca || got.CertFile != c.cert || got.KeyFile != c.key {
			t.Errorf("values %s: relay.yaml's nats.tls is %+v, want ca %q, cert %q, key %q", c.values, got, c.ca, c.cert, c.key)
		}
		named := cmp.Or(relay.NATS.TLS.CAFile, relay.NATS.TLS.CertFile)
		for role, want := range map[string]string{"scim": c.scim, "sinks": c.sinks} {
			if got := mountedSecretsFor(t, m, role, named); len(got) != 1 || got[want] == "" {
				t.Errorf("values %s: the %s pod mounts %v at %s; want Secret %s alone", c.values, role, got, dir, want)
			}
		}
		notes := files["scimrelay/templates/NOTES.txt"]
		for _, says := range []string{noCredentials, onlyACert} {
			if strings.Contains(notes, says) != (says == c.notes) {
				t.Errorf("values %s: NOTES saying %q: %v, want %v", c.values, says, !(says == c.notes), says == c.notes)
			}
		}
	}
	for _, c := range []struct{ values, want string }{
		{`config: {nats: {tls: {ca_file: /etc/ssl/nats-ca.pem}}}`, "config.nats.tls names files the chart does not mount"},
		{`nats: {tlsSecret: {name: nats-tls, keyKey: ""}}`, "certKey and keyKey go together"},
		{`nats: {tlsSecret: {name: nats-tls, caKey: "", certKey: "", keyKey: ""}}`, "is named but none of its keys"},
		{`nats: {tlsSecret: {name: nats-tls, caKey: ../ca.crt}}`, "caKey"},
		{`nats: {tlsSecret: {name: null}}
sinks: {natsTLSSecret: {name: nats-tls-sinks}}`, "NATS TLS files for one role only"},
		{`sinks: {natsTLSSecret: {name: nats-tls-sinks}}`, "NATS TLS files for one role only"},
		{`nats: {tlsSecret: {name: nats-tls, crtKey: tls.crt}}`, "crtKey"},
	} {
		if _, err := render(t, "scimrelay", c.values); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %s: %v; want an error saying %s", c.values, err, c.want)
		}
	}
	// A name unset with null (--set nats.tlsSecret.name=null) is no Secret.
	m := mustRender(t, "scimrelay", `nats: {tlsSecret: {name: null}, credentialsSecret: {name: null}}`)
	for _, role := range []string{"scim", "sinks"} {
		for _, v := range m.podOf(t, role).Spec.Volumes {
			if v.Secret != nil && (v.Name == "nats-tls" || v.Name == "nats-credentials") {
				t.Errorf("the %s pod mounts %s from Secret %q", role, v.Name, v.Secret.SecretName)
			}
		}
	}
}

// TestChartNotesNameTheTenants: the install notes give the token command
// for each tenant of the values, not for a tenant "default" the values
// may not have.
func TestChartNotesNameTheTenants(t *testing.T) {
	files, err := render(t, "relay", "config: {tenants: [{name: acme}, {name: globex}]}")
	if err != nil {
		t.Fatal(err)
	}
	notes := files["scimrelay/templates/NOTES.txt"]
	for _, want := range []string{"exec relay-scimrelay-scim-0 -- ", "token create --tenant acme --config", "token create --tenant globex --config"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "--tenant default") {
		t.Errorf("NOTES.txt names tenant default, which the values do not have:\n%s", notes)
	}
}

// TestChartKeepsSCIMTokensFromTheWorkers: a sink worker never answers SCIM
// and is the pod that calls out to third parties, so the tenants' SCIM
// tokens stay out of its environment, and so does the admin token (with
// the front end's, a worker could mint SCIM tokens through its admin API;
// each worker generates its own); the front end, which also runs `sinks
// replay` and `redrive`, gets the webhook secrets too. A new SCIM token or
// admin token rolls the front end alone; a webhook secret rolls both. With a Secret of your own, sinks.existingSecret gives the
// workers a narrower one.
func TestChartKeepsSCIMTokensFromTheWorkers(t *testing.T) {
	const scimToken = "acme-token-0123456789abcdef"
	values := func(scim, webhook, admin string) string {
		return fmt.Sprintf(`
secret:
  adminToken: %s
  scimTokens: {ACME_SCIM_TOKEN: %s}
  webhookSecrets: {CRM_WEBHOOK_SECRET: %s, CRM_API_KEY: crm-api-key-0123456789}
`, admin, scim, webhook)
	}
	base := values(scimToken, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "admin-token-0123456789abcdef")
	m := mustRender(t, "scimrelay", base)
	for role, want := range map[string][]string{
		"scim":  {"ACME_SCIM_TOKEN", "CRM_API_KEY", "CRM_WEBHOOK_SECRET", "SCIMRELAY_ADMIN_TOKEN"},
		"sinks": {"CRM_API_KEY", "CRM_WEBHOOK_SECRET"},
	} {
		env := m.envOf(t, role)
		if got := slices.Sorted(maps.Keys(env)); !slices.Equal(got, want) {
			t.Errorf("the %s pod gets %v from the chart's Secrets; want %v", role, got, want)
		}
		if role == "sinks" {
			for k, v := range env {
				if v == scimToken {
					t.Errorf("the sinks pod holds the tenant's SCIM token as %s", k)
				}
			}
		}
	}

	checksums := func(values string) map[string]string {
		m := mustRender(t, "scimrelay", values)
		return map[string]string{"scim": m.podOf(t, "scim").Annotations["checksum/secret"], "sinks": m.podOf(t, "sinks").Annotations["checksum/secret"]}
	}
	before := checksums(base)
	for _, c := range []struct {
		what        string
		values      string
		scim, sinks bool // rolls
	}{
		{"a SCIM token", values("acme-token-0123456789abcdeX", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "admin-token-0123456789abcdef"), true, false},
		{"a webhook secret", values(scimToken, "whsec_XfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "admin-token-0123456789abcdef"), true, true},
		{"the admin token", values(scimToken, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "admin-token-0123456789abcdeX"), true, false},
	} {
		after := checksums(c.values)
		for role, want := range map[string]bool{"scim": c.scim, "sinks": c.sinks} {
			if rolls := after[role] != before[role]; rolls != want {
				t.Errorf("a change of %s: the %s pods roll %v, want %v", c.what, role, rolls, want)
			}
		}
	}

	// A Secret of your own serves both roles, unless sinks.existingSecret
	// names the workers' own.
	for _, c := range []struct{ values, scim, sinks string }{
		{`secret: {existingSecret: scimrelay-secrets}`, "scimrelay-secrets", "scimrelay-secrets"},
		{`secret: {existingSecret: scimrelay-secrets}
sinks: {existingSecret: scimrelay-sinks-secrets}`, "scimrelay-secrets", "scimrelay-sinks-secrets"},
	} {
		m := mustRender(t, "scimrelay", c.values)
		if len(m.secrets) != 0 {
			t.Errorf("values %s: the chart renders %d Secrets of its own", c.values, len(m.secrets))
		}
		for role, want := range map[string]string{"scim": c.scim, "sinks": c.sinks} {
			if ef := m.podOf(t, role).Spec.Containers[0].EnvFrom; len(ef) != 1 || ef[0].SecretRef == nil || ef[0].SecretRef.Name != want {
				t.Errorf("values %s: the %s pod takes its environment from %+v; want Secret %s", c.values, role, ef, want)
			}
		}
		// The install notes point out a shared Secret.
		files, err := render(t, "scimrelay", c.values)
		if err != nil {
			t.Fatal(err)
		}
		notes := strings.Join(strings.Fields(files["scimrelay/templates/NOTES.txt"]), " ")
		if shared := c.scim == c.sinks; strings.Contains(notes, "your tenants' SCIM tokens too, which they never use: give them a Secret without those in sinks.existingSecret") != shared {
			t.Errorf("values %s: the notes say the workers hold the SCIM tokens: %v, want %v:\n%s", c.values, !shared, shared, notes)
		}
	}
	if _, err := render(t, "scimrelay", `sinks: {existingSecret: scimrelay-sinks-secrets}`); err == nil || !strings.Contains(err.Error(), "set secret.existingSecret too") {
		t.Errorf("sinks.existingSecret without secret.existingSecret: %v; want an error saying to set secret.existingSecret too", err)
	}
}

// TestChartRefusesLiteralSecrets: relay.yaml is a ConfigMap, so a key of
// config: that holds a secret must be ${VARIABLE} references, whose values
// are in a Secret; a literal there, or in a reference's default, stops the
// render with an error naming the key. A header's variable, like any the
// workers need, rides in secret.webhookSecrets.
func TestChartRefusesLiteralSecrets(t *testing.T) {
	for _, c := range []struct{ values, key string }{
		{`config: {tenants: [{name: acme, tokens: ["${ACME_SCIM_TOKEN}", acme-token-0123456789abcdef]}]}`, "config.tenants[0].tokens[1]"},
		{`config: {tenants: [{name: acme, tokens: ["${ACME_SCIM_TOKEN:-acme-token-0123456789abcdef}"]}]}`, "config.tenants[0].tokens[0]"},
		{`config: {sinks: [{name: crm, url: "https://crm.example.com/", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}]}`, "config.sinks[0].secret"},
		{`config: {sinks: [{name: crm, url: "https://crm.example.com/", secret: "${CRM_WEBHOOK_SECRET}", previous_secret: "whsec_${CRM_OLD}"}]}`, "config.sinks[0].previous_secret"},
		{`config: {sinks: [{name: crm, url: "https://crm.example.com/", secret: "${CRM_WEBHOOK_SECRET}", headers: {X-Api-Key: crm-api-key-0123456789}}]}`, "config.sinks[0].headers.X-Api-Key"},
		{`config: {sinks: [{name: crm, url: "https://crm.example.com/", secret: "${CRM_WEBHOOK_SECRET}", headers: {Authorization: "Bearer crm-api-key-0123456789"}}]}`, "config.sinks[0].headers.Authorization"},
		{`config: {sinks: [{name: crm, url: "https://crm.example.com/", secret: "${CRM_WEBHOOK_SECRET}", headers: {X-Api-Key: "sk_live_0123456789 ${CRM_API_KEY:-}"}}]}`, "config.sinks[0].headers.X-Api-Key"},
		{`config: {nats: {user: relay, password: hunter2-hunter2}}`, "config.nats.password"},
		{`config: {nats: {token: 1234567890}}`, "config.nats.token"},
		{`config: {admin: {token: admin-token-0123456789abcdef}}`, "config.admin.token"},
		{`config: {admin: {token: "$$ADMIN"}}`, "config.admin.token"},
	} {
		_, err := render(t, "scimrelay", c.values)
		if err == nil || !strings.Contains(err.Error(), c.key+" holds a literal secret") || !strings.Contains(err.Error(), "${VARIABLE}") {
			t.Errorf("values %s: %v; want an error naming %s and asking for a ${VARIABLE}", c.values, err, c.key)
		}
	}

	// References alone render, with their values where the roles that
	// read them get them.
	m := mustRender(t, "scimrelay", `
config:
  admin: {token: "${SCIMRELAY_ADMIN_TOKEN:-}"}
  nats: {user: relay, password: "${NATS_PASSWORD:?the NATS user's password}"}
  tenants:
    - name: acme
      tokens: ["${ACME_SCIM_TOKEN}", "${ACME_NEXT_TOKEN:-}"]
  sinks:
    - name: crm
      url: https://crm.example.com/hooks/scim
      secret: "${CRM_WEBHOOK_SECRET}"
      previous_secret: "${CRM_OLD_WEBHOOK_SECRET}"
      headers: {Authorization: "Bearer ${CRM_API_KEY}", X-Tenant: "${CRM_TENANT}${CRM_REGION}"}
secret:
  scimTokens: {ACME_SCIM_TOKEN: acme-token-0123456789abcdef}
  webhookSecrets:
    CRM_WEBHOOK_SECRET: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
    CRM_OLD_WEBHOOK_SECRET: whsec_XfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
    CRM_API_KEY: crm-api-key-0123456789
    CRM_TENANT: acme
    CRM_REGION: -eu
    NATS_PASSWORD: hunter2-hunter2
`)
	env := m.envOf(t, "scim")
	relay, err := config.Parse([]byte(m.relayYAML(t)), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if h := relay.Sinks[0].Headers; h["Authorization"] != "Bearer crm-api-key-0123456789" || h["X-Tenant"] != "acme-eu" || relay.NATS.Password != "hunter2-hunter2" {
		t.Errorf("relay.yaml gives headers %v and NATS password %q", h, relay.NATS.Password)
	}
	sinksEnv := m.envOf(t, "sinks")
	for _, k := range []string{"CRM_WEBHOOK_SECRET", "CRM_OLD_WEBHOOK_SECRET", "CRM_API_KEY", "CRM_TENANT", "NATS_PASSWORD"} {
		if sinksEnv[k] == "" {
			t.Errorf("the sinks pod does not get %s, which its sink or NATS needs", k)
		}
	}
}

// TestChartMaintenance: scim.maintenance=true runs scimrelay maintenance in
// the front end's pod instead of the relay: no ports, so the Services route
// nothing to it, and no probes (it answers none); everything a restore or
// a compaction run in it through kubectl exec uses is the relay's (image,
// the data volume's claim and mount, relay.yaml, environment, user); the
// workers are left as they were. NOTES.txt gives the commands, which
// scimrelay takes, in that pod, on the relay's relay.yaml.
func TestChartMaintenance(t *testing.T) {
	normal := mustRender(t, "scimrelay", "")
	files, err := render(t, "scimrelay", "scim:\n  maintenance: true\n")
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, files)
	pod, was := m.podOf(t, "scim"), normal.podOf(t, "scim")
	c, r := pod.Spec.Containers[0], was.Spec.Containers[0]
	checkCommandLine(t, "the maintenance pod", c.Args)
	if !slices.Equal(c.Args, []string{"maintenance"}) {
		t.Errorf("with scim.maintenance the front end's pod runs %q", c.Args)
	}
	if len(c.Ports) != 0 || c.StartupProbe != nil || c.LivenessProbe != nil || c.ReadinessProbe != nil {
		t.Errorf("the maintenance pod declares ports %+v and probes %v %v %v; want none", c.Ports, c.StartupProbe, c.LivenessProbe, c.ReadinessProbe)
	}
	for _, svc := range m.services {
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				t.Errorf("Service %s targets port %s by number: it would route to the maintenance pod", svc.Name, p.TargetPort.String())
			}
		}
	}
	if c.Image != r.Image || !reflect.DeepEqual(c.VolumeMounts, r.VolumeMounts) || !reflect.DeepEqual(c.EnvFrom, r.EnvFrom) || !reflect.DeepEqual(c.Env, r.Env) ||
		!reflect.DeepEqual(c.SecurityContext, r.SecurityContext) || !reflect.DeepEqual(pod.Spec.SecurityContext, was.Spec.SecurityContext) || !reflect.DeepEqual(pod.Spec.Volumes, was.Spec.Volumes) {
		t.Errorf("the maintenance pod is not the relay's in what restore and compact use:\n%+v\n%+v", pod.Spec, was.Spec)
	}
	sts, before := m.statefulSets[0], normal.statefulSets[0]
	if sts.Name != before.Name || !reflect.DeepEqual(sts.Spec.VolumeClaimTemplates, before.Spec.VolumeClaimTemplates) {
		t.Errorf("the maintenance StatefulSet %s does not keep the relay's %s and its claims", sts.Name, before.Name)
	}
	if workers := m.podOf(t, "sinks"); !reflect.DeepEqual(workers, normal.podOf(t, "sinks")) {
		t.Errorf("scim.maintenance changed the workers' pod: %+v", workers.Spec)
	}

	notes := files["scimrelay/templates/NOTES.txt"]
	if strings.Contains(files["scimrelay/templates/NOTES.txt"], "MAINTENANCE") == strings.Contains(mustRenderNotes(t, ""), "MAINTENANCE") {
		t.Error("NOTES.txt says MAINTENANCE in both renders or in neither")
	}
	execs := regexp.MustCompile(`kubectl -n (\S+) exec (?:-i )?(\S+) -- scimrelay ([^<\n]+)`).FindAllStringSubmatch(notes, -1)
	if len(execs) != 2 {
		t.Fatalf("NOTES.txt gives %d kubectl exec commands; want restore and compact:\n%s", len(execs), notes)
	}
	for _, e := range execs {
		args := strings.Fields(e[3])
		checkCommandLine(t, "NOTES.txt's "+args[0], args)
		if e[1] != "scimrelay" || e[2] != sts.Name+"-0" || flagValue(args, "--config") != flagValue(r.Args, "--config") {
			t.Errorf("NOTES.txt runs %s in %s/%s on %s; the pod is scimrelay/%s-0, the relay's relay.yaml %s", args[0], e[1], e[2], flagValue(args, "--config"), sts.Name, flagValue(r.Args, "--config"))
		}
	}
}

// mustRenderNotes is NOTES.txt as rendered with values.
func mustRenderNotes(t *testing.T, values string) string {
	t.Helper()
	files, err := render(t, "scimrelay", values)
	if err != nil {
		t.Fatal(err)
	}
	return files["scimrelay/templates/NOTES.txt"]
}

// TestChartREADMEInstallKeepsTheAdminTokenFromTheWorkers renders the
// README's my-values.yaml (secret.existingSecret holding the keys its
// comment lists, SCIMRELAY_ADMIN_TOKEN among them, and no
// sinks.existingSecret) and resolves each role's environment as the
// kubelet does (envFrom, then env, which wins): the README says the sink
// workers always generate their own admin token and are never given the
// front end's, with which one could mint SCIM tokens through the front
// end's admin API. They were given it through the shared Secret.
func TestChartREADMEInstallKeepsTheAdminTokenFromTheWorkers(t *testing.T) {
	section := readmeSection(t, "### Kubernetes (Helm)", "### systemd")
	values := regexp.MustCompile("(?s)```yaml\n# my-values.yaml\n(.*?)```").FindStringSubmatch(section)[1]
	comment := regexp.MustCompile(`existingSecret: (\S+)\s+# (.*)`).FindStringSubmatch(values)
	if comment == nil || !strings.Contains(comment[2], "SCIMRELAY_ADMIN_TOKEN") {
		t.Fatalf("the README's my-values.yaml does not list the admin token in its Secret:\n%s", values)
	}
	secret := map[string]string{}
	for _, k := range strings.Split(comment[2], ", ") {
		secret[k] = strings.ToLower(k) + "-0123456789abcdef"
	}
	m := mustRender(t, "scimrelay", values)
	for role, want := range map[string]string{"scim": secret["SCIMRELAY_ADMIN_TOKEN"], "sinks": ""} {
		c := m.podOf(t, role).Spec.Containers[0]
		env := map[string]string{}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil && e.SecretRef.Name == comment[1] {
				maps.Copy(env, secret)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				env[e.Name] = e.Value
			}
		}
		relay, err := config.Parse([]byte(m.relayYAML(t)), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		if relay.Admin.Token != want {
			t.Errorf("with the README's my-values.yaml the %s pods run with admin.token %q, want %q", role, relay.Admin.Token, want)
		}
	}
}

// TestChartRefusesLiteralCredentialsInURLs: a URL's user information and
// a sink URL's query values are secrets to the relay (it redacts them
// wherever it shows a URL, the admin API included), and the chart writes
// relay.yaml into a ConfigMap the view role reads: a literal one in
// config.sinks[].url or nats.url is refused, naming the key, as a literal
// sink secret is. The same URLs with those parts, or the whole URL, from
// ${VARIABLE}s render and pass the role's check. They rendered, the
// credential in the ConfigMap.
func TestChartRefusesLiteralCredentialsInURLs(t *testing.T) {
	for _, c := range []struct{ values, key string }{
		{`config: {sinks: [{name: crm, url: "https://relay:s3cr3t@crm.example.com/hooks/scim", secret: "${CRM_WEBHOOK_SECRET}"}]}`, "config.sinks[0].url"},
		{`config: {sinks: [{name: crm, url: "https://crm.example.com/hooks/scim?x=1&api_key=s3cr3t", secret: "${CRM_WEBHOOK_SECRET}"}]}`, "config.sinks[0].url"},
		{`nats: {url: "nats://relay:s3cr3t@nats:4222"}`, "nats.url"},
		{`nats: {url: "nats://s3cr3t@nats:4222"}`, "nats.url"},
	} {
		_, err := render(t, "scimrelay", c.values)
		if err == nil || !strings.Contains(err.Error(), c.key+" holds a credential") {
			t.Errorf("values %s: %v; want it refused naming %s", c.values, err, c.key)
		}
	}
	m := mustRender(t, "scimrelay", `
config: {sinks: [{name: crm, url: "${CRM_URL}", secret: "${CRM_WEBHOOK_SECRET}"}, {name: erp, url: "https://relay:${ERP_PASSWORD}@erp.example.com/h?api_key=${ERP_KEY}", secret: "${CRM_WEBHOOK_SECRET}"}]}
nats: {url: "nats://relay:${NATS_PASSWORD}@nats:4222"}
secret: {webhookSecrets: {CRM_URL: "https://crm.example.com/hooks/scim?api_key=s3cr3t", ERP_PASSWORD: pw, ERP_KEY: k, NATS_PASSWORD: pw, CRM_WEBHOOK_SECRET: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}}
`)
	if text := m.relayYAML(t); strings.Contains(text, "s3cr3t") {
		t.Fatalf("the ConfigMap holds a credential:\n%s", text)
	}
	checkRoleYAML(t, "sink and NATS URLs with variables", "sinks", m.relayYAML(t), m.envOf(t, "sinks"))
}

// TestChartRefusesNATSFilesItDoesNotMount: config.nats.credentials or
// config.nats.nkey names a file no pod of the chart mounts (values.yaml:
// the chart sets nats.credentials from nats.credentialsSecret), and a
// credentials key with a "/" or of "." or ".." names one no Secret can
// hold: each is refused when rendering, as config.nats.tls is, where both
// roles failed their start in a loop.
func TestChartRefusesNATSFilesItDoesNotMount(t *testing.T) {
	for _, c := range []struct{ values, want string }{
		{`config: {nats: {credentials: /etc/nats/relay.creds}}`, "config.nats.credentials and config.nats.nkey name files the chart does not mount"},
		{`config: {nats: {nkey: /etc/nats/relay.nk}}`, "config.nats.credentials and config.nats.nkey name files the chart does not mount"},
		{`nats: {credentialsSecret: {name: scimrelay-nats, key: "../relay.creds"}}`, "credentialsSecret/key"},
		{`nats: {credentialsSecret: {name: scimrelay-nats, key: "nats/relay.creds"}}`, "credentialsSecret/key"},
		{`nats: {credentialsSecret: {name: scimrelay-nats, key: ".."}}`, "is not a key a Secret can have"},
	} {
		if _, err := render(t, "scimrelay", c.values); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %s: %v; want it refused, saying %q", c.values, err, c.want)
		}
	}
}

// TestChartValuesCommentsHold holds promises the comments of values.yaml
// (and docs/decisions.md, Packaging and Operations) make about the rendered
// chart that no other test looked at.
func TestChartValuesCommentsHold(t *testing.T) {
	files, err := render(t, "scimrelay", `nats: {credentialsSecret: {name: nats-creds}, tlsSecret: {name: nats-tls}}`)
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, files)

	// values.yaml, probes: "Start-up waits for NATS and the stream (up to 2
	// minutes) before the admin listener opens; liveness starts counting
	// after it." The startup probe must outlast those 2 minutes, or the
	// kubelet kills a pod that is waiting as designed (serve's
	// context.WithTimeout(ctx, 2*time.Minute) before the admin listener).
	const startWait = 2 * time.Minute
	for _, role := range []string{"scim", "sinks"} {
		c := m.podOf(t, role).Spec.Containers[0]
		p := c.StartupProbe
		if p == nil {
			t.Errorf("%s: no startup probe", role)
			continue
		}
		period, failures := p.PeriodSeconds, p.FailureThreshold
		if period == 0 {
			period = 10 // Kubernetes' default
		}
		if failures == 0 {
			failures = 3
		}
		if budget := time.Duration(period*failures) * time.Second; budget <= startWait {
			t.Errorf("%s: the startup probe gives up after %s (periodSeconds %d × failureThreshold %d); values.yaml promises start-up may wait %s for NATS and the stream before /healthz answers", role, budget, period, failures, startWait)
		}
	}

	// values.yaml, sinks.spreadAcrossNodes: "Prefer spreading the workers
	// over nodes": a preference, which never leaves a worker unscheduled.
	for _, c := range m.deployments[0].Spec.Template.Spec.TopologySpreadConstraints {
		if c.WhenUnsatisfiable != corev1.ScheduleAnyway {
			t.Errorf("the workers' topology spread constraint on %s is %s; values.yaml says the chart prefers spreading (ScheduleAnyway), never refusing to schedule a worker", c.TopologyKey, c.WhenUnsatisfiable)
		}
	}

	// docs/decisions.md (a key everyone can read is said): the chart gives
	// the relay its NATS credentials and TLS key with defaultMode 0440,
	// readable by the pod's group (fsGroup) and not by every user, so that
	// serve does not warn of them at each start.
	for _, role := range []string{"scim", "sinks"} {
		seen := 0
		for _, v := range m.podOf(t, role).Spec.Volumes {
			if v.Secret == nil {
				continue
			}
			seen++
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
				t.Errorf("%s: Secret volume %s has defaultMode %v; want no access for other users (0440)", role, v.Name, v.Secret.DefaultMode)
			}
		}
		if seen != 2 {
			t.Errorf("%s: %d Secret volumes; want the NATS credentials and TLS files", role, seen)
		}
	}

	// NOTES.txt, step 1: "Route HTTPS from your ingress to Service
	// <release>-scim, port <ports.scim>": that Service, on that port,
	// reaching the scim pod's SCIM port.
	for _, values := range []string{"", "ports: {scim: 9443}"} {
		files, err := render(t, "scimrelay", values)
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, files)
		step := regexp.MustCompile(`Route HTTPS from your ingress to Service (\S+), port (\d+),`).FindStringSubmatch(files["scimrelay/templates/NOTES.txt"])
		if step == nil {
			t.Fatalf("values %q: NOTES.txt no longer says where to route HTTPS", values)
		}
		svc := m.service(t, step[1])
		ok := false
		for _, p := range svc.Spec.Ports {
			if fmt.Sprint(p.Port) == step[2] && p.TargetPort.String() == "scim" {
				ok = true
			}
		}
		if !ok {
			t.Errorf("values %q: NOTES.txt routes HTTPS to Service %s port %s, which it does not serve SCIM on: %+v", values, step[1], step[2], svc.Spec.Ports)
		}
	}

	// values.yaml, serviceMonitor: interval and scrapeTimeout are the
	// ServiceMonitor's; and a scrape runs the readiness checks, each
	// bounded at 5 s (docs/decisions.md, Readiness: scimrelay_ready), so
	// the default timeout must outlast them.
	files, err = render(t, "scimrelay", "serviceMonitor: {enabled: true, interval: 45s, scrapeTimeout: 20s}")
	if err != nil {
		t.Fatal(err)
	}
	if sm := decode(t, files).serviceMonitors; len(sm) != 1 || len(sm[0].Spec.Endpoints) != 1 || sm[0].Spec.Endpoints[0].Interval != "45s" || sm[0].Spec.Endpoints[0].ScrapeTimeout != "20s" {
		t.Errorf("serviceMonitor.interval 45s and scrapeTimeout 20s rendered as %+v", sm)
	}
	files, err = render(t, "scimrelay", "serviceMonitor: {enabled: true}")
	if err != nil {
		t.Fatal(err)
	}
	if sm := decode(t, files).serviceMonitors; len(sm) == 1 && len(sm[0].Spec.Endpoints) == 1 {
		if d, err := time.ParseDuration(string(sm[0].Spec.Endpoints[0].ScrapeTimeout)); err != nil || d <= 5*time.Second {
			t.Errorf("the ServiceMonitor's default scrapeTimeout %q; a scrape may wait 5 s for the readiness checks", sm[0].Spec.Endpoints[0].ScrapeTimeout)
		}
	}
}
