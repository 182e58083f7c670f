// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// The admin listener's guards around its whole handler (API, probes and
// console alike): what a request may take to arrive, and the names it
// may be sent to.

// DefaultReadTimeout is how long a request on the admin listener may take
// to send its body (and a GET, to have nothing more to send): a client
// that trickles a body, with or without a token, cannot hold a
// connection for longer. The answers that stream for long (an event
// tail, a backup, a CPU profile, the console's live tail) lift it once
// they begin, with NoReadDeadline; the listener has no server-wide
// ReadTimeout, which would cut them.
const DefaultReadTimeout = 30 * time.Second

// WithReadDeadline gives each request with a body d to be read. It bounds
// the request's arrival, never its answer: a deadline still set while a
// slow answer is made (a page while NATS is away) fires in net/http's read
// of the connection, which then ends the context of that request (the
// admin API answered 200 with no body, the console 500) and of every later
// one on the same keep-alive connection (a browser's next pages, 500 at
// once). So a request without a body, read whole already, gets none; one
// with a body has it lifted by net/http once the body is read to its end,
// where its read of the connection for the next request begins
// (TestReadDeadlineBoundsArrivalOnly).
func WithReadDeadline(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			// Not supported in-process (the console's calls): they have
			// no connection to hold.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		next.ServeHTTP(w, r)
	})
}

// NoReadDeadline lifts the read deadline of WithReadDeadline, for an answer
// that streams for longer: past it, the connection's reader would fail and
// end the request's context.
func NoReadDeadline(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
}

// KnownHostsOnly answers 421 Misdirected Request to a request whose Host
// is a DNS name other than localhost and the names of hosts (admin.hosts:
// those a reverse proxy passes on, or a scraper reaching the listener by
// a Service's name uses). It guards the listener whatever it is bound to:
// one on 0.0.0.0 in a container is reached from the operator's browser
// through the host's 127.0.0.1 (a published port, kubectl port-forward)
// as surely as one on loopback, and a page whose DNS was rebound to that
// address sends its own name, which would otherwise read /metrics and
// spend the admin token's budget from the victim's browser. An IP address
// (any, with any port) always passes: rebinding needs a name, and probes
// and scrapers name the pod's address. 421, not 403: the request is not
// refused for who sent it but for the name it was sent to. A request
// without a Host (HTTP/1.0) names nothing and passes; browsers always
// send one. A 421 carries an X-Request-Id as every answer does; a request
// that passes is given its id by what answers it (the admin API, or the
// console, which logs a sign-in refused under its own).
//
// The first refusal of each name is logged at Warn, with its request id:
// an operator whose proxy or scraper sends a name admin.hosts lacks learns
// which, and a rebinding page shows up. A name is said once, and after
// maxSaidHosts names the log says that it stops naming them: a stream of
// made-up names cannot flood it.
func KnownHostsOnly(next http.Handler, hosts []string, log *slog.Logger) http.Handler {
	said := &saidHosts{names: map[string]bool{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !knownHost(r.Host, hosts) {
			r = identify(w, r)
			said.refused(r, log)
			writeJSON(w, http.StatusMisdirectedRequest, errorBody{Error: "this admin listener answers requests to an IP address, localhost and the names in admin.hosts only; add the name to admin.hosts to reach it by that name"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// maxSaidHosts is how many refused names KnownHostsOnly logs.
const maxSaidHosts = 32

// saidHosts is the names whose refusal KnownHostsOnly has logged.
type saidHosts struct {
	mu    sync.Mutex
	names map[string]bool
	full  bool // maxSaidHosts were said, and that no more are
}

// refused logs r's refusal, unless its name was said or enough were.
func (s *saidHosts) refused(r *http.Request, log *slog.Logger) {
	name := strings.ToLower(hostName(r.Host))
	if len(name) > 253 { // no DNS name is longer
		name = name[:253]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.names[name] || s.full:
		return
	case len(s.names) == maxSaidHosts:
		s.full = true
		log.WarnContext(r.Context(), "admin requests to more host names not in admin.hosts refused (421); they are no longer logged", requestIDs(r.Context())...)
		return
	}
	s.names[name] = true
	log.WarnContext(r.Context(), "admin request refused (421): its host name is not in admin.hosts; add the name there if a proxy or a Service reaches the listener by it (each name is said once)",
		append(requestIDs(r.Context()), "host", name, "remote_addr", r.RemoteAddr, "path", scim.Truncate(r.URL.Path, maxPathLogged))...)
}

// knownHost reports whether a Host header may be answered: empty, an IP
// address, localhost, or a name of hosts (compared without port, case or
// final dot).
func knownHost(host string, hosts []string) bool {
	if host == "" {
		return true
	}
	name := hostName(host)
	if net.ParseIP(name) != nil || strings.EqualFold(name, "localhost") {
		return true
	}
	return slices.ContainsFunc(hosts, func(h string) bool { return strings.EqualFold(name, strings.TrimSuffix(h, ".")) })
}

// ValidHostName reports whether h can be an entry of admin.hosts: a DNS
// name or an IP address, without scheme, port or path.
func ValidHostName(h string) bool {
	if h == "" || len(h) > 253 || net.ParseIP(h) != nil {
		return h != ""
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return false
		}
	}
	return true
}

// hostName is a Host header without its port, brackets or final dot.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
}
