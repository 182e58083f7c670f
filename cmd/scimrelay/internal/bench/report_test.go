// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// TestReportJSONShape runs a small cycle with a receiver and the baseline
// and checks every documented key of the JSON output and its type.
func TestReportJSONShape(t *testing.T) {
	store, base := startRelay(t, nil)
	secret := newSecret(t)
	ln := listen(t)
	forwardOutbox(t, store, ln.Addr().String(), secret)
	var progress bytes.Buffer
	rep, err := Run(context.Background(), Options{
		URL: base, Token: testToken, Users: 20, Groups: 2, MembersPerGroup: 5, Concurrency: 2,
		ReceiverListener: ln, ReceiverSecret: secret, Baseline: true, Progress: &progress,
		DrainTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if progress.Len() == 0 {
		t.Error("no progress bar was drawn")
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	assertKeys(t, "report", doc, map[string]string{
		"config": "object", "duration_s": "number", "operations": "array", "total": "object",
		"events": "object", "baseline": "object",
	})
	assertKeys(t, "config", doc["config"], map[string]string{
		"url": "string", "users": "number", "groups": "number", "members_per_group": "number",
		"concurrency": "number", "rate": "number", "receiver": "string", "baseline": "bool",
		"prefix": "string", "drain_timeout_s": "number",
	})
	assertOps(t, "operations", doc["operations"])
	assertKeys(t, "total", doc["total"], opKeys)
	events := doc["events"].(map[string]any)
	assertKeys(t, "events", events, map[string]string{
		"expected": "number", "received": "number", "missing": "number", "duplicated": "number",
		"out_of_order": "number", "signature_failures": "number", "unexpected": "number",
		"invalid": "number", "signatures_verified": "bool", "latency": "object", "by_type": "array",
		"requests": "number", "caught_up_s": "number",
	})
	assertKeys(t, "events.latency", events["latency"], latencyKeys)
	for _, bt := range events["by_type"].([]any) {
		assertKeys(t, "events.by_type[]", bt, map[string]string{
			"type": "string", "expected": "number", "received": "number", "missing": "number", "unexpected": "number",
		})
	}
	if events["expected"].(float64) == 0 || events["expected"] != events["received"] {
		t.Errorf("events expected %v received %v", events["expected"], events["received"])
	}
	baseline := doc["baseline"].(map[string]any)
	assertKeys(t, "baseline", baseline, map[string]string{
		"duration_s": "number", "operations": "array", "total": "object", "rps_ratio": "number", "p99_ratio": "number",
	})
	assertOps(t, "baseline.operations", baseline["operations"])
	assertKeys(t, "baseline.total", baseline["total"], opKeys)
	if baseline["rps_ratio"].(float64) <= 0 || baseline["p99_ratio"].(float64) <= 0 {
		t.Errorf("ratios %v %v", baseline["rps_ratio"], baseline["p99_ratio"])
	}
	for _, op := range baseline["operations"].([]any) {
		if op := op.(map[string]any); len(op["errors"].(map[string]any)) != 0 {
			t.Errorf("baseline %s errors %v", op["name"], op["errors"])
		}
	}

	// Without receiver and baseline the keys stay, as null.
	b, err = json.Marshal(&Report{Operations: rep.Operations, Total: rep.Total})
	if err != nil {
		t.Fatal(err)
	}
	doc = nil
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if v, ok := doc["events"]; !ok || v != nil {
		t.Errorf("events = %v, %v; want null", v, ok)
	}
	if v, ok := doc["baseline"]; !ok || v != nil {
		t.Errorf("baseline = %v, %v; want null", v, ok)
	}
}

var latencyKeys = map[string]string{"p50_ms": "number", "p95_ms": "number", "p99_ms": "number", "max_ms": "number"}

var opKeys = map[string]string{
	"name": "string", "count": "number", "rps": "number", "p50_ms": "number", "p95_ms": "number",
	"p99_ms": "number", "max_ms": "number", "errors": "object", "first_error": "string", "throttled": "number",
}

func assertOps(t *testing.T, what string, v any) {
	t.Helper()
	ops, ok := v.([]any)
	if !ok {
		t.Fatalf("%s is %T, want an array", what, v)
	}
	var names []string
	for _, op := range ops {
		assertKeys(t, what+"[]", op, opKeys)
		names = append(names, op.(map[string]any)["name"].(string))
		for status, n := range op.(map[string]any)["errors"].(map[string]any) {
			if _, ok := n.(float64); !ok {
				t.Errorf("%s errors[%s] is %T, want a number", what, status, n)
			}
		}
	}
	if !slices.Equal(names, opNames[:]) {
		t.Errorf("%s names %v, want %v", what, names, opNames)
	}
}

// assertKeys checks that v is an object with exactly the keys of want, each
// of the JSON type named.
func assertKeys(t *testing.T, what string, v any, want map[string]string) {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s is %T, want an object", what, v)
	}
	for k, typ := range want {
		got, ok := m[k]
		if !ok {
			t.Errorf("%s has no key %q", what, k)
			continue
		}
		if kindOf(got) != typ {
			t.Errorf("%s.%s is %s, want %s", what, k, kindOf(got), typ)
		}
	}
	for k := range m {
		if _, ok := want[k]; !ok {
			t.Errorf("%s has an undocumented key %q", what, k)
		}
	}
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}

// fixedReport is a report with every section, for the golden table.
func fixedReport() *Report {
	lat := func(ms ...float64) Latency {
		d := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
		return Latency{P50: d(ms[0]), P95: d(ms[1]), P99: d(ms[2]), Max: d(ms[3])}
	}
	ops := make([]OpStats, numOps)
	for i := range ops {
		ops[i] = OpStats{Name: opNames[i], Count: 100 * (i + 1), RPS: 250.5 + float64(i), Latency: lat(1, 2, 3, 4+float64(i)), Errors: map[int]int{}}
	}
	ops[opCreateUser].Errors = map[int]int{409: 3, 0: 1}
	ops[opCreateUser].FirstError = "unexpected status 409: {\"status\":\"409\"}"
	return &Report{
		Config: Config{
			URL: "http://127.0.0.1:8080/scim/v2/default", Users: 10000, Groups: 100, MembersPerGroup: 500,
			Concurrency: 8, Receiver: "127.0.0.1:9000", Baseline: true, Prefix: "bench-0011aabb", DrainTimeout: 30 * time.Second,
		},
		Duration:   12345 * time.Millisecond,
		Operations: ops,
		Total:      OpStats{Name: "total", Count: 3600, RPS: 291.6, Latency: lat(1.5, 2.5, 3.5, 11), Errors: map[int]int{409: 3, 0: 1}},
		Events: &EventStats{
			Expected: 10, Received: 9, Missing: 1, Duplicated: 2, OutOfOrder: 0, SignatureFailures: 0,
			SignaturesVerified: true, Latency: lat(10, 20, 30, 40), Requests: 4,
			ByType: []TypeStats{{Type: typeUserCreated, Expected: 10, Received: 9, Missing: 1}},
		},
		Baseline: &Baseline{
			Duration: 2 * time.Second, Operations: ops, Total: OpStats{Name: "total", Count: 3600, RPS: 1800, Latency: lat(0.2, 0.4, 0.6, 1)},
			RPSRatio: 0.162, P99Ratio: 5.833,
		},
	}
}

func TestWriteTableGolden(t *testing.T) {
	var b bytes.Buffer
	if err := fixedReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	scimtest.Golden(t, filepath.Join("testdata", "table.golden"), b.Bytes())
}

func TestMarshalJSONGolden(t *testing.T) {
	b, err := json.MarshalIndent(fixedReport(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	scimtest.Golden(t, filepath.Join("testdata", "report.json.golden"), append(b, '\n'))
}

func TestPercentiles(t *testing.T) {
	seq := func(n int) []time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			ds[n-1-i] = time.Duration(i+1) * time.Millisecond // reversed: latencyOf sorts
		}
		return ds
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name string
		in   []time.Duration
		want Latency
	}{
		{"none", nil, Latency{}},
		{"one", seq(1), Latency{ms(1), ms(1), ms(1), ms(1)}},
		{"ten", seq(10), Latency{ms(5), ms(10), ms(10), ms(10)}},
		{"hundred", seq(100), Latency{ms(50), ms(95), ms(99), ms(100)}},
		{"thousand", seq(1000), Latency{ms(500), ms(950), ms(990), ms(1000)}},
		{"hundred and one", seq(101), Latency{ms(51), ms(96), ms(100), ms(101)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := latencyOf(tt.in); got != tt.want {
				t.Errorf("latencyOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}
