// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
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
// Parse and Validate return, so that a user fixes them all in one go.
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

// Load reads, expands, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Read reads and decodes the file at path without validating it: for the
// CLI, which needs only admin_listen, admin.token and data_dir and must work
// where the server's secrets (sink secrets in the environment) are not set.
// Unknown keys and malformed values are still errors.
func Read(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	cfg, err := decode(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates relay.yaml text. ${NAME} and ${NAME:-default}
// in values are replaced from lookupEnv, and $$ is a literal $. Expansion
// happens inside values only, after the YAML is parsed, so that a variable's
// content can never add keys or change the file's structure.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	cfg, err := decode(data, lookupEnv)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decode expands and strictly decodes relay.yaml text over the defaults.
func decode(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Problems{{Message: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	cfg := Default()
	var problems Problems
	if len(root.Content) > 0 {
		doc := root.Content[0]
		if doc.Kind != yaml.MappingNode {
			return nil, Problems{{Message: "relay.yaml must be a mapping of keys to values", Line: doc.Line}}
		}
		problems = append(problems, expand(doc, "", lookupEnv)...)
		dropNulls(doc)
		problems = append(problems, checkKnown(doc, reflect.TypeOf(*cfg), "")...)
		if err := doc.Decode(cfg); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, Problems{{Message: err.Error()}}
			}
			for _, e := range te.Errors {
				problems = append(problems, Problem{Message: e})
			}
		}
	}
	cfg.applyListDefaults()
	if len(problems) > 0 {
		return nil, problems
	}
	return cfg, nil
}

// expand replaces ${NAME} in every scalar value under n.
func expand(n *yaml.Node, path string, lookupEnv func(string) (string, bool)) Problems {
	var problems Problems
	switch n.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return nil
		}
		v, err := expandEnv(n.Value, lookupEnv)
		if err != nil {
			return Problems{{Field: path, Message: err.Error(), Line: n.Line}}
		}
		n.Value = v
		if n.Style == 0 {
			n.Tag = "" // let YAML re-resolve the type of the expanded plain scalar
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			problems = append(problems, expand(n.Content[i+1], joinPath(path, n.Content[i].Value), lookupEnv)...)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			problems = append(problems, expand(c, fmt.Sprintf("%s[%d]", path, i), lookupEnv)...)
		}
	}
	return problems
}

// expandEnv expands ${NAME} and ${NAME:-default}; $$ is a literal $ and any
// other $ stays as it is.
func expandEnv(s string, lookupEnv func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			expr := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(expr, ":-")
			if !validEnvName(name) {
				return "", fmt.Errorf("${%s} is not a valid environment variable reference", expr)
			}
			v, ok := lookupEnv(name)
			if (!ok || v == "") && hasDef {
				v = def
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// dropNulls removes mapping entries whose value is null ("key:" with nothing
// after it), so that they keep their defaults instead of zeroing them.
func dropNulls(n *yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			v := n.Content[i+1]
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
				continue
			}
			dropNulls(v)
			kept = append(kept, n.Content[i], v)
		}
		n.Content = kept
	case yaml.SequenceNode:
		for _, c := range n.Content {
			dropNulls(c)
		}
	}
}

// checkKnown reports keys that the configuration types do not have, which
// a plain decode would silently ignore (a misspelt key is a setting lost).
func checkKnown(n *yaml.Node, t reflect.Type, path string) Problems {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var problems Problems
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				problems = append(problems, Problem{Field: joinPath(path, k.Value), Message: "unknown key" + suggest(k.Value, fields), Line: k.Line})
				continue
			}
			problems = append(problems, checkKnown(n.Content[i+1], ft, joinPath(path, k.Value))...)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, c := range n.Content {
			problems = append(problems, checkKnown(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return problems
}

// suggest names a known key that differs from k only in case or separators.
func suggest(k string, fields map[string]reflect.Type) string {
	norm := func(s string) string { return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s)) }
	for f := range fields {
		if norm(f) == norm(k) {
			return fmt.Sprintf("; did you mean %q?", f)
		}
	}
	return ""
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
