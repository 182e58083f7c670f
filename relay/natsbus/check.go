// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Check reports every problem of the options at once, each naming its
// relay.yaml key ("nats.url: ..."), without connecting or opening a file:
// the URLs' form, options that apply only to an external server or only
// to the embedded one, and options that go together.
func (o Options) Check() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("nats.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(o.URL) == "" {
		if o.Listen != "" {
			if _, port, err := net.SplitHostPort(o.Listen); err != nil || !validPort(port) {
				add("listen", "must be host:port such as 127.0.0.1:4222, or \"\" for in-process only, got %q", o.Listen)
			}
		}
		for _, f := range []struct{ field, val string }{{"credentials", o.Credentials}, {"nkey", o.NkeySeedFile},
			{"token", o.Token}, {"user", o.User}} {
			if f.val != "" {
				add(f.field, "applies only to an external NATS (set nats.url); the embedded server gives the relay a credential of its own and subscribers theirs (scimrelay subscriber add)")
			}
		}
		switch {
		case o.TLS.CertFile != "" && o.Listen == "":
			add("tls", "secures the embedded server's listener, but nats.listen is empty (in-process only)")
		case o.TLS.CAFile != "" && o.TLS.CertFile == "":
			add("tls.ca_file", "verifies subscribers' client certificates on the embedded listener, which needs cert_file and key_file")
		}
	} else {
		for _, raw := range strings.Split(o.URL, ",") {
			u, err := url.Parse(strings.TrimSpace(raw))
			switch {
			case err != nil:
				// Not shown: it may hold a password.
				add("url", "an entry is not a URL such as nats://nats-1:4222 (a %% or # in a password must be written %%25 or %%23)")
				continue
			case u.Host == "":
				add("url", "%q is not a URL such as nats://nats-1:4222", redactURL(strings.TrimSpace(raw)))
				continue
			}
			switch u.Scheme {
			case "nats", "tls", "ws", "wss":
			default:
				add("url", "scheme %q is not one of nats, tls, ws, wss", u.Scheme)
			}
			if port := u.Port(); port != "" && (!validPort(port) || port == "0") {
				add("url", "port %s is not a port from 1 to 65535", port)
			}
		}
	}
	if (o.TLS.CertFile == "") != (o.TLS.KeyFile == "") {
		add("tls", "cert_file and key_file go together")
	}
	if o.Password != "" && o.User == "" {
		add("password", "needs nats.user")
	}
	// One credential: nats.go refuses a .creds file with an nkey at
	// connect ("user callback and nkey defined", naming no key), and
	// which of the others a server takes is its choice.
	var given []string
	for _, c := range []struct {
		key string
		set bool
	}{{"credentials", o.Credentials != ""}, {"nkey", o.NkeySeedFile != ""}, {"token", o.Token != ""}, {"user", o.User != ""}} {
		if c.set {
			given = append(given, c.key)
		}
	}
	if len(given) > 1 {
		add(given[1], "goes with nats.%s: give the relay one credential (credentials, nkey, token, or user with password)", given[0])
	}
	if o.ConnectTimeout < 0 || (o.ConnectTimeout > 0 && o.ConnectTimeout < minConnectTimeout) {
		// Shorter, even the embedded server's in-process connection did
		// not start: serve failed with "read pipe: i/o timeout", naming
		// no key.
		add("connect_timeout", "must be 0 (the default, 5s) or at least %s, got %s", minConnectTimeout, o.ConnectTimeout)
	}
	if o.SyncInterval < 0 || o.SyncInterval > maxSyncInterval || (o.SyncInterval > 0 && o.SyncInterval < minSyncInterval) {
		add("sync_interval", "must be 0 (every message written to disk before it is acknowledged) or from %s to %s (a shorter interval keeps the server writing to disk all the time), got %s", minSyncInterval, maxSyncInterval, o.SyncInterval)
	}
	return errors.Join(errs...)
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535
}

// maxSyncInterval bounds nats.sync_interval: the relay keeps each published
// event three times it, and a day is far past any server's setting.
const maxSyncInterval = 24 * time.Hour

// minSyncInterval is the shortest nats.sync_interval other than 0:
// nats-server panics at 1ns (its timer draws a random delay below half the
// interval) and spends most of a core writing its store at a few
// nanoseconds; 0 (sync_always) is what a file wanting every write on disk
// sets.
const minSyncInterval = 10 * time.Millisecond

// minConnectTimeout is the shortest nats.connect_timeout other than 0 (the
// default): a few milliseconds failed even the embedded server's
// in-process connection at start on a busy machine.
const minConnectTimeout = 100 * time.Millisecond
