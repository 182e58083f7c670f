// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string // "" when valid
	}{
		{"embedded", Options{Listen: "127.0.0.1:4222"}, ""},
		{"embedded in-process", Options{}, ""},
		{"external", Options{URL: "nats://a:4222, tls://b:4222", User: "u", Password: "p", TLS: TLS{CAFile: "ca", CertFile: "c", KeyFile: "k"}}, ""},
		{"embedded with TLS", Options{Listen: "127.0.0.1:4222", TLS: TLS{CAFile: "ca", CertFile: "c", KeyFile: "k"}}, ""},
		{"listen", Options{Listen: "4222"}, `nats.listen: must be host:port`},
		{"embedded credentials", Options{Credentials: "x.creds"}, "nats.credentials: applies only to an external NATS"},
		{"embedded nkey", Options{NkeySeedFile: "relay.nk"}, "nats.nkey: applies only to an external NATS"},
		{"embedded TLS in-process", Options{TLS: TLS{CertFile: "c", KeyFile: "k"}}, "nats.tls: secures the embedded server's listener, but nats.listen is empty"},
		{"embedded client CA alone", Options{Listen: "127.0.0.1:4222", TLS: TLS{CAFile: "ca"}}, "nats.tls.ca_file: verifies subscribers' client certificates"},
		{"url", Options{URL: "nats://a:4222,b"}, `nats.url: "b" is not a URL`},
		{"url credentials stay out of messages", Options{URL: "nats://u:secret@a:4222,x"}, `nats.url: "x"`},
		// Without the scheme, url.Parse reads no user information.
		{"url without its scheme, user and password", Options{URL: "relay:secret@nats-1:4222"}, `nats.url: "redacted@nats-1:4222"`},
		{"url without its scheme, token", Options{URL: "nats://a:4222, secret@nats-1"}, `nats.url: "redacted@nats-1"`},
		{"scheme", Options{URL: "http://a:4222"}, `nats.url: scheme "http"`},
		{"cert without key", Options{URL: "tls://a:4222", TLS: TLS{CertFile: "c"}}, "nats.tls: cert_file and key_file go together"},
		{"password without user", Options{URL: "nats://a:4222", Password: "p"}, "nats.password: needs nats.user"},
		{"two credentials", Options{URL: "nats://a:4222", Credentials: "x.creds", NkeySeedFile: "relay.nk"}, "nats.nkey: goes with nats.credentials: give the relay one credential"},
		{"token and user", Options{URL: "nats://a:4222", Token: "t", User: "u", Password: "p"}, "nats.user: goes with nats.token"},
		{"timeout", Options{ConnectTimeout: -time.Second}, "nats.connect_timeout: must be 0 (the default, 5s) or at least 100ms, got -1s"},
		{"timeout too short", Options{ConnectTimeout: time.Nanosecond}, "nats.connect_timeout: must be 0 (the default, 5s) or at least 100ms, got 1ns"},
		{"sync interval", Options{SyncInterval: -time.Second}, "nats.sync_interval: must be 0"},
		{"sync interval of a nanosecond", Options{SyncInterval: time.Nanosecond}, "nats.sync_interval: must be 0 (every message written to disk before it is acknowledged) or from 10ms to 24h0m0s"},
		{"sync interval just under the floor", Options{SyncInterval: 10*time.Millisecond - 1}, "nats.sync_interval: must be 0"},
		{"sync interval at the floor", Options{SyncInterval: 10 * time.Millisecond}, ""},
		{"sync always", Options{SyncInterval: 0}, ""},
		{"url with a password it cannot read", Options{URL: "nats://relay:p%ss@nats:4222"}, "nats.url: an entry is not a URL"},
		{"sync interval of a century", Options{SyncInterval: 36500 * 24 * time.Hour}, "nats.sync_interval: must be 0"}, // three times it overflowed
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Check()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), "secret"):
				t.Fatalf("the message shows a password: %v", err)
			}
		})
	}
}
