// SPDX-License-Identifier: Apache-2.0

package main

import (
	"go/build"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/scimrelay/scimrelay"

// importRules are the layout's dependency rules: for each package (and the
// packages under it), the project packages it may import. A package not
// named here falls under its nearest named parent. Test files count too,
// except where noted: a protocol package whose tests reach into the store
// would have its contract defined by one implementation.
var importRules = []struct {
	pkg     string
	allowed []string // project packages (and their sub-packages) it may import
	why     string
}{
	{"scim", []string{"scim"}, "the protocol knows no storage, bus or delivery"},
	{"config", nil, "config parses and reports; the rules belong to the packages that enforce them"},
	{"relay/events", []string{"relay/events"}, "the event contract is shared by relay and sinks and depends on neither"},
	{"relay/natsbus", []string{"relay/natsbus", "relay/events", "relay/disk", "relay/certfile", "relay/lograte"}, "NATS set-up knows the stream, nothing of the store"},
	{"relay", []string{"relay", "scim", "relay/disk", "relay/lograte"}, "the write path never knows delivery or the composition layer"},
	{"relay/disk", nil, "a shared leaf imports nothing of the project"},
	{"relay/lograte", nil, "a shared leaf imports nothing of the project"},
	{"relay/certfile", []string{"relay/certfile"}, "a shared leaf imports nothing of the project (its tests, its own test helper)"},
	{"sinks", []string{"sinks", "relay/events", "relay/natsbus", "relay/disk"}, "a delivery worker runs without the data file"},
}

// TestImportRules fails when a package imports what the layout forbids, so
// that the architecture cannot drift one convenient import at a time.
func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string][]string{} // package (relative) -> project imports (relative)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
			return filepath.SkipDir
		}
		p, err := build.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files here
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			if imp == module || strings.HasPrefix(imp, module+"/") {
				pkgs[rel] = append(pkgs[rel], strings.TrimPrefix(strings.TrimPrefix(imp, module), "/"))
			}
		}
		if _, ok := pkgs[rel]; !ok {
			pkgs[rel] = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 8 {
		t.Fatalf("found only %d packages under %s; is the walk broken?", len(pkgs), root)
	}
	for pkg, imports := range pkgs {
		for _, imp := range imports {
			if strings.HasPrefix(imp, "cmd/") && !under(pkg, "cmd") {
				t.Errorf("%s imports %s: nothing outside cmd imports cmd", pkg, imp)
			}
			rule := -1
			for i, r := range importRules {
				if under(pkg, r.pkg) && (rule < 0 || len(r.pkg) > len(importRules[rule].pkg)) {
					rule = i
				}
			}
			if rule < 0 {
				continue
			}
			r := importRules[rule]
			if !slices.ContainsFunc(r.allowed, func(a string) bool { return under(imp, a) }) {
				t.Errorf("%s imports %s: %s may import only %v (%s)", pkg, imp, r.pkg, r.allowed, r.why)
			}
		}
	}
}

// under reports whether package p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
