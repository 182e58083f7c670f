// SPDX-License-Identifier: Apache-2.0

package config

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxNodes bounds the nodes one decoding visits, so that aliases that
// refer to aliases cannot make a small file expand into a huge one.
const maxNodes = 100_000

// coreTags are the YAML tags a value may be given explicitly: those of the
// core schema, whose meaning the decoder gives them.
var coreTags = map[string]bool{"!!str": true, "!!int": true, "!!float": true, "!!bool": true, "!!null": true, "!!map": true, "!!seq": true}

// emptyDocument reports whether a YAML document holds nothing: a --- with
// at most comments after it, which the parser reads as a null written as
// nothing.
func emptyDocument(doc *yaml.Node) bool {
	for _, n := range doc.Content {
		if n.Kind != yaml.ScalarNode || n.Tag != "!!null" || n.Value != "" || n.Style != 0 {
			return false
		}
	}
	return true
}

// decode expands and strictly decodes relay.yaml text over the defaults.
// strictEnv says for which fields an unset variable is an error.
func decode(data []byte, lookupEnv func(string) (string, bool), strictEnv func(field string) bool) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && err != io.EOF {
		msg := "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")
		if line := tabIndented(data); line > 0 {
			msg += fmt.Sprintf("; line %d is indented with a tab, and YAML indents with spaces only", line)
		}
		return nil, Problems{{Message: msg}}
	}
	// A second document (after ---) would be ignored: refused instead. A
	// --- with nothing after it (an editor's or a template's habit) holds
	// none, and is taken.
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if err == io.EOF {
			break
		}
		if err == nil && emptyDocument(&next) {
			continue
		}
		line := 0
		if err == nil {
			line = next.Line
		}
		return nil, Problems{{Message: "relay.yaml must hold one YAML document; remove the --- and what follows, or merge it into the first", Line: line}}
	}
	cfg := Default()
	if len(root.Content) == 0 {
		return cfg, nil
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return nil, Problems{{Message: "relay.yaml must be a mapping of keys to values", Line: doc.Line}}
	}
	d := decoder{lookupEnv: lookupEnv, strictEnv: strictEnv, lines: map[string]int{}}
	d.value(doc, reflect.ValueOf(cfg).Elem(), "")
	if d.nodes > maxNodes {
		// What was left undecoded would be reported as thousands of
		// problems of empty values, burying the one that matters.
		return nil, Problems{d.tooBig}
	}
	cfg.lines = d.lines
	cfg.resolve()
	if len(d.problems) > 0 {
		return cfg, d.problems
	}
	return cfg, nil
}

// decoder walks the YAML tree and the configuration types together, so
// that every problem is reported with the path of its field, and one
// problem does not hide the next (yaml.v3's own decoding stops reporting
// at the first type error of a value, and names lines, not fields).
type decoder struct {
	lookupEnv func(string) (string, bool)
	strictEnv func(field string) bool
	problems  Problems
	nodes     int
	tooBig    Problem // once nodes passes maxNodes
	lines     map[string]int
}

func (d *decoder) add(n *yaml.Node, path, format string, args ...any) {
	d.problems = append(d.problems, Problem{Field: path, Message: fmt.Sprintf(format, args...), Line: n.Line})
}

// value decodes n into v, which holds the default.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if d.nodes++; d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.tooBig = Problem{Field: path, Message: fmt.Sprintf("the file expands to more than %d values (aliases of aliases?)", maxNodes), Line: n.Line}
		}
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if _, ok := d.lines[path]; !ok && path != "" {
		d.lines[path] = n.Line // a list item; entries records a key's own line
	}
	if n.Style&yaml.TaggedStyle != 0 && !coreTags[n.ShortTag()] {
		// Ignored, "token: !vault secret/data/x" was a token of the
		// path's text, and "!!binary ZGVidWc=" the base64.
		d.add(n, path, "the tag %s is not one relay.yaml reads (!!str, !!int, !!float, !!bool, !!null, !!map and !!seq are); a secret comes from ${NAME}", n.Tag)
		return
	}
	if n.Kind == yaml.ScalarNode {
		expanded, ok := d.expand(n, path)
		if !ok {
			return
		}
		if expanded != n && expanded.ShortTag() == "!!null" {
			if expanded.Value == "" {
				// "rate: ${RATE:-}" with RATE empty keeps rate's default, as
				// "rate:" with nothing after it does; before, a number
				// became 0 ("no limit") and a boolean false. The key is
				// not set either: a default that depends on others
				// (nats.sync_interval's, with nats.url) is that default.
				delete(d.lines, path)
				return
			}
			// A variable holding "null" or "~" is that text, not YAML's
			// null: it kept the default (a generated admin token, no
			// rate limit) where the file named a value.
			expanded.Tag = "!!str"
		}
		n = expanded
	}
	switch p := v.Addr().Interface().(type) {
	case *Duration:
		if d.scalar(n, path, "a duration such as 10s or 7d") {
			dur, err := ParseDuration(n.Value)
			if err != nil {
				d.add(n, path, "%v", err)
				return
			}
			*p = Duration(dur)
		}
		return
	case *Size:
		if d.scalar(n, path, "a size such as 4MiB") {
			size, err := parseSize(n.Value)
			if err != nil {
				d.add(n, path, "%v", err)
				return
			}
			*p = Size(size)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		// An optional block: present (even empty) or absent.
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			return
		}
		elem := reflect.New(v.Type().Elem())
		d.value(n, elem.Elem(), path)
		v.Set(elem)
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.add(n, path, "want a list, got %s", describe(n))
			return
		}
		list := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.value(c, list.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(list)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.add(n, path, "want a mapping of names to values, got %s", describe(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		d.entries(n, path, func(key, val *yaml.Node, field string) {
			if val == nil {
				return
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			d.value(val, elem, field)
			m.SetMapIndex(reflect.ValueOf(key.Value), elem)
		})
		v.Set(m)
	case reflect.String:
		if d.scalar(n, path, "a string") && n.ShortTag() != "!!null" {
			v.SetString(n.Value)
		}
	case reflect.Bool:
		var b bool
		if d.scalar(n, path, "true or false") && d.decodeScalar(n, &b, path, "true or false") {
			v.SetBool(b)
		}
	case reflect.Int, reflect.Int64:
		var i int64
		if d.scalar(n, path, "a whole number") && d.notFloat(n, path) && d.notOctal(n, path) && d.decodeScalar(n, &i, path, "a whole number") {
			if v.OverflowInt(i) {
				d.add(n, path, "%s is out of range", n.Value)
				return
			}
			v.SetInt(i)
		}
	case reflect.Float64:
		var f float64
		if d.scalar(n, path, "a number") && d.notOctal(n, path) && d.decodeScalar(n, &f, path, "a number") {
			if math.IsInf(f, 0) || math.IsNaN(f) {
				d.add(n, path, "want a finite number, got %s", n.Value)
				return
			}
			v.SetFloat(f)
		}
	default:
		// A configuration type this decoder does not know is a bug here,
		// not in the file.
		panic(fmt.Sprintf("config: cannot decode into %s at %s", v.Type(), path))
	}
}

// structure decodes a mapping into a struct by its fields' yaml tags.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.add(n, path, "want a mapping of keys to values, got %s", describe(n))
		return
	}
	fields := map[string]int{}
	for i := 0; i < v.NumField(); i++ {
		if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			fields[name] = i
		}
	}
	d.entries(n, path, func(key, val *yaml.Node, field string) {
		i, ok := fields[key.Value]
		switch {
		case !ok:
			// With nothing after it too: "listne:" was taken silently.
			d.add(key, field, "unknown key%s", suggest(key.Value, fields))
		case val != nil:
			d.value(val, v.Field(i), field)
		}
	})
}

// entries calls f for each key of a mapping, with its value, nil when it
// is null: a key with nothing after it keeps its default. Keys must be
// strings and appear once.
func (d *decoder) entries(n *yaml.Node, path string, f func(key, val *yaml.Node, field string)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.add(k, path, "a key must be a name, got %s", describe(k))
			continue
		}
		field := joinPath(path, k.Value)
		if k.ShortTag() == "!!merge" {
			// YAML 1.1's merge (<<: *anchor) is not read: "unknown key"
			// left the operator looking for a typo, and the keys the
			// anchor supplies reported missing.
			d.add(k, field, "a YAML merge key (<<: *anchor), which relay.yaml does not read; write the keys out in full")
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.add(k, field, "is set twice (also on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		if val.Kind == yaml.AliasNode && val.Alias != nil {
			val = val.Alias
		}
		if val.Kind == yaml.ScalarNode && val.ShortTag() == "!!null" {
			f(k, nil, field)
			continue
		}
		d.lines[field] = k.Line
		f(k, val, field)
	}
}

// expand returns n with ${ENV} references in its value expanded. A plain
// scalar's type is resolved again from the expanded text, so that
// "rate: ${RATE}" is a number when RATE is one.
func (d *decoder) expand(n *yaml.Node, path string) (*yaml.Node, bool) {
	if !strings.Contains(n.Value, "$") {
		return n, true
	}
	v, err := expandEnv(n.Value, d.lookupEnv, d.strictEnv(path))
	if err != nil {
		d.add(n, path, "%v", err)
		return n, false
	}
	c := *n // the node may be an alias's target, decoded again elsewhere
	c.Value = v
	if c.Style == 0 {
		c.Tag = ""
	}
	return &c, true
}

// scalar reports whether n is a single value, and a problem when it is not.
func (d *decoder) scalar(n *yaml.Node, path, want string) bool {
	if n.Kind == yaml.ScalarNode {
		return true
	}
	d.add(n, path, "want %s, got %s", want, describe(n))
	return false
}

// notFloat refuses a number with a fraction or an exponent where a whole
// number belongs, which yaml.v3 would decode cut to its whole part
// (concurrency 0.5 became 0, burst 2.9 became 2).
func (d *decoder) notFloat(n *yaml.Node, path string) bool {
	if n.ShortTag() != "!!float" {
		return true
	}
	msg := "want a whole number, got " + n.Value
	var f float64
	if n.Decode(&f) == nil && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
		msg += fmt.Sprintf("; write %d", int64(f)) // 1e3, 2.0
	}
	d.add(n, path, "%s", msg)
	return false
}

// leadingZero is a whole number written with a leading zero, which YAML
// 1.1 (and yaml.v3) reads as octal, and YAML 1.2 as decimal.
var leadingZero = regexp.MustCompile(`^[-+]?0[0-9_]*[0-9]$`)

// notOctal refuses a whole number with a leading zero: "partitions: 016"
// was taken as 14 without a word. 0o16 says octal.
func (d *decoder) notOctal(n *yaml.Node, path string) bool {
	if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 || !leadingZero.MatchString(n.Value) {
		return true
	}
	var i int64
	if n.Decode(&i) != nil {
		return true // not a number to YAML (08): decodeScalar says so
	}
	sign, digits := "", strings.TrimLeft(n.Value, "+")
	if strings.HasPrefix(digits, "-") {
		sign, digits = "-", digits[1:]
	}
	digits = cmp.Or(strings.TrimLeft(strings.ReplaceAll(digits, "_", ""), "0"), "0")
	d.add(n, path, "%s has a leading zero, which YAML reads as octal (%d): write %s%s, or %s0o%s for octal", n.Value, i, sign, digits, sign, digits)
	return false
}

// decodeScalar lets YAML resolve a scalar into out.
func (d *decoder) decodeScalar(n *yaml.Node, out any, path, want string) bool {
	if err := n.Decode(out); err != nil {
		msg := fmt.Sprintf("want %s, got %q", want, n.Value)
		if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 {
			plain := yaml.Node{Kind: yaml.ScalarNode, Value: n.Value}
			if plain.Decode(out) == nil {
				msg += " in quotes, which make it a string; remove the quotes"
			}
		}
		d.add(n, path, "%s", msg)
		return false
	}
	return true
}

// describe names what a node holds, for "want X, got Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		// The value itself is not quoted: the key may hold a secret (a
		// token given where a list of them belongs).
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return fmt.Sprintf("a string of %d characters", len([]rune(n.Value)))
	}
	return "nothing usable"
}

// tabIndented returns the first line of data indented with a tab, 0 when
// none is: yaml.v3 says only that a character cannot start a token.
func tabIndented(data []byte) int {
	for i, line := range bytes.Split(data, []byte("\n")) {
		indent := line[:len(line)-len(bytes.TrimLeft(line, " \t"))]
		if bytes.IndexByte(indent, '\t') >= 0 && len(bytes.TrimSpace(line)) > 0 {
			return i + 1
		}
	}
	return 0
}

// suggest names the known key k was likely meant to be: one that differs
// only in case or separators, else the closest by edit distance (letters
// added, dropped, changed or swapped), at most one edit for a key of up to
// four letters and two for a longer one; ties go to the first in order.
func suggest(k string, fields map[string]int) string {
	norm := func(s string) string { return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s)) }
	best, bestDist := "", 0
	for _, f := range slices.Sorted(maps.Keys(fields)) {
		d := editDistance(norm(f), norm(k))
		if d == 0 {
			return fmt.Sprintf("; did you mean %q?", f)
		}
		if limit := min(2, max(1, len(norm(k))/4)); d <= limit && (best == "" || d < bestDist) {
			best, bestDist = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// editDistance is the optimal string alignment distance of a and b: the
// fewest letters inserted, deleted, substituted or swapped with their
// neighbour that turn one into the other.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2, prev, cur := make([]int, len(rb)+1), make([]int, len(rb)+1), make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
