// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestRelayYAMLSinkExampleShowsTheDefaults holds relay.yaml's commented
// sink example to "relay.yaml documents every key with its default": each
// setting it shows that a sink need not set (type, format, timeout,
// allow_private, allow_private_proxy, concurrency, the batch's two
// settings, and retry, "the default") is the value a sink that leaves it
// out gets.
func TestRelayYAMLSinkExampleShowsTheDefaults(t *testing.T) {
	text, err := os.ReadFile("../relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, example, ok := strings.Cut(string(text), "\nsinks: []\n")
	if !ok {
		t.Fatal(`relay.yaml has no "sinks: []" line followed by the commented example`)
	}
	lines := strings.Split(example, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "#")
	}
	var shown []struct {
		Type              string
		Format            string
		Timeout           string
		AllowPrivate      bool `yaml:"allow_private"`
		AllowPrivateProxy bool `yaml:"allow_private_proxy"`
		Concurrency       int
		Batch             struct {
			MaxEvents int    `yaml:"max_events"`
			MaxWait   string `yaml:"max_wait"`
		}
		Retry []string
	}
	if err := yaml.Unmarshal([]byte(strings.Join(lines, "\n")), &shown); err != nil || len(shown) != 1 {
		t.Fatalf("relay.yaml's sink example: %v (%d sinks)", err, len(shown))
	}
	ex := shown[0]
	duration := func(s string) time.Duration {
		t.Helper()
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var retry Schedule
	for _, r := range ex.Retry {
		retry = append(retry, duration(r))
	}

	m, err := NewManager(Options{Sinks: []Config{
		{Name: "plain", URL: "https://crm.example.com/h", Secret: testSecret},
		{Name: "batched", URL: "https://crm.example.com/h", Secret: testSecret, Batch: &Batch{}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	plain, batched := m.sinks["plain"], m.sinks["batched"]
	wh := plain.sink.(*Webhook)
	if ex.Type != "webhook" || ex.Format != wh.o.Format || duration(ex.Timeout) != wh.o.Timeout ||
		ex.AllowPrivate || ex.AllowPrivateProxy || wh.o.AllowPrivate || wh.o.AllowPrivateProxy ||
		ex.Concurrency != plain.cfg.Concurrency || !slices.Equal(retry, plain.cfg.Retry) {
		t.Errorf("relay.yaml's example shows %+v; a sink that leaves them out gets format %s, timeout %s, allow_private %v, allow_private_proxy %v, concurrency %d, retry %v",
			ex, wh.o.Format, wh.o.Timeout, wh.o.AllowPrivate, wh.o.AllowPrivateProxy, plain.cfg.Concurrency, plain.cfg.Retry)
	}
	if b := batched.cfg.Batch; ex.Batch.MaxEvents != b.MaxEvents || duration(ex.Batch.MaxWait) != b.MaxWait {
		t.Errorf("relay.yaml's example batch is %+v; an empty batch block gets %+v", ex.Batch, b)
	}
}
