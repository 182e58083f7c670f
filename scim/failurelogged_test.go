// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// getFails answers every Get with err, or panics with it.
type getFails struct {
	scim.Backend
	err    error
	panics bool
}

func (b getFails) Get(context.Context, string, *scim.ResourceType, string) (*scim.Resource, error) {
	if b.panics {
		panic(b.err)
	}
	return nil, b.err
}

// TestFailureLogged: RequestInfo.FailureLogged is set exactly when the
// handler logged the failure with its cause (an internal error, 500), so
// that an observer logging 5xx answers logs each failure once; a 503 the
// backend chose is the observer's to log.
func TestFailureLogged(t *testing.T) {
	for _, tt := range []struct {
		name   string
		err    error
		panics bool
		status int
		logged bool
	}{
		{"internal", errors.New("disk on fire"), false, http.StatusInternalServerError, true},
		{"panic", errors.New("nil map"), true, http.StatusInternalServerError, true},
		{"unavailable", scim.Errorf(scim.ErrUnavailable, "retry later"), false, http.StatusServiceUnavailable, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mem := scimtest.NewMemory(map[string]string{"acme": tokenAcme})
			var got scim.RequestInfo
			h := scim.NewHandler(getFails{mem, tt.err, tt.panics}, mem, scim.Options{
				ValidTenant: func(string) bool { return true },
				Observe:     func(_ context.Context, info *scim.RequestInfo) { got = *info },
			})
			req := httptest.NewRequest("GET", "/scim/v2/acme/Users/x", nil)
			req.Header.Set("Authorization", "Bearer "+tokenAcme)
			h.ServeHTTP(httptest.NewRecorder(), req)
			if got.Status != tt.status || got.FailureLogged != tt.logged {
				t.Errorf("status %d, FailureLogged %v; want %d, %v", got.Status, got.FailureLogged, tt.status, tt.logged)
			}
		})
	}
}
