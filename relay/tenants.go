// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// The configured tenants: their options from relay.yaml resolved (what
// must be unique, the attributes required, static tokens), and replaced
// whole at a reload (SetTenants).

// TenantOptions configures one tenant.
type TenantOptions struct {
	// Name is the tenant's name (events.ValidName): a URL segment and a NATS token.
	Name string
	// Unique is "userName" (the default) or "email" (the work email): what
	// must be unique among the tenant's users.
	Unique string
	// Required lists User attributes every user must carry, as attribute
	// paths: "emails", "name.givenName" or URN-qualified ones.
	Required []string
	// StaticTokens are bearer tokens from relay.yaml, accepted besides
	// stored ones; each needs at least 20 characters, and empty entries
	// (an unset variable) are ignored.
	StaticTokens []string
}

// Unique modes of TenantOptions.
const (
	UniqueUserName = "userName"
	UniqueEmail    = "email"
)

// UniqueMode returns the unique mode a TenantOptions.Unique names, spelled
// as its constant: UniqueUserName for "" or any case of userName,
// UniqueEmail for any case of email, else an error.
func UniqueMode(s string) (string, error) {
	switch {
	case s == "" || strings.EqualFold(s, UniqueUserName):
		return UniqueUserName, nil
	case strings.EqualFold(s, UniqueEmail):
		return UniqueEmail, nil
	}
	return "", fmt.Errorf("must be %s or %s, got %q", UniqueUserName, UniqueEmail, s)
}

// tenant is a tenant's configuration, resolved.
type tenant struct {
	name        string
	uniqueEmail bool
	required    []requirement
	static      []staticToken // its tokens from relay.yaml
}

// requirement is one attribute a tenant requires of its users.
type requirement struct {
	path    scim.AttrPath
	present *scim.Filter // "<path> pr"
}

// minTokenLength is the shortest static token accepted: a bearer token
// shorter than this can be guessed.
const minTokenLength = 20

// CheckStaticToken says why tok, a bearer token written in relay.yaml (a
// tenant's static token, the admin token), cannot be one: it is too short
// to resist guessing. The token is never part of the error.
func CheckStaticToken(tok string) error {
	if n := utf8.RuneCountInString(tok); n < minTokenLength {
		return fmt.Errorf("is %d characters; a bearer token needs at least %d", n, minTokenLength)
	}
	return nil
}

// resolve checks the options and resolves the tenants.
func (o Options) resolve() (map[string]*tenant, error) {
	var errs []error
	if o.BatchDelay < 0 || o.BatchDelay > maxBatchDelay {
		errs = append(errs, fmt.Errorf("storage.batch_delay: must be between 0 and %s, got %s", maxBatchDelay, o.BatchDelay))
	}
	if o.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("storage.batch_size: must not be negative, got %d", o.BatchSize))
	}
	tenants := make(map[string]*tenant, len(o.Tenants))
	index := map[string]int{}
	// tokenOwner is the tenant each static token opens: one token in two
	// tenants would open both, so it is refused.
	tokenOwner := map[[32]byte]string{}
	for i, to := range o.Tenants {
		field := fmt.Sprintf("tenants[%d]", i)
		if !events.ValidName(to.Name) {
			errs = append(errs, fmt.Errorf("%s.name: must match %s, got %q", field, events.NameRule, to.Name))
			continue
		}
		if j, dup := index[to.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is also tenants[%d]", field, to.Name, j))
			continue
		}
		index[to.Name] = i
		t, terrs := resolveTenant(field, to)
		errs = append(errs, terrs...)
		for j, tok := range to.StaticTokens {
			if tok = strings.TrimSpace(tok); tok == "" {
				continue
			}
			h := hashToken(tok)
			if other, ok := tokenOwner[h]; ok && other != field {
				// Not quoting the token: it is a secret.
				errs = append(errs, fmt.Errorf("%s.tokens[%d]: is also a token of %s; each tenant needs tokens of its own", field, j, other))
				continue
			}
			tokenOwner[h] = field
		}
		tenants[to.Name] = t
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return tenants, nil
}

// resolveTenant checks one tenant's options; field is its relay.yaml path.
func resolveTenant(field string, o TenantOptions) (*tenant, []error) {
	var errs []error
	t := &tenant{name: o.Name}
	if mode, err := UniqueMode(o.Unique); err != nil {
		errs = append(errs, fmt.Errorf("%s.unique: %w", field, err))
	} else {
		t.uniqueEmail = mode == UniqueEmail
	}
	for j, r := range o.Required {
		req, err := parseRequirement(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.required[%d]: %w", field, j, err))
			continue
		}
		t.required = append(t.required, req)
	}
	for j, tok := range o.StaticTokens {
		// An empty entry is an unset variable in a GitOps file: no token.
		if tok = strings.TrimSpace(tok); tok == "" {
			continue
		}
		if err := CheckStaticToken(tok); err != nil {
			errs = append(errs, fmt.Errorf("%s.tokens[%d]: %w", field, j, err))
			continue
		}
		h := hashToken(tok)
		if slices.ContainsFunc(t.static, func(st staticToken) bool { return st.hash == h }) {
			continue // written twice: one token, listed once
		}
		t.static = append(t.static, staticToken{hash: h, id: staticID(h), field: fmt.Sprintf("%s.tokens[%d]", field, j)})
	}
	return t, errs
}

// parseRequirement resolves a required attribute path against the User schema.
func parseRequirement(r string) (requirement, error) {
	p, err := scim.UserResourceType.ParsePath(strings.TrimSpace(r))
	if err != nil {
		return requirement{}, fmt.Errorf("required attribute %q: %w", r, err)
	}
	if p.Name == "" {
		return requirement{}, fmt.Errorf("required attribute %q names a whole extension, not an attribute", r)
	}
	// Only what a client writes and the relay keeps can be required:
	// requiring id, meta or groups (read-only) or password (never kept)
	// would refuse every user.
	if a := p.Leaf(); a != nil && (a.Mutability == scim.ReadOnly || a.Returned == scim.ReturnedNever) {
		return requirement{}, fmt.Errorf("required attribute %q is not one a client writes and the relay keeps", r)
	}
	// The canonical path is a valid filter operand, so "pr" gives presence
	// with the filter's rules (an empty string or list is absent).
	f, err := scim.ParseFilter(scim.UserResourceType, p.String()+" pr")
	if err != nil {
		return requirement{}, fmt.Errorf("required attribute %q: %w", r, err)
	}
	return requirement{path: p, present: f}, nil
}

// tenantMap returns the configured tenants; SetTenants replaces the map,
// never changes it.
func (s *Store) tenantMap() map[string]*tenant { return *s.tenants.Load() }

// SetTenants replaces the configured tenants (relay.yaml was reloaded):
// their options and static tokens, added ones (their buckets are created)
// and removed ones (their data stays in the file until it is purged;
// their requests are refused as for any unknown tenant), and records them
// in the file (see AddedSinceLastRun). It refuses what Options.Check
// refuses, and a tenant being purged (ErrBeingPurged), changing nothing. Requests under way finish with the tenant as
// they found it.
func (s *Store) SetTenants(list []TenantOptions) error {
	tenants, err := s.admissible(list)
	if err != nil {
		return err
	}
	// Open upgraded the file, so its layout is layoutVersion. Through the
	// committer, as every write after Open: it refuses once writes have
	// stopped, and checks that the file is still the relay's.
	if err := s.commits.do(func(tx *bolt.Tx) error {
		if err := refuseBeingPurged(tx, tenants); err != nil {
			return err
		}
		if _, err := prepare(tx, tenants); err != nil {
			return err
		}
		return recordTenants(tx, tenants)
	}); err != nil {
		if errors.Is(err, ErrBeingPurged) {
			return err
		}
		return fmt.Errorf("preparing the tenants' buckets: %w", err)
	}
	s.tokens.trackStatic(tenants)
	s.tenants.Store(&tenants)
	s.tokens.seen.forgetSeen(tenants)
	return nil
}

// CheckTenants refuses what SetTenants would refuse of list for what the
// store holds (a relay.yaml token that is another tenant's stored
// credential, a tenant being purged), changing nothing: a reload checks
// before it changes anything outside the store (the sinks' consumers).
func (s *Store) CheckTenants(list []TenantOptions) error {
	tenants, err := s.admissible(list)
	if err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error { return refuseBeingPurged(tx, tenants) })
}

// admissible resolves list, refusing what Options.Check refuses and a
// relay.yaml token that is another tenant's stored credential
// (ErrSharedToken). A tenant being purged is refused in the transaction
// that would change the tenants (refuseBeingPurged).
func (s *Store) admissible(list []TenantOptions) (map[string]*tenant, error) {
	tenants, err := Options{Tenants: list}.resolve()
	if err != nil {
		return nil, err
	}
	if err := s.tokens.refuseShared(tenants); err != nil {
		return nil, err
	}
	return tenants, nil
}

// HasTenant reports whether a tenant is configured.
func (s *Store) HasTenant(name string) bool {
	_, ok := s.tenantMap()[name]
	return ok
}

// UniqueByEmail reports whether tenant holds its users unique by work
// email (unique: email) rather than by userName: its User schema then
// says userName is not unique, and emails required.
func (s *Store) UniqueByEmail(tenant string) bool {
	t, ok := s.tenantMap()[tenant]
	return ok && t.uniqueEmail
}

// RequiredPaths returns the attributes tenant requires of its users
// (tenants[].required): its User schema says they are required.
func (s *Store) RequiredPaths(tenant string) []scim.AttrPath {
	t, ok := s.tenantMap()[tenant]
	if !ok {
		return nil
	}
	paths := make([]scim.AttrPath, len(t.required))
	for i, r := range t.required {
		paths[i] = r.path
	}
	return paths
}

// Tenants returns the names of the configured tenants.
func (s *Store) Tenants() []string {
	out := make([]string, 0, len(s.tenantMap()))
	for name := range s.tenantMap() {
		out = append(out, name)
	}
	return out
}
