// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"net/http"
	"slices"
	"strings"
)

// Discovery documents (RFC 7643 §5-§7, RFC 7644 §4), built from the schema
// definitions so that they cannot drift from what the handlers accept.

type spConfig struct {
	Schemas          []string     `json:"schemas"`
	DocumentationURI string       `json:"documentationUri"`
	Patch            supported    `json:"patch"`
	Bulk             bulkConfig   `json:"bulk"`
	Filter           filterConfig `json:"filter"`
	ChangePassword   supported    `json:"changePassword"`
	Sort             supported    `json:"sort"`
	ETag             supported    `json:"etag"`
	AuthSchemes      []authScheme `json:"authenticationSchemes"`
	Meta             docMeta      `json:"meta"`
}

type supported struct {
	Supported bool `json:"supported"`
}

type bulkConfig struct {
	Supported      bool `json:"supported"`
	MaxOperations  int  `json:"maxOperations"`
	MaxPayloadSize int  `json:"maxPayloadSize"`
}

type filterConfig struct {
	Supported  bool `json:"supported"`
	MaxResults int  `json:"maxResults"`
}

type authScheme struct {
	Type             string `json:"type"`
	Name             string `json:"name"`
	Description      string `json:"description"`
	SpecURI          string `json:"specUri"`
	DocumentationURI string `json:"documentationUri,omitempty"`
	Primary          bool   `json:"primary"`
}

type docMeta struct {
	ResourceType string `json:"resourceType"`
	Location     string `json:"location"`
}

// DocumentationURI is where this service's documentation lives.
const DocumentationURI = "https://github.com/scimrelay/scimrelay#readme"

// serviceProviderConfig says truthfully what this service supports: every
// feature it advertises works, and every one it does not is refused
// (TestServiceProviderConfigIsTruthful holds it to that). tokenURL is the
// tenant's OAuth 2.0 token endpoint, "" when the oauth2 scheme is not offered.
func serviceProviderConfig(base string, o Options, tokenURL string) spConfig {
	schemes := []authScheme{{
		Type:        "oauthbearertoken",
		Name:        "OAuth Bearer Token",
		Description: "A secret token issued by scimrelay for one tenant (scimrelay token create), or an access token from the tenant's OAuth 2.0 token endpoint, sent as Authorization: Bearer <token>.",
		SpecURI:     "https://www.rfc-editor.org/info/rfc6750",
		Primary:     true,
	}}
	if tokenURL != "" {
		schemes = append(schemes, authScheme{
			Type: "oauth2",
			Name: "OAuth 2.0 Client Credentials Grant",
			Description: "Access tokens from the token endpoint " + tokenURL + " (grant_type=client_credentials; client_secret_basic or client_secret_post) " +
				"for a client issued by scimrelay client create, sent as Authorization: Bearer <access token>.",
			SpecURI:          "https://www.rfc-editor.org/info/rfc6749",
			DocumentationURI: DocumentationURI,
		})
	}
	if o.BasicAuth {
		schemes = append(schemes, authScheme{
			Type:             "httpbasic",
			Name:             "HTTP Basic",
			Description:      "An OAuth client's id as user name and its secret as password (RFC 7617).",
			SpecURI:          "https://www.rfc-editor.org/info/rfc7617",
			DocumentationURI: DocumentationURI,
		})
	}
	return spConfig{
		Schemas:          []string{SPConfigSchema},
		DocumentationURI: DocumentationURI,
		Patch:            supported{true},
		Bulk:             bulkConfig{Supported: true, MaxOperations: o.BulkMaxOperations, MaxPayloadSize: int(o.BulkMaxPayload)},
		Filter:           filterConfig{Supported: true, MaxResults: o.MaxResults},
		ChangePassword:   supported{false},
		Sort:             supported{true},
		ETag:             supported{true},
		AuthSchemes:      schemes,
		Meta:             docMeta{ResourceType: "ServiceProviderConfig", Location: base + "/ServiceProviderConfig"},
	}
}

type schemaDoc struct {
	Schemas     []string       `json:"schemas"`
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Attributes  []attributeDoc `json:"attributes"`
	Meta        docMeta        `json:"meta"`
}

type attributeDoc struct {
	Name            string         `json:"name"`
	Type            Type           `json:"type"`
	MultiValued     bool           `json:"multiValued"`
	Description     string         `json:"description"`
	Required        bool           `json:"required"`
	CaseExact       bool           `json:"caseExact"`
	Mutability      Mutability     `json:"mutability"`
	Returned        Returned       `json:"returned"`
	Uniqueness      string         `json:"uniqueness"`
	CanonicalValues []string       `json:"canonicalValues,omitempty"`
	ReferenceTypes  []string       `json:"referenceTypes,omitempty"`
	SubAttributes   []attributeDoc `json:"subAttributes,omitempty"`
}

func attributeDocs(attrs []*Attribute) []attributeDoc {
	out := make([]attributeDoc, len(attrs))
	for i, a := range attrs {
		out[i] = attributeDoc{
			Name: a.Name, Type: a.Type, MultiValued: a.MultiValued, Description: a.Description,
			Required: a.Required, CaseExact: a.CaseExact, Mutability: a.Mutability, Returned: a.Returned,
			Uniqueness: a.Uniqueness, CanonicalValues: a.CanonicalValues, ReferenceTypes: a.ReferenceTypes,
			SubAttributes: attributeDocs(a.SubAttributes),
		}
	}
	return out
}

// knownSchemas lists every schema the resource types use, in discovery order.
func knownSchemas() []*Schema {
	var out []*Schema
	for _, rt := range ResourceTypes {
		out = append(out, rt.Schema)
		for _, e := range rt.Extensions {
			out = append(out, e.Schema)
		}
	}
	return out
}

func schemaDocument(base string, s *Schema) schemaDoc {
	return schemaDoc{
		Schemas:     []string{SchemaSchema},
		ID:          s.ID,
		Name:        s.Name,
		Description: s.Description,
		Attributes:  attributeDocs(s.Attributes),
		Meta:        docMeta{ResourceType: "Schema", Location: base + "/Schemas/" + s.ID},
	}
}

type resourceTypeDoc struct {
	Schemas          []string       `json:"schemas"`
	ID               string         `json:"id"`
	Name             string         `json:"name"`
	Endpoint         string         `json:"endpoint"`
	Description      string         `json:"description"`
	Schema           string         `json:"schema"`
	SchemaExtensions []extensionDoc `json:"schemaExtensions,omitempty"`
	Meta             docMeta        `json:"meta"`
}

type extensionDoc struct {
	Schema   string `json:"schema"`
	Required bool   `json:"required"`
}

func resourceTypeDocument(base string, rt *ResourceType) resourceTypeDoc {
	d := resourceTypeDoc{
		Schemas:     []string{ResourceTypeSchema},
		ID:          rt.ID,
		Name:        rt.Name,
		Endpoint:    rt.Endpoint,
		Description: rt.Description,
		Schema:      rt.Schema.ID,
		Meta:        docMeta{ResourceType: "ResourceType", Location: base + "/ResourceTypes/" + rt.ID},
	}
	for _, e := range rt.Extensions {
		d.SchemaExtensions = append(d.SchemaExtensions, extensionDoc{Schema: e.Schema.ID, Required: e.Required})
	}
	return d
}

// The discovery endpoints' handlers.

// checkDiscoveryQuery refuses a filter on discovery endpoints (RFC 7644 §4),
// an empty one too: it is not read as none, as on /Users.
func checkDiscoveryQuery(r *http.Request) error {
	q, err := queryOf(r)
	if err != nil {
		return err
	}
	if q.Has("filter") {
		return Errorf(ErrForbidden, "discovery endpoints do not support filtering")
	}
	return nil
}

func (h *Handler) serviceProviderConfig(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkDiscoveryQuery(r); err != nil {
		return err
	}
	tokenURL := ""
	if h.o.TokenPath != "" {
		origin := strings.TrimSuffix(c.base, "/scim/v2/"+c.tenant)
		tokenURL = origin + strings.ReplaceAll(h.o.TokenPath, "{tenant}", c.tenant)
	}
	return writeJSON(w, http.StatusOK, serviceProviderConfig(c.base, h.o, tokenURL))
}

func (h *Handler) schemas(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkDiscoveryQuery(r); err != nil {
		return err
	}
	var docs []any
	for _, s := range knownSchemas() {
		docs = append(docs, h.tenantSchema(c, s))
	}
	return writeJSON(w, http.StatusOK, listResponse(docs))
}

// TenantRules is what a Backend implements whose tenants hold their users
// to rules of their own (the relay's tenants[].unique and
// tenants[].required); the handler asks it for the User schema a tenant
// advertises, so that the schema says what the tenant refuses.
type TenantRules interface {
	// UniqueByEmail reports whether tenant's users are unique by work
	// email instead of userName: userName is then not unique, and a User
	// needs an email.
	UniqueByEmail(tenant string) bool
	// RequiredPaths returns the attributes tenant requires of a User, as
	// UserResourceType.ParsePath resolved them.
	RequiredPaths(tenant string) []AttrPath
}

// tenantSchema is s as c's tenant has it (TenantRules): in a tenant whose
// users are unique by work email, userName is not unique, and the User
// schema says so rather than what RFC 7643 asks of userName; an attribute
// the tenant requires is required (RFC 7643 §7), and so is the complex
// attribute a required sub-attribute belongs to.
func (h *Handler) tenantSchema(c *call, s *Schema) schemaDoc {
	doc := schemaDocument(c.base, s)
	rules, ok := h.backend.(TenantRules)
	if !ok {
		return doc
	}
	required := rules.RequiredPaths(c.tenant)
	if rules.UniqueByEmail(c.tenant) && s == UserResourceType.Schema {
		for i := range doc.Attributes {
			if doc.Attributes[i].Name == "userName" {
				doc.Attributes[i].Uniqueness = "none"
			}
		}
		required = append(slices.Clip(required), AttrPath{Name: "emails"})
	}
	for _, p := range required {
		// Paths are of the User resource type, in canonical case.
		inSchema := p.URN == s.ID || (p.URN == "" && s == UserResourceType.Schema)
		i := slices.IndexFunc(doc.Attributes, func(a attributeDoc) bool { return a.Name == p.Name })
		if !inSchema || i < 0 {
			continue // a common attribute (externalId), or of an extension not known
		}
		a := &doc.Attributes[i]
		a.Required = true
		if j := slices.IndexFunc(a.SubAttributes, func(sub attributeDoc) bool { return sub.Name == p.Sub }); j >= 0 {
			a.SubAttributes[j].Required = true
		}
	}
	return doc
}

// tenantResourceType is rt as c's tenant has it (TenantRules): an
// extension one of whose attributes the tenant requires is required, since
// a User without it is refused (RFC 7643 §6: "a resource of this type MUST
// include this schema extension").
func (h *Handler) tenantResourceType(c *call, rt *ResourceType) resourceTypeDoc {
	doc := resourceTypeDocument(c.base, rt)
	rules, ok := h.backend.(TenantRules)
	if !ok || rt != UserResourceType {
		return doc
	}
	for _, p := range rules.RequiredPaths(c.tenant) {
		for i := range doc.SchemaExtensions {
			if p.URN != "" && strings.EqualFold(p.URN, doc.SchemaExtensions[i].Schema) {
				doc.SchemaExtensions[i].Required = true
			}
		}
	}
	return doc
}

func (h *Handler) schema(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkDiscoveryQuery(r); err != nil {
		return err
	}
	id := c.id
	for _, s := range knownSchemas() {
		if strings.EqualFold(s.ID, id) {
			return writeJSON(w, http.StatusOK, h.tenantSchema(c, s))
		}
	}
	return Errorf(ErrNotFound, "no schema %q", Truncate(id, 128))
}

func (h *Handler) resourceTypes(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkDiscoveryQuery(r); err != nil {
		return err
	}
	var docs []any
	for _, rt := range ResourceTypes {
		docs = append(docs, h.tenantResourceType(c, rt))
	}
	return writeJSON(w, http.StatusOK, listResponse(docs))
}

func (h *Handler) resourceType(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkDiscoveryQuery(r); err != nil {
		return err
	}
	id := c.id
	for _, rt := range ResourceTypes {
		if strings.EqualFold(rt.ID, id) {
			return writeJSON(w, http.StatusOK, h.tenantResourceType(c, rt))
		}
	}
	return Errorf(ErrNotFound, "no resource type %q", Truncate(id, 128))
}

type listResponseDoc struct {
	Schemas      []string `json:"schemas"`
	TotalResults int      `json:"totalResults"`
	StartIndex   int      `json:"startIndex"`
	ItemsPerPage int      `json:"itemsPerPage"`
	Resources    []any    `json:"Resources"`
}

func listResponse(docs []any) listResponseDoc {
	if docs == nil {
		docs = []any{}
	}
	return listResponseDoc{Schemas: []string{ListResponseSchema}, TotalResults: len(docs), StartIndex: 1, ItemsPerPage: len(docs), Resources: docs}
}
