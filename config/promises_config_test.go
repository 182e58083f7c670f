// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// repositoryFile reads the relay.yaml a new user runs.
func repositoryFile(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// uncommentSinks turns relay.yaml's commented sink example into a sink, as
// a user enabling it would: "sinks: []" loses its [] and the comment lines
// after it their leading #.
func uncommentSinks(t *testing.T, text string) string {
	t.Helper()
	before, example, ok := strings.Cut(text, "\nsinks: []\n")
	if !ok {
		t.Fatal(`relay.yaml has no "sinks: []" line followed by the commented example`)
	}
	lines := strings.Split(example, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "#")
	}
	return before + "\nsinks:\n" + strings.Join(lines, "\n")
}

// keyPaths lists the field paths of every mapping key in a YAML text, with
// list items written [] as Keys writes them.
func keyPaths(t *testing.T, text string) map[string]bool {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path+"[]")
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := joinPath(path, n.Content[i].Value)
				paths[p] = true
				walk(n.Content[i+1], p)
			}
		}
	}
	walk(&doc, "")
	return paths
}

// TestRelayYAMLDocumentsEveryKey holds the Configuration section's
// "relay.yaml documents every key": every key the decoder reads is in the
// shipped file, set or in its commented sink example, and that example,
// uncommented, is a file the decoder accepts.
func TestRelayYAMLDocumentsEveryKey(t *testing.T) {
	text := uncommentSinks(t, repositoryFile(t))
	// Keys whose default depends on other keys are documented commented
	// out, so that a copy of the file leaves them to the relay.
	for _, key := range []string{"\n  # sync_interval: "} {
		if !strings.Contains(text, key) {
			t.Fatalf("relay.yaml does not document %q commented out", strings.TrimSpace(key))
		}
		text = strings.Replace(text, key, strings.Replace(key, "# ", "", 1), 1)
	}
	documented := keyPaths(t, text)
	for _, k := range Keys() {
		if !documented[k] {
			t.Errorf("relay.yaml does not document %s", k)
		}
	}
	vars := map[string]string{"CRM_WEBHOOK_SECRET": "whsec_x", "CRM_WEBHOOK_OLD_SECRET": "whsec_y", "CRM_TOKEN": "t"}
	cfg, err := Parse([]byte(text), env(vars))
	if err != nil {
		t.Fatalf("relay.yaml with its sink example uncommented: %v\n%s", err, text)
	}
	// The commented keys hold the default the relay applies when they are
	// left out, as every key set does (TestRelayYAMLHoldsTheDefaults).
	if cfg.NATS.SyncInterval != Default().NATS.SyncInterval {
		t.Errorf("relay.yaml's commented nats.sync_interval, uncommented, is %s, not the default %s", cfg.NATS.SyncInterval, Default().NATS.SyncInterval)
	}
	if len(cfg.Sinks) != 1 || cfg.Sinks[0].Name != "crm" || cfg.Sinks[0].Batch == nil || len(cfg.Sinks[0].Retry) == 0 {
		t.Errorf("the uncommented example decoded to %+v", cfg.Sinks)
	}
	if len(Keys()) < 60 || !slices.Contains(Keys(), "sinks[].batch.max_wait") || !slices.Contains(Keys(), "nats.tls.ca_file") {
		t.Errorf("Keys() misses keys: %v", Keys())
	}
}

// TestRelayYAMLHoldsTheDefaults holds "relay.yaml documents every key with
// its default": every value the shipped file sets outside its tenant and
// sink entries is the default the code applies when the key is left out.
func TestRelayYAMLHoldsTheDefaults(t *testing.T) {
	cfg, err := Parse([]byte(repositoryFile(t)), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tenants, cfg.Sinks, cfg.lines = nil, nil, nil
	if d := Default(); !reflect.DeepEqual(cfg, d) {
		t.Errorf("relay.yaml sets values other than the defaults:\nfile     %+v\ndefaults %+v", cfg, d)
	}
}

// typeAt is the Go type of the key at a field path ("sinks[0].batch.max_wait").
func typeAt(t *testing.T, path string) reflect.Type {
	t.Helper()
	typ := reflect.TypeFor[Config]()
	for _, seg := range strings.Split(path, ".") {
		name, list := strings.CutSuffix(seg, "[0]")
		if typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		found := false
		for i := 0; i < typ.NumField(); i++ {
			if tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ","); tag == name {
				typ, found = typ.Field(i).Type, true
				break
			}
		}
		if !found {
			t.Fatalf("no key %s in %s", name, path)
		}
		if list {
			typ = typ.Elem()
		}
	}
	return typ
}

// yamlAt writes a relay.yaml that sets the key at path (list items as [0])
// to value, and returns it with the line the key is on.
func yamlAt(path, value string) (string, int) {
	var b strings.Builder
	segs := strings.Split(path, ".")
	prefix, indent := "", ""
	for i, seg := range segs {
		name, list := strings.CutSuffix(seg, "[0]")
		if i == len(segs)-1 {
			b.WriteString(prefix + name + ": " + value + "\n")
			return b.String(), i + 1
		}
		b.WriteString(prefix + name + ":\n")
		if list {
			prefix, indent = indent+"  - ", indent+"    "
		} else {
			indent += "  "
			prefix = indent
		}
	}
	return b.String(), len(segs)
}

// TestEveryKeyRefusesAValueOfTheWrongType holds "every problem is listed
// at once, naming its field and line" for every key relay.yaml can hold:
// a value that is not of the key's type (a mapping for a single value or a
// list, a list for a mapping, a word for a number, a boolean, a duration
// or a size) is one problem naming that key and its line, never a value
// silently dropped.
func TestEveryKeyRefusesAValueOfTheWrongType(t *testing.T) {
	for _, key := range Keys() {
		path := strings.ReplaceAll(key, "[]", "[0]")
		typ := typeAt(t, path)
		wrong := []string{"{wrong: 1}"}
		switch {
		case typ.Kind() == reflect.Map:
			wrong = []string{"[wrong]", "wrong"}
		case typ.Kind() == reflect.Slice:
			wrong = append(wrong, "wrong")
		case typ.Kind() != reflect.String:
			wrong = append(wrong, "not-a-value", "[1]")
		}
		for _, value := range wrong {
			text, line := yamlAt(path, value)
			_, err := Parse([]byte(text), env(nil))
			var ps Problems
			if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Field != path || ps[0].Line != line {
				t.Errorf("%s: %s: got %v, want one problem naming %s on line %d\n%s", key, value, err, path, line, text)
			}
		}
	}
}

// TestEnvironmentExpansionAsDocumented holds the Configuration section's
// paragraph on ${NAME}, ${NAME:-default}, ${NAME:?message} and $$, each
// with its variable unset, empty and set, a $NAME refused and any other $
// kept, and "Expansion happens inside
// values after parsing, so a variable can never change the file's
// structure".
func TestEnvironmentExpansionAsDocumented(t *testing.T) {
	vars := map[string]string{"SET": "value", "EMPTY": ""}
	tests := []struct {
		value   string
		want    string // the expanded public_url
		problem string // instead, a problem saying this
	}{
		{"${SET}", "value", ""},
		{"${EMPTY}", "", ""},
		{"${UNSET}", "", "${UNSET} is not set"},
		{"${SET:-default}", "value", ""},
		{"${EMPTY:-default}", "default", ""},
		{"${UNSET:-default}", "default", ""},
		{"${UNSET:-}", "", ""},
		{"${SET:?say why}", "value", ""},
		{"${EMPTY:?say why}", "", "${EMPTY}: say why"},
		{"${UNSET:?say why}", "", "${UNSET}: say why"},
		{"$$", "$", ""},
		{"$${SET}", "${SET}", ""},
		{"a$$$${SET}b", "a$${SET}b", ""},
		{"x-${SET}-${EMPTY:-e}-$$-y", "x-value-e-$-y", ""},
		{"costs $5", "costs $5", ""}, // any other $ stays
		{"$ 5, $-x, $., $/x, $}, $%, $", "$ 5, $-x, $., $/x, $}, $%, $", ""},
		{"${UNSET:-$5 or $-}", "$5 or $-", ""},
		{"$$HOME", "$HOME", ""},
		// A $ before a letter or _ is how a shell writes a variable: taken
		// as text, it was a token no one meant.
		{"$SET", "", "$SET looks like a shell variable; write ${SET} to expand it, or $$ for a literal $"},
		{"https://$HOST_1/x", "", "$HOST_1 looks like a shell variable"},
		{"$$$SET", "", "$SET looks like a shell variable"},
		{"a$b", "", "a $ before a letter or _ looks like a shell variable"},
		{"${UNSET:-$SET}", "", "${UNSET:-...}: a $ before a letter or _ in a default looks like a shell variable"},
		{"${UNSET:-pa$$word}", "pa$word", ""}, // $$ is a $ in a default too
		{"${UNSET:-a$$$b}", "", "in a default looks like a shell variable"},
	}
	for _, tt := range tests {
		cfg, err := Parse([]byte("public_url: \""+tt.value+"\"\n"), env(vars))
		switch {
		case tt.problem != "":
			var ps Problems
			if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Field != "public_url" || !strings.Contains(ps[0].Message, tt.problem) {
				t.Errorf("%s: %v, want a problem of public_url saying %q", tt.value, err, tt.problem)
			}
		case err != nil:
			t.Errorf("%s: %v", tt.value, err)
		case cfg.PublicURL != tt.want:
			t.Errorf("%s expanded to %q, want %q", tt.value, cfg.PublicURL, tt.want)
		}
	}

	// A variable's value is used as it is: what looks like a reference or
	// YAML inside it is neither expanded again nor parsed.
	hostile := map[string]string{
		"SECRET":  "pa$$word${SET}$HOME$",
		"NEWLINE": "x\nadmin_listen: 0.0.0.0:8081",
		"FLOW":    "{listen: 0.0.0.0:1}",
		"LIST":    "[a-token-of-twenty-chars, another-token-of-twenty]",
		"SET":     "value",
	}
	cfg, err := Parse([]byte("admin:\n  token: ${SECRET}\npublic_url: ${NEWLINE}\ndata_dir: ${FLOW}\ntenants:\n  - name: acme\n"), env(hostile))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Token != hostile["SECRET"] || cfg.PublicURL != hostile["NEWLINE"] || cfg.DataDir != hostile["FLOW"] ||
		cfg.AdminListen != Default().AdminListen || cfg.Listen != Default().Listen {
		t.Errorf("a variable's value changed the file: token %q, public_url %q, data_dir %q, admin_listen %q, listen %q",
			cfg.Admin.Token, cfg.PublicURL, cfg.DataDir, cfg.AdminListen, cfg.Listen)
	}
	// A variable cannot turn one value into a list, nor a key be a variable.
	_, err = Parse([]byte("tenants:\n  - name: acme\n    tokens: ${LIST}\n"), env(hostile))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Field != "tenants[0].tokens" || !strings.Contains(ps[0].Message, "want a list") {
		t.Errorf("a variable holding a YAML list for tokens: %v", err)
	}
	_, err = Parse([]byte("${SET}: x\n"), env(hostile))
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Field != "${SET}" || !strings.Contains(ps[0].Message, "unknown key") {
		t.Errorf("a variable as a key: %v", err)
	}
}

// TestVariableHoldingNullIsText holds "a variable's value is never read
// again" and "an unquoted value that expands to nothing keeps its key's
// default" for a variable whose value YAML would read as null: only an
// empty expansion keeps the default; "null", "~" or "Null" is the text
// (a string key's value) or, where a number belongs, a problem naming the
// key, never the default.
func TestVariableHoldingNullIsText(t *testing.T) {
	for _, null := range []string{"null", "~", "Null", "NULL"} {
		vars := map[string]string{"ADMIN_TOKEN": null, "SCIM_RATE": null, "T": null, "NO_SYNC": null, "EMPTY": ""}
		cfg, ps := parse(t, "admin:\n  token: ${ADMIN_TOKEN}\ntenants:\n  - name: acme\n    tokens:\n      - ${T}\n", vars)
		if ps != nil {
			t.Fatalf("%s: %v", null, ps)
		}
		if cfg.Admin.Token != null || !slices.Equal(cfg.Tenants[0].Tokens, []string{null}) {
			t.Errorf("a variable holding %q: admin.token %q, tenants[0].tokens %q; want the text", null, cfg.Admin.Token, cfg.Tenants[0].Tokens)
		}
		_, ps = parse(t, "limits:\n  rate: ${SCIM_RATE}\nstorage:\n  no_sync: ${NO_SYNC}\n"+minimal, vars)
		wantProblem(t, ps, "limits.rate", "want a number")
		wantProblem(t, ps, "storage.no_sync", "want true or false")
		cfg, ps = parse(t, "limits:\n  rate: ${EMPTY}\nadmin:\n  token: ${EMPTY}\n"+minimal, vars)
		if ps != nil || cfg.Limits.Rate != Default().Limits.Rate || cfg.Admin.Token != Default().Admin.Token {
			t.Errorf("a variable expanding to nothing: %v, rate %v, token %q; want the defaults", ps, cfg.Limits.Rate, cfg.Admin.Token)
		}
	}
}
