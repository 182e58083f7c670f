// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
)

func TestCheck(t *testing.T) {
	good := func(edit func(*Config)) Config {
		c := Config{Name: "crm", URL: "https://crm.example.com/h", Secret: testSecret}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	tests := []struct {
		name  string
		sinks []Config
		want  []string // every line of the error, in order
	}{
		{"name", []Config{good(func(c *Config) { c.Name = "CRM" })}, []string{`sinks[0].name: must match [a-z0-9][a-z0-9_-]* (at most 64 characters), got "CRM"`}},
		{"empty retry schedule", []Config{good(func(c *Config) { c.Retry = []time.Duration{} })}, []string{"sinks[0].retry: is an empty schedule; leave retry out for the default"}},
		{"duplicate", []Config{good(nil), good(nil)}, []string{`sinks[1].name: "crm" is also sinks[0]`}},
		{"type", []Config{good(func(c *Config) { c.Type = "kafka" })}, []string{`sinks[0].type: must be webhook, got "kafka"`}},
		{"event outside the catalog", []Config{good(func(c *Config) { c.Events = []string{"user.*", "user.exploded"} })}, []string{`sinks[0].events[1]: event pattern "user.exploded": no such event`}},
		{"event shape", []Config{good(func(c *Config) { c.Events = []string{"users"} })}, []string{`sinks[0].events[0]: event pattern "users": want`}},
		{"tenant", []Config{good(func(c *Config) { c.Tenants = []string{"Acme"} })}, []string{`sinks[0].tenants[0]: must be a tenant name`}},
		{"tenant twice", []Config{good(func(c *Config) { c.Tenants = []string{"acme", "beta", "acme", "acme"} })},
			[]string{`sinks[0].tenants[2]: "acme" is also tenants[0]; give it once`, `sinks[0].tenants[3]: "acme" is also tenants[0]; give it once`}},
		{"concurrency", []Config{good(func(c *Config) { c.Concurrency = 5000 })}, []string{"sinks[0].concurrency: must be between 1 and 1024, got 5000"}},
		{"retry", []Config{good(func(c *Config) { c.Retry = Schedule{time.Second, 0} })}, []string{"sinks[0].retry[1]: must be positive"}},
		{"url", []Config{good(func(c *Config) { c.URL = "ftp://x" })}, []string{`sinks[0].url: must be an absolute http(s) URL, got "ftp://x"`}},
		{"port out of range", []Config{good(func(c *Config) { c.URL = "https://crm.example.com:99999/h" })}, []string{"sinks[0].url: port 99999 is not between 1 and 65535"}},
		{"fragment", []Config{good(func(c *Config) { c.URL = "https://crm.example.com/h#tok3n" })}, []string{"sinks[0].url: has a #fragment, which is never sent"}},
		{"port 0", []Config{good(func(c *Config) { c.URL = "https://crm.example.com:0/h" })}, []string{"sinks[0].url: port 0 is not between 1 and 65535"}},
		{"loopback", []Config{good(func(c *Config) { c.URL = "http://127.0.0.1:9000/h" })}, []string{"sinks[0].url: 127.0.0.1 is a loopback, private or link-local address; set allow_private: true"}},
		// Hosts the relay and a proxy would read differently.
		{"fullwidth digits", []Config{good(func(c *Config) { c.URL = "https://１０.０.０.１/h" })}, []string{`sinks[0].url: "１０.０.０.１" is not written in ASCII; write it as "10.0.0.1"`}},
		{"decimal IPv4", []Config{good(func(c *Config) { c.URL = "http://2852039166/h" })}, []string{`sinks[0].url: "2852039166" is an IPv4 address written other than in dotted decimal`}},
		{"hex IPv4", []Config{good(func(c *Config) { c.URL = "http://0xa9.0xfe.0xa9.0xfe/h" })}, []string{`sinks[0].url: "0xa9.0xfe.0xa9.0xfe" is an IPv4 address written other than in dotted decimal`}},
		{"octal IPv4", []Config{good(func(c *Config) { c.URL = "http://0177.0.0.1/h"; c.AllowPrivate = true })}, []string{`sinks[0].url: "0177.0.0.1" is an IPv4 address written other than in dotted decimal`}},
		// A trailing dot makes an address a name to the relay's resolver.
		{"decimal IPv4 with a trailing dot", []Config{good(func(c *Config) { c.URL = "http://2130706433./h" })}, []string{`sinks[0].url: "2130706433." is an IPv4 address written other than in dotted decimal`}},
		{"hex IPv4 with a trailing dot", []Config{good(func(c *Config) { c.URL = "http://0x7f.0.0.1./h" })}, []string{`sinks[0].url: "0x7f.0.0.1." is an IPv4 address written other than in dotted decimal`}},
		{"octal IPv4 with a trailing dot", []Config{good(func(c *Config) { c.URL = "http://0177.0.0.1./h" })}, []string{`sinks[0].url: "0177.0.0.1." is an IPv4 address written other than in dotted decimal`}},
		{"hex number with a trailing dot", []Config{good(func(c *Config) { c.URL = "http://0xa9fea9fe./h" })}, []string{`sinks[0].url: "0xa9fea9fe." is an IPv4 address written other than in dotted decimal`}},
		{"metadata address with a trailing dot", []Config{good(func(c *Config) { c.URL = "http://169.254.169.254./latest" })}, []string{`sinks[0].url: "169.254.169.254." is an IP address with a trailing dot; write it as "169.254.169.254"`}},
		{"private address with a trailing dot and allow_private", []Config{good(func(c *Config) { c.URL = "http://10.0.0.1./h"; c.AllowPrivate = true })}, []string{`sinks[0].url: "10.0.0.1." is an IP address with a trailing dot`}},
		{"secret missing", []Config{good(func(c *Config) { c.Secret = "" })}, []string{"sinks[0].secret: must be whsec_"}},
		{"format", []Config{good(func(c *Config) { c.Format = "xml" })}, []string{`sinks[0].format: must be binary or structured, got "xml"`}},
		{"timeout", []Config{good(func(c *Config) { c.Timeout = time.Hour })}, []string{"sinks[0].timeout: must be 0 (10s) or between 100ms and 5m0s, got 1h0m0s"}},
		{"timeout of a nanosecond", []Config{good(func(c *Config) { c.Timeout = time.Nanosecond })}, []string{"sinks[0].timeout: must be 0 (10s) or between 100ms and 5m0s, got 1ns"}},
		{"header", []Config{good(func(c *Config) { c.Headers = map[string]string{"ce-id": "x"} })}, []string{"sinks[0].headers.ce-id: is set by scimrelay on every delivery and cannot be overridden"}},
		{"header with _ for -", []Config{good(func(c *Config) { c.Headers = map[string]string{"Webhook_Signature": "x"} })}, []string{"sinks[0].headers.Webhook_Signature: is set by scimrelay on every delivery and cannot be overridden"}},
		{"header name not a token", []Config{good(func(c *Config) { c.Headers = map[string]string{"X Bad": "v"} })}, []string{`sinks[0].headers: "X Bad" is not an HTTP header name`}},
		{"header value with a line break", []Config{good(func(c *Config) { c.Headers = map[string]string{"X-Key": "a\nb"} })}, []string{"sinks[0].headers.X-Key: its value holds a line break"}},
		{"header without a value", []Config{good(func(c *Config) { c.Headers = map[string]string{"X-Api-Key": " "} })}, []string{"sinks[0].headers.X-Api-Key: has no value"}},
		{"authorization scheme alone", []Config{good(func(c *Config) { c.Headers = map[string]string{"Authorization": "Bearer "} })}, []string{`sinks[0].headers.Authorization: has its scheme "Bearer" and no credential`}},
		{"authorization of another scheme alone", []Config{good(func(c *Config) { c.Headers = map[string]string{"Authorization": "Splunk "} })}, []string{`sinks[0].headers.Authorization: has its scheme "Splunk" and no credential`}}, // "Splunk ${HEC_TOKEN}", the variable empty
		{"hop-by-hop header", []Config{good(func(c *Config) { c.Headers = map[string]string{"Connection": "close"} })}, []string{"sinks[0].headers.Connection: is set by scimrelay on every delivery and cannot be overridden"}},
		{"trace header", []Config{good(func(c *Config) { c.Headers = map[string]string{"traceparent": "00-x"} })}, []string{"sinks[0].headers.traceparent: is set by scimrelay on every delivery and cannot be overridden"}},
		{"batch with a format", []Config{good(func(c *Config) { c.Batch = &Batch{}; c.Format = "binary" })}, []string{`sinks[0].format: batched deliveries are always application/cloudevents-batch+json; leave format out, got "binary"`}},
		{"batch bounds", []Config{good(func(c *Config) { c.Batch = &Batch{MaxEvents: 5000, MaxWait: time.Minute} })},
			[]string{"sinks[0].batch.max_events: must be between 1 and 1000, got 5000", "sinks[0].batch.max_wait: must be 0 (the default, 50ms) or at most 10s, got 1m0s"}},
		{"batch bytes", []Config{good(func(c *Config) { c.Batch = &Batch{MaxBytes: 1000} })},
			[]string{"sinks[0].batch.max_bytes: must be between 64KiB and 64MiB, got 1000 bytes"}},
		{"previous secret", []Config{good(func(c *Config) { c.PreviousSecret = testSecret; c.PreviousSecretExpires = "soon" })},
			[]string{"sinks[0].previous_secret: is the same as secret", `sinks[0].previous_secret_expires: want an RFC 3339 time such as 2026-12-31T00:00:00Z, got "soon"`}},
		{"every problem at once", []Config{good(func(c *Config) { c.Name = "" }), good(func(c *Config) { c.Format = "xml"; c.Secret = "x" })},
			[]string{`sinks[0].name: must match`, `sinks[1].format: must be binary`, `sinks[1].secret: must be whsec_`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Sinks: tt.sinks}
			err := o.Check()
			if err == nil {
				t.Fatal("Check accepted the configuration")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("%d problems, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				found := false
				for _, l := range lines {
					found = found || strings.HasPrefix(l, w)
				}
				if !found {
					t.Errorf("no problem starting %q in:\n%v", w, err)
				}
			}
			if _, merr := NewManager(o); merr == nil || merr.Error() != err.Error() {
				t.Errorf("NewManager and Check disagree:\n%v\n%v", merr, err)
			}
		})
	}
}

// TestDefaults checks what a sink that sets only its name, URL and secret gets.
func TestDefaults(t *testing.T) {
	m, err := NewManager(Options{Sinks: []Config{{Name: "crm", URL: "https://crm.example.com/h", Secret: testSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	s := m.sinks["crm"]
	wh := s.sink.(*Webhook)
	if s.cfg.Concurrency != 16 || len(s.cfg.Retry) != len(DefaultSchedule) || wh.o.Format != "binary" || wh.o.Timeout != 10*time.Second || len(s.patterns) != 0 {
		t.Errorf("defaults: %+v %+v", s.cfg, wh.o)
	}
	if err := (Options{}).Check(); err != nil {
		t.Errorf("no sinks: %v", err)
	}
	// README: an event whose signing key the stream does not name waits
	// 15 s, three of the front ends' 5-second key checks; a connection to
	// a receiver closes after 90 s idle.
	if m.o.KeyWait != 15*time.Second || events.KeyCheckInterval != 5*time.Second {
		t.Errorf("an event waits %s for its key, front ends check it every %s; README says 15 s and 5 s", m.o.KeyWait, events.KeyCheckInterval)
	}
	if idle := newTransport(wh.o).IdleConnTimeout; idle != 90*time.Second {
		t.Errorf("a receiver's connection closes after %s idle; README says 90 s", idle)
	}
	// An empty batch block turns batching on with its defaults.
	m, err = NewManager(Options{Sinks: []Config{{Name: "crm", URL: "https://crm.example.com/h", Secret: testSecret, Batch: &Batch{}}}})
	if err != nil {
		t.Fatal(err)
	}
	s = m.sinks["crm"]
	if b := s.cfg.Batch; b.MaxEvents != 100 || b.MaxWait != 50*time.Millisecond || s.sink.(*Webhook).o.Format != "batch" {
		t.Errorf("batch defaults: %+v, format %s", b, s.sink.(*Webhook).o.Format)
	}
}

// TestClearText: plain http is said of a host that is not, by its address
// or the form of its name, on this machine or a private network.
func TestClearText(t *testing.T) {
	for url, said := range map[string]bool{
		"http://crm.example.com/h":               true,
		"HTTP://CRM.EXAMPLE.COM:8080/h":          true,
		"http://8.8.8.8/h":                       true,
		"http://[2001:4860::8888]/h":             true,
		"https://crm.example.com/h":              false,
		"http://receiver:9000/h":                 false, // a Compose service
		"http://crm.default.svc.cluster.local/h": false,
		"http://crm.default.svc/h":               false,
		"http://hooks.corp.internal/h":           false,
		"http://printer.local/h":                 false,
		"http://localhost:9000/h":                false,
		"http://10.1.2.3/h":                      false,
		"http://[::1]:9000/h":                    false,
		"http://crm.example.com.svc.evil.com/h":  true,
	} {
		if got := ClearText(url) != ""; got != said {
			t.Errorf("ClearText(%s) said: %t, want %t", url, got, said)
		}
	}
}
