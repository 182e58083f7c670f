// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// version and revision are set at build time where the Go toolchain cannot
// stamp them itself: deploy/Dockerfile builds without .git in its context,
// so it passes them with
//
//	-ldflags "-X main.version=v1.2.3 -X main.revision=<commit>"
//
// Empty, they come from the module's build information.
var (
	version  = ""
	revision = ""
)

// buildInfo describes the running binary.
type buildInfo struct {
	Version   string `json:"version"`            // module version; "devel" for an untagged build without VCS information
	Revision  string `json:"revision,omitempty"` // VCS commit; empty when unknown
	Modified  bool   `json:"modified,omitempty"` // built from a working tree with uncommitted changes
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}

// currentBuild reads the running binary's build information.
func currentBuild() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	return buildFrom(bi, version, revision)
}

// buildFrom combines the toolchain's build information (nil when the
// binary has none) with what -ldflags set, which wins.
func buildFrom(bi *debug.BuildInfo, ldVersion, ldRevision string) buildInfo {
	b := buildInfo{Version: "devel", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			b.Version = v
		}
		if bi.GoVersion != "" {
			b.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if ldVersion != "" {
		b.Version = ldVersion
	}
	if ldRevision != "" {
		// What the toolchain said about the tree does not describe a
		// revision named from outside.
		b.Revision, b.Modified = ldRevision, false
	}
	return b
}

// versionString is the version alone, as in the User-Agent of deliveries.
func versionString() string { return currentBuild().Version }

// String is what `scimrelay version` and `scimrelay --version` print.
func (b buildInfo) String() string {
	rev := b.Revision
	switch {
	case rev == "":
		rev = "unknown (built without VCS information)"
	case b.Modified:
		rev += " (modified)"
	}
	return fmt.Sprintf("scimrelay %s\n  revision  %s\n  go        %s %s\n", b.Version, rev, b.GoVersion, b.Platform)
}

// buildInfoMetric is scimrelay_build_info: the Prometheus convention for
// telling which binary a target runs, joinable onto any other series.
func buildInfoMetric(b buildInfo) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "scimrelay_build_info",
		Help:        "Always 1; the labels say which build of scimrelay is running.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}

func newVersionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision and Go version of this scimrelay",
		Long: `Print the module version, the VCS revision it was built from (and whether the
working tree had uncommitted changes) and the Go version, from the binary's
build information. 'scimrelay --version' prints the same.`,
		Example: "  scimrelay version\n  scimrelay version --json",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printBuild(cmd.OutOrStdout(), currentBuild(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printBuild(w io.Writer, b buildInfo, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(b)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
