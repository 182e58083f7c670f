// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// spdxHeader is the first line of every Go file (README, "License").
const spdxHeader = "// SPDX-License-Identifier: Apache-2.0"

// TestLicense checks the license policy the README states: LICENSE at the
// module root holds the Apache License 2.0, and every Go file of the
// repository names it in an SPDX header on its first line, so that a file
// copied out of the repository still says under what terms.
func TestLicense(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	license, err := os.ReadFile(filepath.Join(root, "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Apache License\n                           Version 2.0, January 2004", "END OF TERMS AND CONDITIONS"} {
		if !strings.Contains(string(license), want) {
			t.Errorf("LICENSE is not the Apache License 2.0: it lacks %q", want)
		}
	}

	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		s.Scan()
		if s.Text() != spdxHeader {
			rel, _ := filepath.Rel(root, path)
			t.Errorf("%s does not start with %q; add it with: sed -i '1i %s\\n' %s", rel, spdxHeader, spdxHeader, rel)
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d Go files under %s; is the walk broken?", checked, root)
	}
}
