// SPDX-License-Identifier: Apache-2.0

package adminclient

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/relay"
)

// TestMetricsAndStorage reads a relay's /metrics and its data file by
// bucket over HTTP, as scimrelay bench's scale mode does; the storage
// statistics need the admin token, and an answer that is not the
// Prometheus text format is an error, not an empty set of metrics.
func TestMetricsAndStorage(t *testing.T) {
	store, err := relay.Open(filepath.Join(t.TempDir(), "scimrelay.db"), relay.Options{
		Tenants: []relay.TenantOptions{{Name: "acme"}}, NoSync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	relay.NewMetrics(reg, store, relay.NewRequestLog(store, relay.LogOptions{}, slog.New(slog.DiscardHandler)))
	srv := httptest.NewServer(admin.NewHandler(admin.Options{Token: "admin-token", Storage: store,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}))
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL, Token: "admin-token"}

	families, err := c.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	depth := families["scimrelay_outbox_depth"]
	if depth == nil || len(depth.GetMetric()) != 1 || depth.GetMetric()[0].GetGauge() == nil || depth.GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Errorf("scimrelay_outbox_depth: %v", depth)
	}
	if heap := families["go_memstats_heap_inuse_bytes"]; heap == nil || heap.GetMetric()[0].GetGauge().GetValue() <= 0 {
		t.Errorf("go_memstats_heap_inuse_bytes: %v", heap)
	}

	st, err := c.Storage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.FileBytes <= 0 || !slices.ContainsFunc(st.Buckets, func(b relay.BucketStats) bool { return b.Name == "tenants/acme/users" }) {
		t.Errorf("storage: %+v", st)
	}
	c.Token = "not-the-admin-token"
	var api *Error
	if _, err := c.Storage(t.Context()); !errors.As(err, &api) || api.Status != http.StatusUnauthorized {
		t.Errorf("storage with a wrong admin token: %v", err)
	}

	notMetrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "<html>a login page</html>\n")
	}))
	t.Cleanup(notMetrics.Close)
	c.BaseURL = notMetrics.URL
	if _, err := c.Metrics(t.Context()); err == nil || !strings.Contains(err.Error(), "reading the relay's /metrics") {
		t.Errorf("metrics from a page that is not Prometheus text: %v", err)
	}
}
