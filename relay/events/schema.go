// SPDX-License-Identifier: Apache-2.0

package events

import (
	"embed"
	"io/fs"
)

// The event contract as documents: a JSON Schema (2020-12) for each event
// type's data (<action>.json, sharing common.json), one for the
// structured-mode envelope (event.json), and an AsyncAPI 3.0 description of
// the NATS subjects, headers and webhook deliveries (asyncapi.yaml). They
// are the one copy: the admin API serves them and docs/events/ holds a
// copy a test keeps identical.
//
//go:embed schema/*.json schema/asyncapi.yaml
var schemaFiles embed.FS

// SchemaBase is the base of the schemas' $id; a schema's $id is SchemaBase
// followed by its file name.
const SchemaBase = "https://github.com/scimrelay/scimrelay/relay/events/schema/"

// Schemas returns the contract's documents by file name.
func Schemas() fs.FS {
	sub, err := fs.Sub(schemaFiles, "schema")
	if err != nil {
		panic(err) // the embedded directory is fixed at build time
	}
	return sub
}

// DataSchema returns the file name of the JSON Schema of a's data, e.g.
// "user.created.json".
func DataSchema(a Action) string { return string(a) + ".json" }
