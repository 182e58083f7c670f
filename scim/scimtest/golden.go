// SPDX-License-Identifier: Apache-2.0

// Package scimtest holds what tests of scim and of its users share: the
// Backend conformance suite (RunBackendTests), an in-memory Backend that
// passes it (Memory), the Entra reference fixture with its documented
// contract (LoadEntraSteps, CheckEntraResponse, ReplayEntra), and golden
// files (Golden).
package scimtest

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/ instead of comparing with them")

// Golden compares got with the golden file at path, or, when the test runs
// with -update, writes got there. Review the diff of a rewritten file before
// committing it.
func Golden(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (go test -run '%s' -update creates it): %v", t.Name(), err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -run '%s' -update rewrites it; review the diff):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}
