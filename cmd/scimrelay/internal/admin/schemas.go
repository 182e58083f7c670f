// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/scimrelay/scimrelay/relay/events"
)

// SchemaRoutes serves the event contract (relay/events/schema): the JSON
// Schemas of each event type's data and of the envelope, and the AsyncAPI
// document.
//
//	GET /admin/v1/schemas                    the file names
//	GET /admin/v1/schemas/user.created.json  one file
func SchemaRoutes() map[string]http.Handler {
	files := events.Schemas()
	return map[string]http.Handler{
		"GET /admin/v1/schemas": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			names, err := fs.Glob(files, "*")
			if err != nil {
				WriteError(w, http.StatusInternalServerError, err)
				return
			}
			WriteJSON(w, http.StatusOK, names)
		}),
		"GET /admin/v1/schemas/{name}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			b, err := fs.ReadFile(files, name)
			if err != nil || strings.Contains(name, "/") {
				WriteError(w, http.StatusNotFound, Errorf(http.StatusNotFound, "no schema %q; GET /admin/v1/schemas lists them", name))
				return
			}
			ct := "application/schema+json"
			if path.Ext(name) == ".yaml" {
				ct = "application/yaml"
			}
			w.Header().Set("Content-Type", ct)
			_, _ = w.Write(b)
		}),
	}
}
