// SPDX-License-Identifier: Apache-2.0

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
)

// withReload lets the server re-read relay.yaml from path (SIGHUP, POST
// /admin/v1/reload) and change the log's level.
func withReload(path string, level *slog.LevelVar) serverOption {
	return func(s *server) { s.configPath, s.level = path, level }
}

// reloadable are the relay.yaml keys a reload applies; a change of any
// other key needs a restart. Tenants and sinks are applied whole (each
// one added, removed or changed on its own).
var reloadable = []string{
	"log.level",
	"limits.rate", "limits.burst", "limits.max_body", "limits.max_json_depth", "limits.max_sort_matches",
	"limits.bulk_max_operations", "limits.bulk_max_payload",
	"oauth",
	"tenants", "sinks",
}

// applicable is the configuration a reload runs with: running, with the
// value of every reloadable key taken from next.
func applicable(running, next *config.Config) *config.Config {
	out := *running
	dst, src := reflect.ValueOf(&out).Elem(), reflect.ValueOf(next).Elem()
	for _, key := range reloadable {
		d, s := dst, src
		for _, name := range strings.Split(key, ".") {
			d, s = fieldByTag(d, name), fieldByTag(s, name)
		}
		d.Set(s)
	}
	return &out
}

// fieldByTag is the field of struct v whose yaml name is name.
func fieldByTag(v reflect.Value, name string) reflect.Value {
	for i := range v.NumField() {
		if tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); tag == name {
			return v.Field(i)
		}
	}
	panic("relay.yaml has no key " + name) // reloadable names only keys that exist: TestReloadableKeysExist
}

// isReloadable reports whether a change of key is applied by a reload.
func isReloadable(key string) bool {
	return slices.ContainsFunc(reloadable, func(r string) bool { return key == r || strings.HasPrefix(key, r+".") })
}

// reload re-reads relay.yaml and applies what can change while the relay
// runs: tenants (with their tokens from the file and their limits; the
// NATS subscribers scoped to a tenant removed are cut off, and what a
// tenant added finds under its name from before is said: tenantNotes), sinks
// (each added, removed or changed on its own; the others keep delivering),
// the SCIM listener's limits, the token endpoint's settings, the log's
// level. Requests under way finish with the configuration they started
// with. A file that check refuses is refused whole (the error wraps
// admin.ErrReloadRefused) and the running configuration stays. A failure
// after that (a sink that cannot be set up, a first token that cannot be
// written) leaves what was applied applied: the result lists it beside
// the error, and a reload once the cause is mended applies the rest.
// Settings that only a restart applies are listed, not applied.
//
// The admin API does not pass on its client's leaving, so that a reload
// runs to its end; it ends when the relay stops, and after maxReload (a
// NATS outage would otherwise keep it retrying a sink's consumers).
func (s *server) reload(ctx context.Context) (admin.ReloadResult, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	res, err := s.reloadOnce(ctx)
	s.reloads.observe(err)
	return res, err
}

// reloadOnce is reload's work, under reloadMu.
func (s *server) reloadOnce(ctx context.Context) (admin.ReloadResult, error) {
	res := admin.ReloadResult{Config: s.configPath}
	// The bound starts once this reload's turn has come; one that waited
	// behind another past its time, or behind the relay's stop, applies
	// nothing.
	ctx, cancel := context.WithTimeout(ctx, s.maxReload)
	defer cancel()
	stopping := error(nil)
	if serving := s.serving.Load(); serving != nil {
		defer context.AfterFunc(*serving, cancel)()
		stopping = (*serving).Err() // AfterFunc cancels in a goroutine of its own, later
	}
	if err := cmp.Or(stopping, ctx.Err()); err != nil {
		return res, fmt.Errorf("not reloaded: the relay is stopping, or the reload's caller gave up before its turn: %w", err)
	}
	next, err := readForReload(ctx, s.configPath, s.role)
	if err != nil {
		s.log.Error("reloading relay.yaml refused; the running configuration stays", "file", s.configPath, "err", err)
		return res, fmt.Errorf("%w: %w", admin.ErrReloadRefused, err)
	}
	old := s.config()
	for _, key := range changedKeys(old, next) {
		if !isReloadable(key) {
			res.RestartNeeded = append(res.RestartNeeded, key)
		}
	}
	// From here on the relay runs with the running configuration and only
	// the reloadable keys of the file: what needs a restart keeps its
	// running value everywhere (public_url in SCIM locations and events
	// alike, data_dir for the token files).
	next = applicable(old, next)
	// What changes as a whole goes first, so that its failure (a disk
	// error) leaves the relay as it was: the tenants, then the rest.
	if err := refuseTenantTokensOpeningAdmin(next, s.adminToken); err != nil {
		s.log.Error("reloading relay.yaml refused; the running configuration stays", "file", s.configPath, "err", err)
		return res, fmt.Errorf("%w: %w", admin.ErrReloadRefused, err)
	}
	if s.store != nil && !reflect.DeepEqual(old.Tenants, next.Tenants) { // role sinks serves no tenant
		// What the store would refuse is refused first: a refused reload
		// keeps the running configuration, the consumers' filters too.
		if err := s.store.CheckTenants(storeOptions(next, nil).Tenants); errors.Is(err, relay.ErrBeingPurged) || errors.Is(err, relay.ErrSharedToken) {
			s.log.Error("reloading relay.yaml refused; the running configuration stays", "file", s.configPath, "err", err)
			return res, fmt.Errorf("%w: %w", admin.ErrReloadRefused, err)
		}
		// Before a tenant added is served: a sink that does not list it
		// may still take it (a tenant of the name removed earlier).
		if so := sinkOptions(next); s.sinks != nil {
			if err := s.sinks.Narrow(ctx, so.Tenants, so.Sinks); err != nil {
				s.log.Error("reloading relay.yaml failed; the running configuration stays", "file", s.configPath, "err", err)
				return res, fmt.Errorf("applying the tenants: %w", err)
			}
		}
		if err := s.store.SetTenants(storeOptions(next, nil).Tenants); err != nil {
			if errors.Is(err, relay.ErrBeingPurged) || errors.Is(err, relay.ErrSharedToken) {
				s.log.Error("reloading relay.yaml refused; the running configuration stays", "file", s.configPath, "err", err)
				return res, fmt.Errorf("%w: %w", admin.ErrReloadRefused, err)
			}
			s.log.Error("reloading relay.yaml failed; the running configuration stays", "file", s.configPath, "err", err)
			return res, fmt.Errorf("applying the tenants: %w", err)
		}
		before, after := tenantNames(old.Tenants), tenantNames(next.Tenants)
		notes := s.tenantNotes(ctx, without(after, before), without(before, after))
		res.Applied = append(res.Applied, listChanges("tenant", before, after, func(name string) bool {
			return !reflect.DeepEqual(tenantNamed(old.Tenants, name), tenantNamed(next.Tenants, name))
		}, notes)...)
		if s.reqMetrics != nil {
			for _, name := range without(before, after) {
				s.reqMetrics.Forget(name)
			}
		}
		if err := s.subscribers.TenantsChanged(ctx); err != nil {
			s.log.Error("reloading relay.yaml: the NATS subscribers could not be admitted anew for the tenants configured now; reload again once that is mended", "applied", res.Applied, "err", err)
			return res, err
		}
	}
	if s.scimCurrent.Load() != nil {
		s.scimLimiter.Set(scimLimits(next))
		s.oauthLimiter.Set(oauthLimits(next))
		s.setSCIMHandler(next)
	}
	for _, key := range changedKeys(old, next) {
		switch {
		case key == "tenants" || key == "sinks": // said one by one above and below
		case s.scimCurrent.Load() == nil && (strings.HasPrefix(key, "limits.") || key == "oauth" || strings.HasPrefix(key, "oauth.")):
			// Not the business of a process without a SCIM listener
			// (role sinks): listing it as applied would say it acted.
		default:
			res.Applied = append(res.Applied, fmt.Sprintf("%s: %v → %v", key, valueAt(old, key), valueAt(next, key)))
		}
	}
	if s.level != nil {
		lvl, _ := parseLevel(next.Log.Level) // checked by loadConfig
		s.level.Set(lvl)
	}
	s.mu.Lock()
	s.cfg = next
	s.mu.Unlock()
	so := sinkOptions(next)
	s.sinks.SetTenants(so.Tenants)
	changes, err := s.sinks.Apply(ctx, so.Sinks)
	for _, c := range []struct {
		what  string
		names []string
	}{{"added", changes.Added}, {"removed", changes.Removed}, {"changed", changes.Changed}, {"started again (it was idle after a failed setup)", changes.Restarted}} {
		for _, name := range c.names {
			res.Applied = append(res.Applied, "sink "+name+" "+c.what)
		}
	}
	if err != nil {
		s.log.Error("reloading relay.yaml: a sink could not be set up; it delivers nothing until a reload or restart sets it up (reload again once that is mended). A sink this reload added then starts with the events stored from this reload on: data_dir/sinks-added.json keeps its time across a restart meanwhile", "err", err)
		return res, fmt.Errorf("setting up the sinks: %w", err)
	}
	if s.store != nil {
		if err := s.ensureTokens(ctx); err != nil { // a new tenant gets its first token, as at start
			s.log.Error("reloading relay.yaml: a new tenant's first token could not be made; reload again once that is mended", "applied", res.Applied, "err", err)
			return res, err
		}
	}
	if len(res.Applied) == 0 {
		s.log.Info("reloaded relay.yaml: nothing to change", "file", s.configPath, "restart_needed", res.RestartNeeded)
	} else {
		s.log.Info("reloaded relay.yaml", "file", s.configPath, "applied", res.Applied, "restart_needed", res.RestartNeeded)
	}
	if len(res.RestartNeeded) > 0 {
		s.log.Warn("relay.yaml changed settings that only a restart applies; the running values stay", "keys", res.RestartNeeded)
	}
	return res, nil
}

// readForReload is loadConfig for a reload. A file that is not a regular
// one is refused at once: a named pipe (sops exec-file hands a decrypted
// file over in one, written once, at start) gives nothing the second
// time, and reading it held the reload, and with it the relay's stop, for
// ever. The read is bounded by ctx too (the reload's bound, the relay's
// stop), for a file on a mount that does not answer.
func readForReload(ctx context.Context, path, role string) (*config.Config, error) {
	if info, err := os.Stat(path); err == nil && !info.Mode().IsRegular() && !info.IsDir() {
		why := "is not a regular file (" + info.Mode().Type().String() + ")"
		if info.Mode()&os.ModeNamedPipe != 0 {
			why = "is a named pipe, which gives relay.yaml only to the read at start"
		}
		return nil, fmt.Errorf("%s %s; give the relay a regular file (with sops exec-file, --no-fifo)", path, why)
	}
	return loadBounded(ctx, path, role)
}

// loadBounded is loadConfig, given up when ctx ends; the read left behind
// ends with the file's, its result dropped.
func loadBounded(ctx context.Context, path, role string) (*config.Config, error) {
	type result struct {
		cfg *config.Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := loadConfig(path, role)
		done <- result{cfg, err}
	}()
	select {
	case r := <-done:
		return r.cfg, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("reading %s did not finish (a file on a mount that does not answer?): %w", path, ctx.Err())
	}
}

// reloadMetrics are scimrelay_config_last_reload_successful and
// scimrelay_config_last_reload_success_timestamp_seconds, named as
// Prometheus and Alertmanager name theirs: a reload sent by SIGHUP (systemd's
// reload, a config-management run) has no one to tell it was refused or
// failed half-way but the log, and the running configuration is then not
// the file's. The configuration the process started with counts as the
// first success.
type reloadMetrics struct{ ok, at prometheus.Gauge }

func newReloadMetrics(reg prometheus.Registerer) reloadMetrics {
	m := reloadMetrics{
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scimrelay_config_last_reload_successful",
			Help: "1 when the last reload of relay.yaml applied all of it (or none was asked since the start), 0 when it was refused or failed part-way.",
		}),
		at: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scimrelay_config_last_reload_success_timestamp_seconds",
			Help: "When relay.yaml was last applied whole: at the start, or by the last successful reload.",
		}),
	}
	reg.MustRegister(m.ok, m.at)
	m.observe(nil)
	return m
}

// observe notes a reload's outcome.
func (m reloadMetrics) observe(err error) {
	if err != nil {
		m.ok.Set(0)
		return
	}
	m.ok.Set(1)
	m.at.SetToCurrentTime()
}

// maxReload bounds a reload: stopping changed sinks (at once, their
// hand-overs up to 8 s together) and setting up their consumers again,
// with time to spare. Tests
// shorten it (withMaxReload).
const maxReload = 2 * time.Minute

// hangUps subscribes to SIGHUP. run calls it before its listeners serve,
// so that a SIGHUP sent once /readyz answers is never lost: serve ignores
// the signal until then, and a goroutine that subscribed later could miss
// one sent in between (the relay would keep running the old relay.yaml).
func hangUps() (<-chan os.Signal, func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup, func() { signal.Stop(hup) }
}

// reloadOnHangUp reloads relay.yaml on every SIGHUP until ctx ends.
func (s *server) reloadOnHangUp(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			s.log.Info("SIGHUP: reloading relay.yaml", "file", s.configPath)
			_, _ = s.reload(ctx) // it logs what it did, or why not
		}
	}
}

// listChanges says which of a list's entries were added, removed or
// changed ("tenant globex added"), by name, each added or removed one
// followed by its note, if it has one ("tenant globex added: …").
func listChanges(what string, before, after []string, changed func(name string) bool, notes map[string]string) []string {
	var out []string
	said := func(name, how string) {
		if note := notes[name]; note != "" {
			how += ": " + note
		}
		out = append(out, what+" "+name+" "+how)
	}
	for _, name := range after {
		switch {
		case !slices.Contains(before, name):
			said(name, "added")
		case changed(name):
			out = append(out, what+" "+name+" changed")
		}
	}
	for _, name := range without(before, after) {
		said(name, "removed")
	}
	return out
}

// without returns the names of list that are not in other.
func without(list, other []string) []string {
	var out []string
	for _, name := range list {
		if !slices.Contains(other, name) {
			out = append(out, name)
		}
	}
	return out
}

// tenantNotes says, for each tenant name added or removed, what the change
// does beyond itself, and logs it at Warn (a SIGHUP has no answer to read):
// a name added that holds users, groups, live stored credentials or NATS
// subscribers from before has them all back, which an operator who meant
// a new customer does not expect; a name removed cuts off the NATS
// subscribers scoped to it (SubscriberRegistry.TenantsChanged), which come
// back with the name. A name with nothing to say has no note. What cannot
// be counted is logged, and left unsaid.
func (s *server) tenantNotes(ctx context.Context, added, removed []string) map[string]string {
	notes := map[string]string{}
	for _, name := range removed {
		if s.natsServer == nil {
			break // subscribers are the embedded server's: none is let in with an external one
		}
		subs, err := s.store.SubscribersOf(ctx, name)
		if err != nil {
			s.log.Error("listing the NATS subscribers of a tenant removed", "tenant", name, "err", err)
			continue
		}
		if len(subs) > 0 {
			notes[name] = fmt.Sprintf("its NATS subscribers %s are cut off until a tenant %s is configured again, which lets them in to read its events, a new customer's too: `scimrelay subscriber remove NAME` deletes them, `scimrelay tenant purge %s --yes` everything the tenant left",
				strings.Join(subs, ", "), name, name)
			s.log.Warn("NATS subscribers scoped to a tenant that is not configured are cut off; a tenant of that name configured again lets them in to read its events, a new customer's too: remove them (scimrelay subscriber remove NAME), or purge the tenant (scimrelay tenant purge NAME --yes), if it is gone for good",
				"tenant", name, "subscribers", subs)
		}
	}
	for _, name := range added {
		l, err := s.store.Leftovers(ctx, name)
		if err != nil {
			s.log.Error("counting what a tenant's name holds from before", "tenant", name, "err", err)
			continue
		}
		if s.natsServer == nil {
			l.Subscribers = nil // none is let in with an external NATS
		}
		if l.Empty() {
			continue
		}
		notes[name] = "the name is not fresh: " + describeLeftovers(l) + " from before are back. For a new customer use a new tenant name, or remove this one, purge it (`scimrelay tenant purge " + name + " --yes`) and add it again; otherwise revoke the tokens and clients by id (`scimrelay token list`, `client list`) and remove the subscribers"
		s.log.Warn("a tenant was added under a name that holds data, credentials or NATS subscribers from before: they are all back, its users and groups for its identity provider to see; for a new customer use a new tenant name, or purge this one first (scimrelay tenant purge NAME --yes)",
			"tenant", name, "users", l.Users, "groups", l.Groups, "tokens", l.Tokens, "clients", l.Clients, "subscribers", l.Subscribers)
	}
	return notes
}

// describeLeftovers says what a tenant's name holds: "2 users, 1 group,
// 1 live stored token, 1 NATS subscriber (globexsub)".
func describeLeftovers(l relay.Leftovers) string {
	var parts []string
	for _, c := range []struct {
		n    int
		what string
	}{{l.Users, "user"}, {l.Groups, "group"}, {l.Tokens, "live stored token"}, {l.Clients, "live OAuth client"}, {len(l.Subscribers), "NATS subscriber"}} {
		switch {
		case c.n == 1:
			parts = append(parts, "1 "+c.what)
		case c.n > 1:
			parts = append(parts, fmt.Sprintf("%d %ss", c.n, c.what))
		}
	}
	if len(l.Subscribers) > 0 {
		parts[len(parts)-1] += " (" + strings.Join(l.Subscribers, ", ") + ")"
	}
	return strings.Join(parts, ", ")
}

func tenantNames(ts []config.Tenant) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

func tenantNamed(ts []config.Tenant, name string) *config.Tenant {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return nil
}

// changedKeys lists the relay.yaml keys whose values differ between a and
// b, as dotted paths ("limits.rate", "nats.url"); a list (tenants, sinks)
// counts as one key.
func changedKeys(a, b *config.Config) []string {
	var out []string
	var walk func(prefix string, x, y reflect.Value)
	walk = func(prefix string, x, y reflect.Value) {
		if x.Kind() != reflect.Struct {
			if !reflect.DeepEqual(x.Interface(), y.Interface()) {
				out = append(out, prefix)
			}
			return
		}
		for i := range x.NumField() {
			f := x.Type().Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || tag == "" || tag == "-" {
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			walk(key, x.Field(i), y.Field(i))
		}
	}
	walk("", reflect.ValueOf(*a), reflect.ValueOf(*b))
	return out
}

// valueAt returns the value of a dotted relay.yaml key of cfg, for saying
// what a reload changed. Only reloadable scalar keys are asked for, none
// of which holds a secret.
func valueAt(cfg *config.Config, key string) any {
	v := reflect.ValueOf(*cfg)
	for _, part := range strings.Split(key, ".") {
		t := v.Type()
		for i := range t.NumField() {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == part {
				v = v.Field(i)
				break
			}
		}
	}
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	return v.Interface()
}
