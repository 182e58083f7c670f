// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	Field   string // YAML path, e.g. "tenants[1].name"; empty when unknown
	Message string
	Line    int // 0 when unknown
}

func (p Problem) String() string {
	s := p.Message
	if p.Field != "" {
		s = p.Field + ": " + s
	}
	if p.Line > 0 {
		s += fmt.Sprintf(" (line %d)", p.Line)
	}
	return s
}

// Problems is every problem found in a configuration; it is the error Load,
// LoadExcept, Read and Parse return, so that a user fixes them all in one go. The
// composition layer adds the problems the components find to it.
type Problems []Problem

func (ps Problems) Error() string {
	var b strings.Builder
	if len(ps) == 1 {
		b.WriteString("configuration has 1 problem:")
	} else {
		fmt.Fprintf(&b, "configuration has %d problems:", len(ps))
	}
	for _, p := range ps {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Load reads and decodes the file at path, expanding ${ENV} references
// from the process environment. serve and check use LoadExcept, CLI
// commands Read; Load is the whole file, for any other reader.
//
// When the file is YAML but some values are wrong, Load returns the
// configuration with the defaults in place of those values together with
// Problems, so that a caller can check the rest and report everything at
// once. When the file cannot be read or parsed at all, the configuration is
// nil.
func Load(path string) (*Config, error) {
	return load(path, func(string) bool { return true })
}

// Read is Load for CLI commands, which use a few keys (admin_listen and
// admin.token, say) and must work where the server's secrets (sink secrets
// in the environment) are not set: an unset variable is an error only in
// the keys named, and expands to "" elsewhere. Unknown keys and malformed
// values are still errors.
func Read(path string, keys ...string) (*Config, error) {
	return load(path, func(field string) bool { return slices.Contains(keys, field) })
}

// ReadOnly is Read for a command that must work while the file holds a
// mistake elsewhere: healthcheck, the container's probe, which failed on
// an edit the running relay had not loaded (or had refused at a reload),
// so that the container was marked unhealthy and replaced by a process
// that could not start. Problems of other keys, unknown keys among them,
// are left to check and serve; one of the keys named, or of the file as
// a whole, is still an error.
func ReadOnly(path string, keys ...string) (*Config, error) {
	cfg, err := Read(path, keys...)
	var ps Problems
	if cfg == nil || !errors.As(err, &ps) {
		return cfg, err
	}
	ps = slices.DeleteFunc(slices.Clone(ps), func(p Problem) bool { return p.Field != "" && !slices.Contains(keys, p.Field) })
	if len(ps) == 0 {
		return cfg, nil
	}
	return cfg, fmt.Errorf("%s: %w", path, ps)
}

// LoadExcept is Load for a process that never reads some keys (a delivery
// worker, say, serves no SCIM and reads no tenant's token): an unset
// variable in a field unused names expands to "" instead of being an
// error, so that the process need not be given secrets it has no use for.
func LoadExcept(path string, unused func(field string) bool) (*Config, error) {
	return load(path, func(field string) bool { return !unused(field) })
}

// ReadData is Read for the text of a file its caller read itself, having
// checked the file it opened (who owns it, say); name names it in
// messages.
func ReadData(name string, data []byte, keys ...string) (*Config, error) {
	return decodeFile(name, data, func(field string) bool { return slices.Contains(keys, field) })
}

func load(path string, strictEnv func(field string) bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	return decodeFile(path, data, strictEnv)
}

// decodeFile decodes the text of the file name with the process
// environment.
func decodeFile(name string, data []byte, strictEnv func(field string) bool) (*Config, error) {
	cfg, err := decode(data, os.LookupEnv, strictEnv)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// Parse decodes relay.yaml text, expanding ${ENV} references with
// lookupEnv (see expandEnv for the syntax). Expansion happens inside values
// only, after the YAML is parsed, so that a variable's content can never
// add keys or change the file's structure. Like Load, it returns the
// configuration beside Problems when the text is YAML, unless aliases
// expand it past the bound on values, which is then the only problem.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return decode(data, lookupEnv, func(string) bool { return true })
}
