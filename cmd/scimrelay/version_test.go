// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildFrom(t *testing.T) {
	tagged := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: module, Version: "v1.4.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "362b9f477af519149b138618eacbbdcc08d7e6fd"}, {Key: "vcs.modified", Value: "true"},
	}}
	noVCS := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: module, Version: "(devel)"}}
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, c := range []struct {
		name           string
		bi             *debug.BuildInfo
		ldVer, ldRev   string
		want           buildInfo
		wantInSentence string
	}{
		{"tagged, modified tree", tagged, "", "",
			buildInfo{Version: "v1.4.0", Revision: "362b9f477af519149b138618eacbbdcc08d7e6fd", Modified: true, GoVersion: "go1.26.8", Platform: platform},
			"revision  362b9f477af519149b138618eacbbdcc08d7e6fd (modified)\n"},
		{"-buildvcs=false", noVCS, "", "",
			buildInfo{Version: "devel", GoVersion: "go1.26.8", Platform: platform},
			"revision  unknown (built without VCS information)\n"},
		{"ldflags win (the Docker build)", tagged, "v2.0.0", "0123abc", buildInfo{Version: "v2.0.0", Revision: "0123abc", GoVersion: "go1.26.8", Platform: platform},
			"scimrelay v2.0.0\n  revision  0123abc\n"},
		{"no build information", nil, "", "", buildInfo{Version: "devel", GoVersion: runtime.Version(), Platform: platform}, "  go        " + runtime.Version() + " " + platform + "\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := buildFrom(c.bi, c.ldVer, c.ldRev)
			if got != c.want {
				t.Fatalf("buildFrom = %+v, want %+v", got, c.want)
			}
			if s := got.String(); !strings.Contains(s, c.wantInSentence) || strings.Count(s, "\n") != 3 {
				t.Fatalf("String() = %q, want it to contain %q", s, c.wantInSentence)
			}
		})
	}
}

// TestVersionCommand checks that `version` and `--version` print the same
// build information and that --json is one object.
func TestVersionCommand(t *testing.T) {
	b := currentBuild()
	code, out, stderr := cli(t, "version")
	if code != exitOK || out != b.String() || !strings.HasPrefix(out, "scimrelay "+b.Version+"\n") ||
		!strings.Contains(out, "go        "+runtime.Version()) {
		t.Fatalf("version: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	for _, flag := range []string{"--version", "-v"} {
		if code, got, _ := cli(t, flag); code != exitOK || got != out {
			t.Errorf("%s: exit %d, printed %q; version printed %q", flag, code, got, out)
		}
	}
	code, out, _ = cli(t, "version", "--json")
	var got buildInfo
	if code != exitOK || strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &got) != nil || got != b {
		t.Fatalf("version --json: exit %d, %q, decoded %+v, want %+v", code, out, got, b)
	}
	if code, _, _ := cli(t, "version", "extra"); code != exitUsage {
		t.Errorf("version extra: exit %d, want %d", code, exitUsage)
	}
}

// TestBuildInfoMetric reads scimrelay_build_info from /metrics in both
// roles, the way Prometheus does.
func TestBuildInfoMetric(t *testing.T) {
	b := currentBuild()
	want := fmt.Sprintf(`scimrelay_build_info{goversion=%q,revision=%q,version=%q} 1`, b.GoVersion, b.Revision, b.Version)
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	res, err := http.Get(p.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "\n"+want+"\n") {
		t.Fatalf("/metrics (%d) lacks %s", res.StatusCode, want)
	}
}
