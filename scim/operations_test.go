// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"slices"
	"testing"

	"github.com/scimrelay/scimrelay/scim"
)

// TestOperationsAreRouted: every name in Operations is one a route gives a
// request, and no route gives another (route panics on one not listed), so
// that those who filter or label by operation can trust the list.
func TestOperationsAreRouted(t *testing.T) {
	ts := newTestServer(t, scim.Options{})
	for _, r := range []struct{ method, path string }{
		{"POST", "/Users"}, {"GET", "/Users/x"}, {"GET", "/Users"}, {"POST", "/Users/.search"},
		{"PUT", "/Users/x"}, {"PATCH", "/Users/x"}, {"DELETE", "/Users/x"},
		{"GET", "/ServiceProviderConfig"}, {"POST", "/Bulk"}, {"GET", "/Me"},
	} {
		ts.do(r.method, r.path, "{}")
	}
	var seen []string
	for _, info := range ts.requests() {
		if info.Operation != "" && !slices.Contains(seen, info.Operation) {
			seen = append(seen, info.Operation)
		}
	}
	slices.Sort(seen)
	want := scim.Operations()
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Errorf("routes gave operations %v; Operations() is %v", seen, want)
	}
}
