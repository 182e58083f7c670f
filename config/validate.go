// SPDX-License-Identifier: Apache-2.0

package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// namePattern is the syntax of tenant and sink names: safe as a NATS token,
// a URL segment and a JetStream consumer name.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// requiredAttributes are the User attributes a tenant may require, in the
// forms relay.yaml accepts: plain or URN-qualified for the enterprise ones.
var requiredAttributes = func() map[string]bool {
	m := map[string]bool{}
	for _, a := range []string{"userName", "emails", "name", "displayName", "externalId", "name.givenName", "name.familyName",
		"title", "active", "phoneNumbers", "addresses", "nickName", "preferredLanguage", "locale", "timezone", "userType"} {
		m[strings.ToLower(a)] = true
	}
	for _, a := range []string{"employeeNumber", "costCenter", "organization", "division", "department", "manager"} {
		m[strings.ToLower(a)] = true
		m[strings.ToLower("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:"+a)] = true
	}
	return m
}()

// eventPattern is the shape of an event pattern; the sinks check the
// action against the catalog when they start.
var eventPattern = regexp.MustCompile(`^(\*|(io\.scimrelay\.)?(user|group)\.(\*|[a-z_]+))$`)

// reservedHeaders are set by the relay on every delivery.
var reservedHeaders = []string{"content-type", "content-length", "host", "webhook-", "ce-", "user-agent"}

// Validate checks the whole configuration and returns Problems listing
// everything wrong, or nil.
func (c *Config) Validate() error {
	var v validator
	v.hostPort("listen", c.Listen, false)
	v.hostPort("admin_listen", c.AdminListen, false)
	if c.Listen != "" && c.Listen == c.AdminListen {
		v.add("admin_listen", "must differ from listen (%s)", c.Listen)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
			v.add("public_url", "must be an absolute http(s) URL such as https://relay.example.com, got %q", c.PublicURL)
		case u.RawQuery != "" || u.Fragment != "":
			v.add("public_url", "must not have a query or fragment")
		}
		c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	}
	if strings.TrimSpace(c.DataDir) == "" {
		v.add("data_dir", "must not be empty")
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	if d := time.Duration(c.Storage.BatchDelay); d < 0 || d > 100*time.Millisecond {
		v.add("storage.batch_delay", "must be between 0 and 100ms, got %s", c.Storage.BatchDelay)
	}
	if c.Storage.BatchSize < 1 {
		v.add("storage.batch_size", "must be at least 1")
	}
	c.validateNATS(&v)
	c.validateLimits(&v)
	c.validateOAuth(&v)
	if c.ProvisioningLog.Retention <= 0 {
		v.add("provisioning_log.retention", "must be positive, e.g. 30d")
	}
	c.validateTenants(&v)
	c.validateSinks(&v)
	if len(v.problems) > 0 {
		return v.problems
	}
	return nil
}

func (c *Config) validateNATS(v *validator) {
	n := c.NATS
	if c.Embedded() {
		v.hostPort("nats.listen", n.Listen, true)
		for _, f := range []struct{ field, val string }{{"nats.credentials", n.Credentials}, {"nats.nkey", n.Nkey}, {"nats.token", n.Token},
			{"nats.user", n.User}} {
			if f.val != "" {
				v.add(f.field, "applies only to an external NATS (set nats.url); the embedded server gives the relay a credential of its own and subscribers theirs (scimrelay subscriber add)")
			}
		}
		switch {
		case n.TLS.CertFile != "" && n.Listen == "":
			v.add("nats.tls", "secures the embedded server's listener, but nats.listen is empty (in-process only)")
		case n.TLS.CAFile != "" && n.TLS.CertFile == "":
			v.add("nats.tls.ca_file", "verifies subscribers' client certificates on the embedded listener, which needs cert_file and key_file")
		}
		if n.Stream.Replicas > 1 {
			v.add("nats.stream.replicas", "the embedded server keeps 1 replica; replicas > 1 need nats.url pointing at a cluster")
		}
	} else {
		for _, raw := range strings.Split(n.URL, ",") {
			u, err := url.Parse(strings.TrimSpace(raw))
			if err != nil || u.Host == "" {
				v.add("nats.url", "%q is not a URL such as nats://nats-1:4222", strings.TrimSpace(raw))
				continue
			}
			switch u.Scheme {
			case "nats", "tls", "ws", "wss":
			default:
				v.add("nats.url", "scheme %q is not one of nats, tls, ws, wss", u.Scheme)
			}
		}
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		v.add("nats.tls", "cert_file and key_file go together")
	}
	if n.Password != "" && n.User == "" {
		v.add("nats.password", "needs nats.user")
	}
	switch n.Stream.Replicas {
	case 0, 1, 3, 5:
	default:
		v.add("nats.stream.replicas", "must be 0 (automatic), 1, 3 or 5, got %d", n.Stream.Replicas)
	}
	if n.ConnectTimeout <= 0 {
		v.add("nats.connect_timeout", "must be positive")
	}
	if n.Stream.MaxAge <= 0 {
		v.add("nats.stream.max_age", "must be positive, e.g. 7d")
	}
	if n.Stream.Duplicates <= 0 {
		v.add("nats.stream.duplicates", "must be positive, e.g. 10m")
	} else if n.Stream.MaxAge > 0 && n.Stream.Duplicates > n.Stream.MaxAge {
		v.add("nats.stream.duplicates", "must not exceed nats.stream.max_age (%s)", n.Stream.MaxAge)
	}
}

func (c *Config) validateLimits(v *validator) {
	l := c.Limits
	if l.Rate < 0 {
		v.add("limits.rate", "must not be negative (0 disables the limit)")
	}
	if l.Rate > 0 && l.Burst < 1 {
		v.add("limits.burst", "must be at least 1 when limits.rate is set")
	}
	if l.MaxBody <= 0 {
		v.add("limits.max_body", "must be positive, e.g. 4MiB")
	}
	if l.MaxJSONDepth < 4 || l.MaxJSONDepth > 1000 {
		v.add("limits.max_json_depth", "must be between 4 and 1000, got %d", l.MaxJSONDepth)
	}
	if l.MaxHeader < 4<<10 {
		v.add("limits.max_header", "must be at least 4KiB")
	}
	if l.BulkMaxOperations < 1 || l.BulkMaxOperations > 100_000 {
		v.add("limits.bulk_max_operations", "must be between 1 and 100000, got %d", l.BulkMaxOperations)
	}
	if l.BulkMaxPayload < 1<<10 || l.BulkMaxPayload > 256<<20 {
		v.add("limits.bulk_max_payload", "must be between 1KiB and 256MiB")
	}
	if l.MaxSortMatches <= 0 {
		v.add("limits.max_sort_matches", "must be positive, e.g. 50000, got %d", l.MaxSortMatches)
	}
	for _, t := range []struct {
		field string
		d     Duration
	}{{"limits.read_header_timeout", l.ReadHeaderTimeout}, {"limits.read_timeout", l.ReadTimeout},
		{"limits.write_timeout", l.WriteTimeout}, {"limits.idle_timeout", l.IdleTimeout}} {
		if t.d <= 0 {
			v.add(t.field, "must be positive")
		}
	}
}

func (c *Config) validateOAuth(v *validator) {
	o := c.OAuth
	if d := time.Duration(o.TokenLifetime); d < time.Minute || d > 24*time.Hour {
		v.add("oauth.token_lifetime", "must be between 1m and 24h, got %s", o.TokenLifetime)
	}
	if o.Rate < 0 {
		v.add("oauth.rate", "must not be negative (0 disables the limit)")
	}
	if o.Rate > 0 && o.Burst < 1 {
		v.add("oauth.burst", "must be at least 1 when oauth.rate is set")
	}
}

func (c *Config) validateTenants(v *validator) {
	if len(c.Tenants) == 0 {
		v.add("tenants", "at least one tenant is needed; its SCIM base path is /scim/v2/<name>")
	}
	seen := map[string]int{}
	for i, t := range c.Tenants {
		f := fmt.Sprintf("tenants[%d]", i)
		v.uniqueName("tenants", i, t.Name, seen)
		for j, tok := range t.Tokens {
			if tok = strings.TrimSpace(tok); tok != "" && len(tok) < 20 {
				v.add(fmt.Sprintf("%s.tokens[%d]", f, j), "is %d characters; a bearer token needs at least 20", len(tok))
			}
		}
		switch t.Unique {
		case UniqueUserName, UniqueEmail:
		default:
			v.add(f+".unique", "must be userName or email, got %q", t.Unique)
		}
		for j, a := range t.Required {
			if !requiredAttributes[strings.ToLower(a)] {
				v.add(fmt.Sprintf("%s.required[%d]", f, j), "%q is not a User attribute a tenant can require", a)
			}
		}
		if t.Rate < 0 {
			v.add(f+".rate", "must not be negative")
		}
		if t.Burst < 0 {
			v.add(f+".burst", "must not be negative")
		}
	}
}

func (c *Config) validateSinks(v *validator) {
	seen := map[string]int{}
	for i, s := range c.Sinks {
		f := fmt.Sprintf("sinks[%d]", i)
		v.uniqueName("sinks", i, s.Name, seen)
		if s.Type != "webhook" {
			v.add(f+".type", "must be webhook, got %q", s.Type)
		}
		if u, err := url.Parse(s.URL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			v.add(f+".url", "must be an absolute http(s) URL, got %q", s.URL)
		}
		if err := checkSecret(s.Secret); err != nil {
			v.add(f+".secret", "%v", err)
		}
		for j, e := range s.Events {
			if !eventPattern.MatchString(strings.TrimSpace(e)) {
				v.add(fmt.Sprintf("%s.events[%d]", f, j), "%q is not \"*\", \"user.*\", \"group.*\" or an event such as \"user.created\"", e)
			}
		}
		for j, t := range s.Tenants {
			if _, ok := c.Tenant(t); !ok {
				v.add(fmt.Sprintf("%s.tenants[%d]", f, j), "no tenant %q is configured", t)
			}
		}
		v.oneOf(f+".format", s.Format, "binary", "structured")
		if d := time.Duration(s.Timeout); d <= 0 || d > 5*time.Minute {
			v.add(f+".timeout", "must be between 0 and 5m, got %s", s.Timeout)
		}
		for h := range s.Headers {
			lh := strings.ToLower(h)
			for _, r := range reservedHeaders {
				if lh == r || strings.HasSuffix(r, "-") && strings.HasPrefix(lh, r) {
					v.add(fmt.Sprintf("%s.headers.%s", f, h), "is set by scimrelay on every delivery and cannot be overridden")
				}
			}
		}
		if s.Concurrency < 1 || s.Concurrency > 1024 {
			v.add(f+".concurrency", "must be between 1 and 1024, got %d", s.Concurrency)
		}
		for j, d := range s.Retry {
			if d <= 0 {
				v.add(fmt.Sprintf("%s.retry[%d]", f, j), "must be positive")
			}
		}
	}
}

// checkSecret checks a Standard Webhooks secret: whsec_ and base64 of 24 to 64 bytes.
func checkSecret(s string) error {
	if s == "" {
		return fmt.Errorf("is required: every delivery is signed (generate one with: echo whsec_$(head -c 32 /dev/urandom | base64))")
	}
	raw, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return fmt.Errorf("must start with whsec_ (the Standard Webhooks secret format)")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return fmt.Errorf("the part after whsec_ is not base64")
	}
	if len(key) < 24 || len(key) > 64 {
		return fmt.Errorf("must hold 24 to 64 random bytes, holds %d", len(key))
	}
	return nil
}

// validator collects problems.
type validator struct{ problems Problems }

// uniqueName checks the name of list[i] (tenants or sinks): its syntax, and
// that no earlier entry of seen has it.
func (v *validator) uniqueName(list string, i int, name string, seen map[string]int) {
	field := fmt.Sprintf("%s[%d].name", list, i)
	if !namePattern.MatchString(name) {
		v.add(field, "must match [a-z0-9][a-z0-9_-]* (at most 64 characters), got %q", name)
	} else if j, dup := seen[name]; dup {
		v.add(field, "%q is also %s[%d]", name, list, j)
	} else {
		seen[name] = i
	}
}

func (v *validator) add(field, format string, args ...any) {
	v.problems = append(v.problems, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) oneOf(field, got string, allowed ...string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	v.add(field, "must be one of %s, got %q", strings.Join(allowed, ", "), got)
}

// hostPort checks a listen address; emptyOK allows "" (no listener).
func (v *validator) hostPort(field, addr string, emptyOK bool) {
	if addr == "" {
		if !emptyOK {
			v.add(field, "must be host:port, e.g. 127.0.0.1:8080")
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		v.add(field, "must be host:port, e.g. 127.0.0.1:8080, got %q", addr)
	}
}
