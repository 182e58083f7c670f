// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/scimrelay/scimrelay/relay/events"
)

// The event contract (relay/events/schema): the JSON Schemas of each event
// type's data and of the envelope, and the AsyncAPI document.
//
//	GET /admin/v1/schemas                    the file names
//	GET /admin/v1/schemas/user.created.json  one file

func (h *Handler) listSchemas(w http.ResponseWriter, _ *http.Request) error {
	names, err := fs.Glob(events.Schemas(), "*")
	if err != nil {
		return fmt.Errorf("listing the event schemas: %w", err)
	}
	writeList(w, names)
	return nil
}

func (h *Handler) schema(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	b, err := fs.ReadFile(events.Schemas(), name)
	if err != nil || strings.Contains(name, "/") {
		return errorf(http.StatusNotFound, "no schema %q; GET /admin/v1/schemas lists them", name)
	}
	ct := "application/schema+json"
	if path.Ext(name) == ".yaml" {
		ct = "application/yaml"
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(b)
	return nil
}
