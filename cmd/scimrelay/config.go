// SPDX-License-Identifier: Apache-2.0

package main

import (
	"cmp"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/console"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/gcfloor"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/sinks"
)

// loadConfig reads relay.yaml and checks it for role the way serve builds
// it: every problem of the file and of the components, at once. serve and
// check both call it, and serve builds its components from the options
// checkConfig checked, so that the two cannot disagree.
func loadConfig(path, role string) (*config.Config, error) {
	cfg, err := config.LoadExcept(path, unusedBy(role))
	var problems config.Problems
	if err != nil && (cfg == nil || !errors.As(err, &problems)) {
		return nil, err
	}
	if role == roleSinks {
		// Not read in this role (unusedBy), so not checked either: a
		// token only part of which is a variable left unset ("scim-${X}")
		// would otherwise be refused as too short.
		for i := range cfg.Tenants {
			cfg.Tenants[i].Tokens = nil
		}
	}
	// A field the file's own problems name is left at its zero value, and
	// a component would only call that zero wrong again.
	named := map[string]bool{}
	for _, p := range problems {
		named[p.Field] = true
	}
	for _, p := range checkConfig(cfg, role) {
		if !named[p.Field] {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s: %w", path, sortProblems(problems))
	}
	return cfg, nil
}

// tenantToken matches the fields of the tenants' static tokens.
var tenantToken = regexp.MustCompile(`^tenants\[\d+\]\.tokens\[\d+\]$`)

// unusedBy says which secrets of relay.yaml a role never reads, so that
// its process need not be given them: a delivery worker serves no SCIM,
// so an unset variable in a tenant's token or in the SCIM listener's tls
// files is no error in role sinks (a token is then empty, which the store
// ignores, and the worker opens no SCIM listener). The sinks' secrets and
// headers are read in every role: the front end runs the admin API's
// replays and redrives, which sign and send.
func unusedBy(role string) func(field string) bool {
	return func(field string) bool {
		return role == roleSinks && (tenantToken.MatchString(field) || strings.HasPrefix(field, "tls."))
	}
}

// Bounds of the settings the composition layer applies itself.
const (
	minJSONDepth, maxJSONDepth = 4, 1000
	minMaxHeader, maxMaxHeader = 4 << 10, 16 << 20
	minBulkOps, maxBulkOps     = 1, 100_000
	minBulkPayload             = 1 << 10
	maxBulkPayload             = 256 << 20
	// maxMaxBody bounds limits.max_body: the SCIM handler takes four of
	// the largest bodies in flight per tenant, which past 2 EiB overflowed
	// and refused every body above 16 MiB with 429 for ever.
	maxMaxBody                 = 256 << 20
	minTokenLife, maxTokenLife = time.Minute, relay.MaxAccessTokenLifetime
	// minListenerTimeout bounds limits' *_timeout from below: at 1ns the
	// SCIM listener starts and every request fails.
	minListenerTimeout = 100 * time.Millisecond
	// maxShutdownDelay bounds limits.shutdown_delay: a stop's grace period
	// must hold it, the 30 s that requests under way are given to finish
	// and the 15 s to publish their events (60 s in Compose and the
	// chart), and in role all the sinks' hand-over too (the systemd
	// unit's 75 s).
	maxShutdownDelay = 10 * time.Second
)

// checkConfig builds every component's options from cfg for role and asks
// each component to check them, without opening a file or a socket; it
// checks itself only what spans components or what it applies itself (the
// listeners, none on another's port; the limits; the log; that the files
// NATS reads are there). Each problem names its relay.yaml field.
func checkConfig(cfg *config.Config, role string) config.Problems {
	var ps config.Problems
	add := func(field, format string, args ...any) {
		ps = append(ps, config.Problem{Field: field, Message: fmt.Sprintf(format, args...), Line: cfg.Line(field)})
	}
	if role != roleSinks {
		checkListen(add, "listen", cfg.Listen)
	}
	checkListen(add, "admin_listen", cfg.AdminListen)
	if role != roleSinks {
		checkListenerTLS(add, "tls", cfg.TLS)
	}
	checkListenerTLS(add, "admin.tls", cfg.Admin.TLS)
	checkSharedPorts(add, cfg, listeners(cfg, role))
	if _, err := publicURL(cfg.PublicURL); err != nil {
		add("public_url", "%v", err)
	}
	if strings.TrimSpace(cfg.DataDir) == "" {
		add("data_dir", "must not be empty")
	} else if d := strings.TrimSpace(cfg.DataDir); strings.HasPrefix(d, "~") {
		// Only a shell expands ~ (and ~user): the relay would make a
		// directory named "~" (or "~user") where it runs and keep its
		// data there.
		add("data_dir", "starts with ~, which only a shell expands to a home directory (the relay would create a directory named ~ where it runs); write the absolute path")
	}
	if _, err := newLogger(cfg.Log, io.Discard, nil); err != nil {
		ps = append(ps, problemsOf(cfg, err)...)
	}
	ps = append(ps, problemsOf(cfg, storeOptions(cfg, nil).Check())...)
	ps = append(ps, problemsOf(cfg, natsOptions(cfg, role).Check())...)
	checkFiles(add, natsFiles(cfg))
	ps = append(ps, problemsOf(cfg, streamOptions(cfg).Check())...)
	// Delivery workers publish nothing: the keep is the SCIM front end's.
	if keep, dup := keepPublished(cfg), time.Duration(cfg.NATS.Stream.Duplicates); role != roleSinks && dup > 0 && keep > dup {
		assumed := ""
		if cfg.SyncIntervalAssumed() {
			assumed = fmt.Sprintf(" (not set: with nats.url the relay assumes nats-server's default, %s; set it to the server's sync_interval, or 0 for sync_always or a cluster with replicas on other machines)", config.ExternalSyncInterval)
		}
		add("nats.sync_interval", "the relay keeps a published event in its outbox for three times it (%s), longer than nats.stream.duplicates (%s): a copy published again after a crash would not be recognised%s", keep, dup, assumed)
	}
	if cfg.Embedded() {
		if role == roleSinks {
			add("nats.url", "--role sinks needs an external NATS: delivery workers share the SCIM front end's stream")
		}
		if cfg.NATS.Stream.Replicas > 1 {
			add("nats.stream.replicas", "the embedded server keeps 1 replica; replicas > 1 need nats.url pointing at a cluster")
		}
	}
	if cfg.Admin.Token != "" {
		if err := relay.CheckStaticToken(cfg.Admin.Token); err != nil {
			add("admin.token", "%v", err)
		}
		for _, field := range tenantTokensOpeningAdmin(cfg, cfg.Admin.Token) {
			add(field, "is admin.token; a tenant's SCIM token must not open the admin API")
		}
	}
	if cfg.Memory.GCFloor > gcfloor.MaxFloor {
		add("memory.gc_floor", "must be at most 1TiB (0 turns the floor off), got %d bytes", cfg.Memory.GCFloor)
	}
	checkLimits(add, cfg)
	checkOAuth(add, cfg.OAuth)
	for i, h := range cfg.Admin.Hosts {
		if !admin.ValidHostName(h) {
			add(fmt.Sprintf("admin.hosts[%d]", i), "must be a host name such as console.example.com (no scheme, port or path), got %q", h)
		}
	}
	if cfg.Admin.Console && (cfg.Admin.SessionIdle < config.Duration(time.Minute) || cfg.Admin.SessionIdle > config.Duration(console.DefaultMaxAge)) {
		add("admin.session_idle", "must be from 1m to %s, got %s", console.DefaultMaxAge, time.Duration(cfg.Admin.SessionIdle))
	}
	ps = append(ps, problemsOf(cfg, logOptions(cfg).Check())...)
	if len(cfg.Tenants) == 0 {
		add("tenants", "at least one tenant is needed; its SCIM base path is /scim/v2/<name>")
	}
	ps = append(ps, problemsOf(cfg, sinkOptions(cfg).Check())...)
	tenants := map[string]bool{}
	for _, t := range cfg.Tenants {
		tenants[t.Name] = true
	}
	for i, s := range cfg.Sinks {
		for j, t := range s.Tenants {
			if events.ValidName(t) && !tenants[t] {
				// The edit that silences this, emptying tenants, would
				// send the sink every tenant's events.
				add(fmt.Sprintf("sinks[%d].tenants[%d]", i, j), "no tenant %q is configured; remove the name from tenants, or the sink: tenants left empty (or out) sends the sink every tenant's events", t)
			}
		}
	}
	return ps
}

// checkListen checks a listener address: host:port with a numeric port.
func checkListen(add func(field, format string, args ...any), field, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		add(field, "must be host:port, e.g. 127.0.0.1:8080, got %q", addr)
	}
}

// listener is an address a process listens on, by its relay.yaml field.
type listener struct{ field, addr string }

// listeners are the addresses a process of role listens on: the SCIM
// listener (not in role sinks), the admin listener (in every role) and the
// embedded NATS server's client listener (where the relay runs one and
// nats.listen does not keep it in-process).
func listeners(cfg *config.Config, role string) []listener {
	var ls []listener
	if role != roleSinks {
		ls = append(ls, listener{"listen", cfg.Listen})
	}
	ls = append(ls, listener{"admin_listen", cfg.AdminListen})
	if role != roleSinks && cfg.Embedded() && cfg.NATS.Listen != "" {
		ls = append(ls, listener{"nats.listen", cfg.NATS.Listen})
	}
	return ls
}

// checkSharedPorts refuses two listeners on one port whose addresses
// overlap, which serve could not open both of ("address already in use",
// naming neither field). Port 0 is a port of the system's choosing, a
// different one each time. The problem is the later listener's, or the
// one the file sets when the other is left at its default.
func checkSharedPorts(add func(field, format string, args ...any), cfg *config.Config, ls []listener) {
	for j := range ls {
		for i := range j {
			a, b := ls[i], ls[j]
			port, ok := sharedPort(a.addr, b.addr)
			if !ok {
				continue
			}
			if cfg.Line(b.field) == 0 && cfg.Line(a.field) != 0 {
				a, b = b, a
			}
			add(b.field, "shares port %s with %s (%s); serve cannot listen on both: give each listener a port of its own", port, a.field, a.addr)
		}
	}
}

// sharedPort returns the port of two listen addresses when one would take
// the other's: the same port, other than 0, on the same host or with
// either on every address (0.0.0.0, :: or no host, which Go listens on
// for IPv4 and IPv6 alike), or localhost beside a loopback address. Host
// names are not resolved: localhost is taken to be 127.0.0.1 or ::1, as
// resolvers have it, so a clash with either is one (another loopback
// address binds beside them).
func sharedPort(a, b string) (string, bool) {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	na, errPA := strconv.Atoi(pa)
	nb, errPB := strconv.Atoi(pb)
	if errA != nil || errB != nil || errPA != nil || errPB != nil || na == 0 || na != nb {
		return "", false // a malformed address is a problem of its own
	}
	ipA, zoneA := listenIP(ha)
	ipB, zoneB := listenIP(hb)
	every := func(host string, ip net.IP) bool { return host == "" || ip != nil && ip.IsUnspecified() }
	same := strings.EqualFold(ha, hb) || ipA != nil && ipA.Equal(ipB) && zoneA == zoneB ||
		isLocalhost(ha) && (isLocalhost(hb) || localhostIP(ipB)) ||
		isLocalhost(hb) && localhostIP(ipA)
	return strconv.Itoa(na), same || every(ha, ipA) || every(hb, ipB)
}

// listenIP is host's IP address, nil for a name, and the zone that is
// part of it: a link-local address's, its interface's name where it is
// its index ([fe80::1%2] is [fe80::1%eth0]). Any other zone is dropped:
// the kernel binds [::1%lo] as ::1 and [::%lo] as every address.
func listenIP(host string) (net.IP, string) {
	addr, zone, _ := strings.Cut(host, "%")
	ip := net.ParseIP(addr)
	if ip == nil || !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() && !ip.IsInterfaceLocalMulticast() {
		return ip, ""
	}
	if n, err := strconv.Atoi(zone); err == nil {
		if ifi, err := net.InterfaceByIndex(n); err == nil {
			zone = ifi.Name
		}
	}
	return ip, zone
}

// localhostIP reports whether ip is one localhost resolves to: 127.0.0.1
// or ::1 (another loopback address, 127.0.0.5, binds beside them).
func localhostIP(ip net.IP) bool {
	return ip != nil && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback))
}

// isLocalhost reports whether host is the name localhost (in any case,
// with or without a trailing dot).
func isLocalhost(host string) bool {
	return strings.EqualFold(strings.TrimSuffix(host, "."), "localhost")
}

// fileKey is a file relay.yaml names, by its field; secret when it holds
// a private key or a credential (warnEveryoneReads).
type fileKey struct {
	field, path string
	secret      bool
}

// filesRead are the files relay.yaml names that a process of role reads:
// the certificates and keys of its listeners (listenerFiles) and the
// files NATS reads (natsFiles).
func filesRead(cfg *config.Config, role string) []fileKey {
	var files []fileKey
	if role != roleSinks {
		files = listenerFiles("tls", cfg.TLS)
	}
	files = append(files, listenerFiles("admin.tls", cfg.Admin.TLS)...)
	return append(files, natsFiles(cfg)...)
}

// natsFiles are the files the NATS connection or the embedded server's
// listener reads at start (the certificates and keys again when they
// change): a client's credentials, nkey seed and TLS
// files with an external NATS; the listener's certificate, key and
// client CA with the embedded one. A file named where it does not apply
// is a problem of natsOptions' check instead.
func natsFiles(cfg *config.Config) []fileKey {
	n := cfg.NATS
	tls := []fileKey{{"nats.tls.ca_file", n.TLS.CAFile, false}, {"nats.tls.cert_file", n.TLS.CertFile, false}, {"nats.tls.key_file", n.TLS.KeyFile, true}}
	if cfg.Embedded() {
		if n.Listen == "" || n.TLS.CertFile == "" {
			return nil
		}
		return tls
	}
	return append([]fileKey{{"nats.credentials", n.Credentials, true}, {"nats.nkey", n.Nkey, true}}, tls...)
}

// checkFiles refuses a named file that is not there, or is a directory.
// It looks at the file (os.Stat) without opening it: whether it can be
// read, and holds what it should, only starting shows.
func checkFiles(add func(field, format string, args ...any), files []fileKey) {
	for _, f := range files {
		if f.path == "" {
			continue
		}
		switch info, err := os.Stat(f.path); {
		case errors.Is(err, fs.ErrNotExist):
			add(f.field, "%s does not exist", f.path)
		case err != nil:
			add(f.field, "%v", err)
		case info.IsDir():
			add(f.field, "%s is a directory, not a file", f.path)
		}
	}
}

// warnEveryoneReads says at Warn of each secret file (a private key, NATS
// credentials or nkey seed) that every user of the machine can read,
// naming its field. It leaves the mode alone: unlike the admin token
// file (readAdminTokenFile), these files are not the relay's, but
// certbot's, a Kubernetes Secret's, an operator's. Readable by the file's
// group is no warning: that is how the Helm chart (defaultMode 0440) and
// the systemd unit (certbot's deploy hook) give the relay its key. The
// file's mode alone is looked at, not whether a directory above it keeps
// others out. A file that is not there is check's problem, or starting's.
func warnEveryoneReads(log *slog.Logger, files []fileKey) {
	for _, f := range files {
		if !f.secret || f.path == "" {
			continue
		}
		if info, err := os.Stat(f.path); err == nil && everyoneReads(info.Mode()) {
			log.Warn("a private key or credential file can be read by every user of this machine; the relay leaves its mode alone: make it its owner's alone (chmod 0600), or its owner's and the group the relay runs as (chmod 0640, and chgrp it to that group)",
				"field", f.field, "path", f.path, "mode", info.Mode().Perm().String())
		}
	}
}

// checkLimits checks the limits the SCIM listener applies.
func checkLimits(add func(field, format string, args ...any), cfg *config.Config) {
	l := cfg.Limits
	if l.Rate < 0 {
		add("limits.rate", "must not be negative (0 disables the limit)")
	}
	if l.Rate > 0 && l.Burst < 1 {
		add("limits.burst", "must be at least 1 when limits.rate is set")
	}
	switch {
	case l.MaxBody <= 0:
		add("limits.max_body", "must be positive, e.g. 4MiB")
	case l.MaxBody > maxMaxBody:
		add("limits.max_body", "must be at most 256MiB, e.g. 4MiB, got %s", l.MaxBody)
	}
	if l.MaxJSONDepth < minJSONDepth || l.MaxJSONDepth > maxJSONDepth {
		add("limits.max_json_depth", "must be between %d and %d, got %d", minJSONDepth, maxJSONDepth, l.MaxJSONDepth)
	}
	if l.MaxSortMatches <= 0 {
		add("limits.max_sort_matches", "must be positive, e.g. 50000, got %d", l.MaxSortMatches)
	}
	if l.MaxHeader < minMaxHeader || l.MaxHeader > maxMaxHeader {
		// Near the largest int64, Go's HTTP server's own margin
		// overflowed, and every request got 431.
		add("limits.max_header", "must be between 4KiB and 16MiB")
	}
	if l.BulkMaxOperations < minBulkOps || l.BulkMaxOperations > maxBulkOps {
		add("limits.bulk_max_operations", "must be between %d and %d, got %d", minBulkOps, maxBulkOps, l.BulkMaxOperations)
	}
	if l.BulkMaxPayload < minBulkPayload || l.BulkMaxPayload > maxBulkPayload {
		add("limits.bulk_max_payload", "must be between 1KiB and 256MiB")
	}
	for _, t := range []struct {
		field string
		d     config.Duration
	}{{"limits.read_header_timeout", l.ReadHeaderTimeout}, {"limits.read_timeout", l.ReadTimeout},
		{"limits.write_timeout", l.WriteTimeout}, {"limits.idle_timeout", l.IdleTimeout}} {
		switch d := time.Duration(t.d); {
		case d <= 0:
			add(t.field, "must be positive")
		case d < minListenerTimeout:
			add(t.field, "must be at least %s (shorter, requests fail before they are read or answered), got %s", minListenerTimeout, d)
		}
	}
	if d := time.Duration(l.ShutdownDelay); d < 0 || d > maxShutdownDelay {
		add("limits.shutdown_delay", "must be between 0 and %s (the stop's grace period holds it and 30 s for requests under way), got %s", maxShutdownDelay, d)
	}
	for i, t := range cfg.Tenants {
		if t.Rate < 0 {
			add(fmt.Sprintf("tenants[%d].rate", i), "must not be negative")
		}
		if t.Burst < 0 {
			add(fmt.Sprintf("tenants[%d].burst", i), "must not be negative")
		}
		if t.Rate > 0 && t.Burst == 0 && l.Burst < 1 {
			add(fmt.Sprintf("tenants[%d].burst", i), "must be at least 1 when tenants[%d].rate is set and limits.burst is 0", i)
		}
	}
}

// checkOAuth checks the token endpoint's settings.
func checkOAuth(add func(field, format string, args ...any), o config.OAuth) {
	if d := time.Duration(o.TokenLifetime); d < minTokenLife || d > maxTokenLife {
		add("oauth.token_lifetime", "must be between 1m and 24h, got %s", o.TokenLifetime)
	}
	if o.Rate < 0 {
		add("oauth.rate", "must not be negative (0 disables the limit)")
	}
	if o.Rate > 0 && o.Burst < 1 {
		add("oauth.burst", "must be at least 1 when oauth.rate is set")
	}
}

// publicOrigin is where identity providers reach the SCIM listener:
// public_url, else the listen address, over HTTPS with tls set.
func publicOrigin(cfg *config.Config) string {
	if public, _ := publicURL(cfg.PublicURL); public != "" {
		return public
	}
	return schemeOf(cfg.TLS) + "://" + cfg.Listen
}

// clearTextOrigin says why public_url, when it is plain http to a host
// that is not on this machine or a private network (sinks.ClearTextHost),
// puts what identity providers send in the clear. Empty otherwise.
func clearTextOrigin(cfg *config.Config) string {
	host := sinks.ClearTextHost(cfg.PublicURL)
	if host == "" {
		return ""
	}
	return fmt.Sprintf("it is plain http to %s, which is not on this machine or a private network by its address or name: identity providers would send each request's bearer token and the users' names and email addresses readable on the way; give the https URL they reach (TLS at the relay with tls.cert_file, or at a proxy in front of it)", host)
}

// unreachableOrigin says what to do when the origin printed for identity
// providers (publicOrigin) has a host none can reach: public_url is empty
// and listen takes every address (0.0.0.0, [::] or no host, as in a
// container). Empty otherwise.
func unreachableOrigin(cfg *config.Config) string {
	if public, _ := publicURL(cfg.PublicURL); public != "" {
		return ""
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if ip := net.ParseIP(host); err != nil || (host != "" && (ip == nil || !ip.IsUnspecified())) {
		return ""
	}
	if host == "" {
		host = "the empty host"
	}
	return "public_url is not set: put the host name Entra reaches this relay by in place of " + host + ", or set public_url"
}

// publicURL checks public_url and returns it without a trailing slash, as
// Go writes the URL it parses (scheme in lower case, path escaped): it
// starts each event's source, and an event read back and encoded again (a
// dead letter) writes its source so; written otherwise, the relay's
// signature of the event would not hold over its dead letter.
func publicURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https"):
		return "", fmt.Errorf("must be an absolute http(s) URL such as https://relay.example.com, got %q", sinks.RedactURL(s))
	case u.Port() != "" && !validPublicPort(u.Port()):
		return "", fmt.Errorf("port %s is not a port from 1 to 65535", u.Port())
	case u.User != nil:
		// It would be in every resource's meta.location and every
		// event's source.
		return "", errors.New("must not hold a user or password: every resource's location and every event's source starts with it")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		// A bare "?" too: "https://relay.example.com/?" made every
		// source "https://relay.example.com/?/scim/v2/acme", the path a
		// query.
		return "", errors.New("must not have a query or fragment")
	case strings.Contains(strings.TrimRight(u.EscapedPath(), "/"), "//"):
		// Every event's source would have an empty segment, which the
		// published schema (event.json) refuses.
		return "", errors.New("must not have an empty path segment (//)")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// validPublicPort reports whether a URL's port is one a listener can have.
func validPublicPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// problemsOf turns a component's error into problems. Components name the
// relay.yaml field a problem is about at the start of each error they join
// ("sinks[0].url: ..."), which is where the line comes from.
func problemsOf(cfg *config.Config, err error) config.Problems {
	var ps config.Problems
	for _, e := range flatten(err) {
		msg := e.Error()
		field, rest, ok := strings.Cut(msg, ": ")
		if !ok || strings.ContainsAny(field, " \"'") {
			ps = append(ps, config.Problem{Message: msg})
			continue
		}
		ps = append(ps, config.Problem{Field: field, Message: rest, Line: cfg.Line(field)})
	}
	return ps
}

// flatten returns the errors an errors.Join tree holds.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// sortProblems orders problems as their fields appear in the file; those
// the file does not locate come last.
func sortProblems(ps config.Problems) config.Problems {
	slices.SortStableFunc(ps, func(a, b config.Problem) int {
		if (a.Line == 0) != (b.Line == 0) {
			return cmp.Compare(b.Line, a.Line) // the one with a line first
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return ps
}

// storeOptions are the identity index's options.
func storeOptions(cfg *config.Config, log *slog.Logger) relay.Options {
	public, _ := publicURL(cfg.PublicURL)
	o := relay.Options{
		PublicURL:  public,
		BatchDelay: time.Duration(cfg.Storage.BatchDelay),
		BatchSize:  cfg.Storage.BatchSize,
		NoSync:     cfg.Storage.NoSync,
		Logger:     log,
	}
	for _, t := range cfg.Tenants {
		o.Tenants = append(o.Tenants, relay.TenantOptions{Name: t.Name, Unique: t.Unique, Required: t.Required, StaticTokens: t.Tokens})
	}
	return o
}

// logOptions configure the provisioning log.
func logOptions(cfg *config.Config) relay.LogOptions {
	p := cfg.ProvisioningLog
	return relay.LogOptions{Retention: time.Duration(p.Retention), MaxBytes: int64(p.MaxBytes), Reads: p.Reads}
}

// natsOptions say how a process of role reaches NATS.
func natsOptions(cfg *config.Config, role string) natsbus.Options {
	n := cfg.NATS
	return natsbus.Options{
		URL: n.URL, Listen: n.Listen, StoreDir: cfg.NATSDir(),
		Credentials: n.Credentials, NkeySeedFile: n.Nkey, Token: n.Token, User: n.User, Password: n.Password,
		TLS:            natsbus.TLS{CAFile: n.TLS.CAFile, CertFile: n.TLS.CertFile, KeyFile: n.TLS.KeyFile},
		ConnectTimeout: time.Duration(n.ConnectTimeout), Name: "scimrelay-" + role,
		SyncInterval: time.Duration(n.SyncInterval), SyncAlways: n.SyncInterval == 0,
	}
}

// keepPublished is how long the publisher keeps an event JetStream
// acknowledged in the outbox: three times the interval at which the NATS
// server writes its store to disk. The server starts its next write an
// interval after the last one ended, so an event stored while one is under
// way is on disk once that one ends, the interval passes and the next one
// ends: within three intervals while a write takes no longer than one.
func keepPublished(cfg *config.Config) time.Duration {
	return 3 * time.Duration(cfg.NATS.SyncInterval)
}

// publisherOptions are the publisher's options as configured: how long
// it keeps what it published, and whether it chains a window's events as
// the stream's sole publisher instead of sending them in atomic batches
// (relay.PublisherOptions.Sole). It is the sole one on the embedded
// server, where only the relay's own connection may publish (subscribers
// read; README, Who can reach what); front ends sharing an external
// stream are not. It does not chain when the embedded server writes every
// message to disk before answering (nats.sync_interval 0, sync_always):
// each event of a chain then waits for its own write, and a window's
// batch for one (BenchmarkPublisherDrain: 1,140-1,365 events/s chained,
// 15,692-16,656 in batches).
func publisherOptions(cfg *config.Config) relay.PublisherOptions {
	return relay.PublisherOptions{KeepFor: keepPublished(cfg), Sole: cfg.Embedded() && cfg.NATS.SyncInterval != 0}
}

// streamOptions are the SCIMRELAY stream's options as configured; serve
// resolves automatic replicas (0) once it knows the server it reached.
func streamOptions(cfg *config.Config) events.StreamOptions {
	return events.StreamOptions{
		Replicas:   cfg.NATS.Stream.Replicas,
		MaxAge:     time.Duration(cfg.NATS.Stream.MaxAge),
		Duplicates: time.Duration(cfg.NATS.Stream.Duplicates),
		Partitions: cfg.NATS.Stream.Partitions,
	}
}

// sinkOptions are the sinks' options without their connection to NATS.
func sinkOptions(cfg *config.Config) sinks.Options {
	o := sinks.Options{Retention: time.Duration(cfg.ProvisioningLog.Retention), AttemptsMaxBytes: int64(cfg.ProvisioningLog.MaxBytes), UserAgent: "scimrelay/" + versionString()}
	for _, t := range cfg.Tenants {
		o.Tenants = append(o.Tenants, t.Name)
	}
	for _, c := range cfg.Sinks {
		sc := sinks.Config{
			Name: c.Name, Type: c.Type, URL: c.URL, Secret: c.Secret, Events: c.Events, Tenants: c.Tenants,
			PreviousSecret: c.PreviousSecret, PreviousSecretExpires: c.PreviousSecretExpires,
			Format: c.Format, Timeout: time.Duration(c.Timeout), Headers: c.Headers,
			AllowPrivate: c.AllowPrivate, AllowPrivateProxy: c.AllowPrivateProxy, Concurrency: c.Concurrency,
		}
		if b := c.Batch; b != nil {
			sc.Batch = &sinks.Batch{MaxEvents: b.MaxEvents, MaxWait: time.Duration(b.MaxWait), MaxBytes: int64(b.MaxBytes)}
		}
		if c.Retry != nil { // "retry: []" is an empty schedule, which sinks refuses; nil is its default
			sc.Retry = make(sinks.Schedule, 0, len(c.Retry))
		}
		for _, d := range c.Retry {
			sc.Retry = append(sc.Retry, time.Duration(d))
		}
		o.Sinks = append(o.Sinks, sc)
	}
	return o
}

// newLogger builds the process logger from relay.yaml's log section. Its
// level is level's (nil: a level of its own), so that a reload can change it.
func newLogger(c config.Log, w io.Writer, level *slog.LevelVar) (*slog.Logger, error) {
	var errs []error
	lvl, err := parseLevel(c.Level)
	if err != nil {
		errs = append(errs, err)
	}
	if c.Format != "text" && c.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format: must be one of text, json, got %q", c.Format))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if level == nil {
		level = new(slog.LevelVar)
	}
	level.Set(lvl)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(printableLines{w}, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// printableLines writes each JSON line of the log as printableJSON does:
// slog's JSON handler escapes the controls below U+0020 but writes DEL, the
// C1 controls (U+009B is CSI to a terminal reading UTF-8) and format
// characters (U+202E) as they are, and a line can carry text a client
// without a credential chose (the path of a request refused for its admin
// token), which an operator tailing the log would have acted on by the
// terminal. The text format quotes them already (strconv.Quote).
type printableLines struct{ w io.Writer }

func (p printableLines) Write(b []byte) (int, error) {
	if _, err := p.w.Write(printableJSON(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// parseLevel reads log.level.
func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log.level: must be one of debug, info, warn, error, got %q", s)
}

// tenantTokensOpeningAdmin names the relay.yaml tokens of cfg's tenants
// that are adminToken: a tenant's identity provider holds its SCIM token,
// and the same secret would give it the admin API, every tenant's
// included. serve compares them with the admin token in force too (one it
// generated into data_dir/admin.token when admin.token is empty), which
// check cannot read.
func tenantTokensOpeningAdmin(cfg *config.Config, adminToken string) []string {
	adminToken = strings.TrimSpace(adminToken)
	if adminToken == "" {
		return nil
	}
	var fields []string
	for i, tn := range cfg.Tenants {
		for j, tok := range tn.Tokens {
			if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(adminToken)) == 1 {
				fields = append(fields, fmt.Sprintf("tenants[%d].tokens[%d]", i, j))
			}
		}
	}
	return fields
}

// refuseTenantTokensOpeningAdmin refuses cfg when a tenant's token is the
// admin token in force, naming each such token's key.
func refuseTenantTokensOpeningAdmin(cfg *config.Config, adminToken string) error {
	var errs []error
	for _, field := range tenantTokensOpeningAdmin(cfg, adminToken) {
		errs = append(errs, fmt.Errorf("%s: is the admin token in force (admin.token, or %s when it is empty); a tenant's SCIM token must not open the admin API", field, cfg.AdminTokenPath()))
	}
	return errors.Join(errs...)
}
