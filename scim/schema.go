// SPDX-License-Identifier: Apache-2.0

package scim

import "strings"

// Schema URNs this service knows.
const (
	UserSchema           = "urn:ietf:params:scim:schemas:core:2.0:User"
	GroupSchema          = "urn:ietf:params:scim:schemas:core:2.0:Group"
	EnterpriseUserSchema = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	ListResponseSchema   = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	PatchOpSchema        = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	BulkRequestSchema    = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
	BulkResponseSchema   = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
	SearchRequestSchema  = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
	SPConfigSchema       = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	ResourceTypeSchema   = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
	SchemaSchema         = "urn:ietf:params:scim:schemas:core:2.0:Schema"
)

// Type is an attribute's data type (RFC 7643 §2.3).
type Type string

// Attribute data types.
const (
	String    Type = "string"
	Boolean   Type = "boolean"
	Decimal   Type = "decimal"
	Integer   Type = "integer"
	DateTime  Type = "dateTime"
	Reference Type = "reference"
	Complex   Type = "complex"
	Binary    Type = "binary"
)

// Mutability says whether and how an attribute can be written (RFC 7643 §7).
type Mutability string

// Mutability values.
const (
	ReadWrite Mutability = "readWrite"
	ReadOnly  Mutability = "readOnly"
	Immutable Mutability = "immutable"
	WriteOnly Mutability = "writeOnly"
)

// Returned says when an attribute appears in responses (RFC 7643 §7).
type Returned string

// Returned values.
const (
	ReturnedDefault Returned = "default"
	ReturnedAlways  Returned = "always"
	ReturnedNever   Returned = "never"
	ReturnedRequest Returned = "request"
)

// Attribute describes one attribute of a schema (RFC 7643 §7).
type Attribute struct {
	Name            string
	Type            Type
	MultiValued     bool
	Description     string
	Required        bool
	CaseExact       bool
	Mutability      Mutability
	Returned        Returned
	Uniqueness      string
	CanonicalValues []string
	ReferenceTypes  []string
	SubAttributes   []*Attribute

	subs map[string]*Attribute // lower-case name → sub-attribute
}

// Sub returns the sub-attribute called name, ignoring case, or nil.
func (a *Attribute) Sub(name string) *Attribute {
	if a == nil {
		return nil
	}
	sub, _ := lookupLower(a.subs, name)
	return sub
}

// Schema is a SCIM schema: a URN and the attributes it defines.
type Schema struct {
	ID          string
	Name        string
	Description string
	Attributes  []*Attribute

	attrs map[string]*Attribute // lower-case name → attribute
}

// Attribute returns the attribute called name, ignoring case, or nil.
func (s *Schema) Attribute(name string) *Attribute {
	if s == nil {
		return nil
	}
	a, _ := lookupLower(s.attrs, name)
	return a
}

// Extension is a schema extension a resource type allows.
type Extension struct {
	Schema   *Schema
	Required bool
}

// ResourceType is a kind of resource this service serves (RFC 7643 §6).
type ResourceType struct {
	ID          string
	Name        string
	Endpoint    string
	Description string
	Schema      *Schema
	Extensions  []Extension
}

// Extension returns the known extension schema whose URN is urn, ignoring case, or nil.
func (rt *ResourceType) Extension(urn string) *Schema {
	for _, e := range rt.Extensions {
		if strings.EqualFold(e.Schema.ID, urn) {
			return e.Schema
		}
	}
	return nil
}

// newSchema indexes a schema's attributes by lower-case name.
func newSchema(id, name, desc string, attrs ...*Attribute) *Schema {
	s := &Schema{ID: id, Name: name, Description: desc, Attributes: attrs}
	s.attrs = indexAttributes(attrs)
	return s
}

func indexAttributes(attrs []*Attribute) map[string]*Attribute {
	m := make(map[string]*Attribute, len(attrs))
	for _, a := range attrs {
		m[strings.ToLower(a.Name)] = a
		if len(a.SubAttributes) > 0 {
			a.subs = indexAttributes(a.SubAttributes)
		}
	}
	return m
}

// attr builds a single-valued, read-write, case-insensitive attribute returned by default;
// the options below adjust it.
func attr(name string, t Type, desc string, opts ...func(*Attribute)) *Attribute {
	a := &Attribute{Name: name, Type: t, Description: desc, Mutability: ReadWrite, Returned: ReturnedDefault, Uniqueness: "none",
		// RFC 7643 §2.3.6 "A binary is case exact", §2.3.7 "A reference is
		// case exact" (§8.7.1's listing says otherwise of
		// x509Certificates.value, photos.value and profileUrl; erratum
		// 6001): two certificates or URLs differing in case are two values.
		CaseExact: t == Binary || t == Reference}
	for _, o := range opts {
		o(a)
	}
	return a
}

func multi(a *Attribute)     { a.MultiValued = true }
func required(a *Attribute)  { a.Required = true }
func caseExact(a *Attribute) { a.CaseExact = true }
func readOnly(a *Attribute)  { a.Mutability = ReadOnly }
func immutable(a *Attribute) { a.Mutability = Immutable }
func always(a *Attribute)    { a.Returned = ReturnedAlways }
func serverUnique(a *Attribute) {
	a.Uniqueness = "server"
}
func writeOnlyNever(a *Attribute) {
	a.Mutability = WriteOnly
	a.Returned = ReturnedNever
}
func subs(s ...*Attribute) func(*Attribute) {
	return func(a *Attribute) { a.SubAttributes = s }
}
func canonical(v ...string) func(*Attribute) {
	return func(a *Attribute) { a.CanonicalValues = v }
}
func refTypes(v ...string) func(*Attribute) {
	return func(a *Attribute) { a.ReferenceTypes = v }
}
func readOnlySubs(a *Attribute) {
	for _, s := range a.SubAttributes {
		s.Mutability = ReadOnly
	}
}

// multiValuedSubs are the sub-attributes RFC 7643 §2.4 gives every multi-valued
// complex attribute of the User schema.
func multiValuedSubs(valueType Type, valueDesc string, types ...string) func(*Attribute) {
	value := attr("value", valueType, valueDesc)
	if valueType == Reference {
		value.ReferenceTypes = []string{"external"}
	}
	return subs(
		value,
		attr("display", String, "A human-readable name, primarily used for display purposes."),
		attr("type", String, "A label indicating the attribute's function.", canonical(types...)),
		attr("primary", Boolean, "A Boolean value indicating the 'primary' or preferred attribute value for this attribute."),
	)
}

// Common attributes every resource carries (RFC 7643 §3.1). They belong to no schema
// and are resolved before the resource type's schemas.
var (
	idAttribute         = attr("id", String, "A unique identifier for a SCIM resource as defined by the service provider.", caseExact, readOnly, always, serverUnique)
	externalIDAttribute = attr("externalId", String, "A String that is an identifier for the resource as defined by the provisioning client.", caseExact)
	metaAttribute       = attr("meta", Complex, "A complex attribute containing resource metadata.", readOnly, subs(
		attr("resourceType", String, "The name of the resource type of the resource.", caseExact, readOnly),
		attr("created", DateTime, "The DateTime that the resource was added to the service provider.", readOnly),
		attr("lastModified", DateTime, "The most recent DateTime that the details of this resource were updated at the service provider.", readOnly),
		attr("location", Reference, "The URI of the resource being returned.", readOnly),
		attr("version", String, "The version of the resource being returned.", caseExact, readOnly),
	))
	commonAttributes = indexAttributes([]*Attribute{idAttribute, externalIDAttribute, metaAttribute})
)

// UserResourceType is the User resource type with the enterprise extension.
var UserResourceType = &ResourceType{
	ID:          "User",
	Name:        "User",
	Endpoint:    "/Users",
	Description: "User Account",
	Schema: newSchema(UserSchema, "User", "User Account",
		attr("userName", String, "Unique identifier for the User, typically used by the user to directly authenticate to the service provider.", required, serverUnique),
		attr("name", Complex, "The components of the user's real name.", subs(
			attr("formatted", String, "The full name, including all middle names, titles, and suffixes as appropriate, formatted for display."),
			attr("familyName", String, "The family name of the User, or last name in most Western languages."),
			attr("givenName", String, "The given name of the User, or first name in most Western languages."),
			attr("middleName", String, "The middle name(s) of the User."),
			attr("honorificPrefix", String, "The honorific prefix(es) of the User, or title in most Western languages."),
			attr("honorificSuffix", String, "The honorific suffix(es) of the User, or suffix in most Western languages."),
		)),
		attr("displayName", String, "The name of the User, suitable for display to end-users."),
		attr("nickName", String, "The casual way to address the user in real life."),
		attr("profileUrl", Reference, "A fully qualified URL pointing to a page representing the User's online profile.", refTypes("external")),
		attr("title", String, "The user's title, such as \"Vice President\"."),
		attr("userType", String, "Used to identify the relationship between the organization and the user."),
		attr("preferredLanguage", String, "Indicates the User's preferred written or spoken language."),
		attr("locale", String, "Used to indicate the User's default location for purposes of localizing items such as currency, date time format, or numerical representations."),
		attr("timezone", String, "The User's time zone in the 'Olson' time zone database format, e.g., 'America/Los_Angeles'."),
		attr("active", Boolean, "A Boolean value indicating the User's administrative status."),
		attr("password", String, "The User's cleartext password. scimrelay never stores or forwards it.", writeOnlyNever),
		attr("emails", Complex, "Email addresses for the user.", multi, multiValuedSubs(String, "Email addresses for the user.", "work", "home", "other")),
		attr("phoneNumbers", Complex, "Phone numbers for the User.", multi, multiValuedSubs(String, "Phone number of the User.", "work", "home", "mobile", "fax", "pager", "other")),
		attr("ims", Complex, "Instant messaging addresses for the User.", multi, multiValuedSubs(String, "Instant messaging address for the User.", "aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo")),
		attr("photos", Complex, "URLs of photos of the User.", multi, multiValuedSubs(Reference, "URL of a photo of the User.", "photo", "thumbnail")),
		attr("addresses", Complex, "A physical mailing address for this User.", multi, subs(
			attr("formatted", String, "The full mailing address, formatted for display or use with a mailing label."),
			attr("streetAddress", String, "The full street address component."),
			attr("locality", String, "The city or locality component."),
			attr("region", String, "The state or region component."),
			attr("postalCode", String, "The zip code or postal code component."),
			attr("country", String, "The country name component."),
			attr("type", String, "A label indicating the attribute's function.", canonical("work", "home", "other")),
			attr("primary", Boolean, "A Boolean value indicating the 'primary' or preferred attribute value for this attribute."),
		)),
		attr("groups", Complex, "A list of groups to which the user belongs.", multi, readOnly, subs(
			attr("value", String, "The identifier of the User's group.", caseExact),
			attr("$ref", Reference, "The URI of the corresponding 'Group' resource to which the user belongs.", refTypes("Group")),
			attr("display", String, "A human-readable name, primarily used for display purposes."),
			attr("type", String, "A label indicating the attribute's function.", canonical("direct", "indirect")),
		), readOnlySubs),
		attr("entitlements", Complex, "A list of entitlements for the User that represent a thing the User has.", multi, multiValuedSubs(String, "The value of an entitlement.")),
		attr("roles", Complex, "A list of roles for the User that collectively represent who the User is.", multi, multiValuedSubs(String, "The value of a role.")),
		attr("x509Certificates", Complex, "A list of certificates issued to the User.", multi, multiValuedSubs(Binary, "The value of an X.509 certificate.")),
	),
	Extensions: []Extension{{Schema: newSchema(EnterpriseUserSchema, "EnterpriseUser", "Enterprise User",
		attr("employeeNumber", String, "Numeric or alphanumeric identifier assigned to a person, typically based on order of hire or association with an organization."),
		attr("costCenter", String, "Identifies the name of a cost center."),
		attr("organization", String, "Identifies the name of an organization."),
		attr("division", String, "Identifies the name of a division."),
		attr("department", String, "Identifies the name of a department."),
		attr("manager", Complex, "The User's manager.", subs(
			attr("value", String, "The id of the SCIM resource representing the User's manager.", caseExact),
			attr("$ref", Reference, "The URI of the SCIM resource representing the User's manager.", refTypes("User")),
			attr("displayName", String, "The displayName of the User's manager.", readOnly),
		)),
	)}},
}

// GroupResourceType is the Group resource type.
var GroupResourceType = &ResourceType{
	ID:          "Group",
	Name:        "Group",
	Endpoint:    "/Groups",
	Description: "Group",
	Schema: newSchema(GroupSchema, "Group", "Group",
		attr("displayName", String, "A human-readable name for the Group. Unique within a tenant, as Microsoft Entra ID requires for group matching.", required, serverUnique),
		attr("members", Complex, "A list of members of the Group.", multi, subs(
			attr("value", String, "Identifier of the member of this Group.", caseExact, immutable),
			attr("$ref", Reference, "The URI corresponding to a SCIM resource that is a member of this Group.", immutable, refTypes("User", "Group")),
			attr("display", String, "A human-readable name, primarily used for display purposes.", immutable),
			attr("type", String, "A label indicating the type of resource, e.g., 'User' or 'Group'.", immutable, canonical("User", "Group")),
		)),
	),
}

// ResourceTypes lists the resource types this service serves, in discovery order.
var ResourceTypes = []*ResourceType{UserResourceType, GroupResourceType}
