package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/scimrelay/scimrelay/config"
)

// No Docker engine or Kubernetes cluster runs here, so these tests check the
// deployment files as far as that allows: they parse, every relay.yaml in
// them validates, every command line they run is one the CLI accepts, and
// the paths they refer to exist.

func deployEnv(k string) (string, bool) {
	v, ok := map[string]string{
		"SCIMRELAY_ADMIN_TOKEN": "admin-token-0123456789abcdef",
		"DEFAULT_SCIM_TOKEN":    "scim-token-0123456789abcdef",
		"DEMO_WEBHOOK_SECRET":   sinkSecret,
		"CRM_WEBHOOK_SECRET":    sinkSecret,
	}[k]
	return v, ok
}

func mustParseConfig(t *testing.T, name string, text []byte) *config.Config {
	t.Helper()
	cfg, err := config.Parse(text, deployEnv)
	if err != nil {
		t.Fatalf("%s does not validate: %v", name, err)
	}
	return cfg
}

// checkServeArgs runs the command line through the CLI's flag parsing.
func checkServeArgs(t *testing.T, where string, args []string) {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("%s: no command", where)
	}
	root := newRootCommand()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Fatalf("%s: %v is not a scimrelay command: %v", where, args, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("%s: %v: %v", where, args, err)
	}
	if role, err := cmd.Flags().GetString("role"); err == nil && role != roleAll && role != roleSCIM && role != roleSinks {
		t.Fatalf("%s: unknown role %q", where, role)
	}
}

func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image   string            `yaml:"image"`
			Command []string          `yaml:"command"`
			Volumes []string          `yaml:"volumes"`
			Build   map[string]string `yaml:"build"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	roles := map[string]int{}
	natsNodes := 0
	for name, s := range compose.Services {
		switch {
		case strings.HasPrefix(name, "nats-"):
			natsNodes++
			if !strings.Contains(strings.Join(s.Command, " "), "--jetstream") || !strings.Contains(strings.Join(s.Command, " "), "--routes") {
				t.Errorf("%s is not a clustered JetStream node: %v", name, s.Command)
			}
		case s.Image == "scimrelay:local":
			checkServeArgs(t, name, s.Command)
			if s.Command[0] == "serve" {
				for i, a := range s.Command {
					if a == "--role" {
						roles[s.Command[i+1]]++
					}
				}
			}
		}
	}
	if natsNodes != 3 || roles[roleSCIM] != 1 || roles[roleSinks] != 2 {
		t.Fatalf("compose runs %d NATS nodes and roles %v; want 3, one scim, two sinks", natsNodes, roles)
	}
	// The relay.yaml it mounts validates, with replicated streams and the demo sink.
	text, err := os.ReadFile("../../deploy/compose/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustParseConfig(t, "deploy/compose/relay.yaml", text)
	if cfg.Embedded() || cfg.StreamReplicas() != 3 || len(cfg.Sinks) != 1 {
		t.Fatalf("compose relay.yaml: embedded %v, replicas %d, sinks %d", cfg.Embedded(), cfg.StreamReplicas(), len(cfg.Sinks))
	}
	if _, err := os.Stat("../../deploy/Dockerfile"); err != nil {
		t.Fatal(err)
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{"CGO_ENABLED=0", "USER 65532", "VOLUME", "./cmd/scimrelay"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// Every file it copies from the repository exists.
	for _, m := range regexp.MustCompile(`(?m)^COPY (deploy/\S+)`).FindAllStringSubmatch(text, -1) {
		if _, err := os.Stat(filepath.Join("../..", m[1])); err != nil {
			t.Errorf("Dockerfile copies %s: %v", m[1], err)
		}
	}
	cmd := regexp.MustCompile(`(?m)^CMD \[(.*)\]`).FindStringSubmatch(text)
	if cmd == nil {
		t.Fatal("Dockerfile has no CMD")
	}
	var args []string
	if err := yaml.Unmarshal([]byte("["+cmd[1]+"]"), &args); err != nil {
		t.Fatal(err)
	}
	checkServeArgs(t, "Dockerfile", args)
	conf, err := os.ReadFile("../../deploy/docker/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := mustParseConfig(t, "deploy/docker/relay.yaml", conf); cfg.DataDir != "/var/lib/scimrelay" {
		t.Errorf("the image's data_dir is %s, not its volume", cfg.DataDir)
	}
}

func TestKubernetesManifests(t *testing.T) {
	files, err := filepath.Glob("../../deploy/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	kinds := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Metadata   struct {
					Name, Namespace string
				} `yaml:"metadata"`
				Data map[string]string `yaml:"data"`
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Args           []string `yaml:"args"`
								LivenessProbe  probe    `yaml:"livenessProbe"`
								ReadinessProbe probe    `yaml:"readinessProbe"`
							} `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if doc.APIVersion == "" || doc.Kind == "" || doc.Metadata.Name == "" {
				t.Fatalf("%s: a document without apiVersion, kind or name", f)
			}
			kinds[doc.Kind]++
			for _, c := range doc.Spec.Template.Spec.Containers {
				checkServeArgs(t, f, c.Args)
				if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
					t.Errorf("%s: probes %s and %s; the admin listener serves /healthz and /readyz", f, c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
				}
			}
			if text, ok := doc.Data["relay.yaml"]; ok {
				mustParseConfig(t, f, []byte(text))
			}
		}
	}
	for _, k := range []string{"StatefulSet", "Deployment", "Service", "Secret", "ConfigMap"} {
		if kinds[k] == 0 {
			t.Errorf("no %s among the manifests", k)
		}
	}
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
	} `yaml:"httpGet"`
}
