// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrorSchema is the schema URN of SCIM error responses (RFC 7644 §3.12).
const ErrorSchema = "urn:ietf:params:scim:api:messages:2.0:Error"

// Error is a SCIM error: an HTTP status, an optional scimType and a detail
// for the person reading Entra's provisioning log. Handlers return errors;
// WriteError turns them into the RFC 7644 §3.12 JSON body.
//
// The sentinels below carry a status and scimType but no detail; errors.Is
// matches an *Error against a sentinel by status and scimType, so code
// deep in a backend can say Errorf(ErrUniqueness, "userName %q is taken", n)
// and the boundary can still ask errors.Is(err, ErrUniqueness).
type Error struct {
	Status int
	Type   string // scimType; empty when the status needs none
	Detail string
}

// Sentinel errors, one per status and scimType this service answers with.
var (
	ErrInvalidFilter      = &Error{Status: 400, Type: "invalidFilter"}
	ErrTooMany            = &Error{Status: 400, Type: "tooMany"}
	ErrMutability         = &Error{Status: 400, Type: "mutability"}
	ErrInvalidSyntax      = &Error{Status: 400, Type: "invalidSyntax"}
	ErrInvalidPath        = &Error{Status: 400, Type: "invalidPath"}
	ErrNoTarget           = &Error{Status: 400, Type: "noTarget"}
	ErrInvalidValue       = &Error{Status: 400, Type: "invalidValue"}
	ErrInvalidVersion     = &Error{Status: 400, Type: "invalidVers"}
	ErrSensitive          = &Error{Status: 403, Type: "sensitive"}
	ErrUnauthorized       = &Error{Status: 401}
	ErrForbidden          = &Error{Status: 403}
	ErrNotFound           = &Error{Status: 404}
	ErrMethodNotAllowed   = &Error{Status: 405}
	ErrUniqueness         = &Error{Status: 409, Type: "uniqueness"}
	ErrConflict           = &Error{Status: 409}
	ErrPreconditionFailed = &Error{Status: 412}
	ErrPayloadTooLarge    = &Error{Status: 413}
	ErrUnsupportedMedia   = &Error{Status: 415}
	ErrTooManyRequests    = &Error{Status: 429}
	ErrInternal           = &Error{Status: 500}
	ErrNotImplemented     = &Error{Status: 501}
	ErrUnavailable        = &Error{Status: 503}
	// ErrInsufficientStorage is RFC 7644 §3.12's 507: the service provider
	// has no room to store the change.
	ErrInsufficientStorage = &Error{Status: 507}
	// ErrClientClosedRequest is what a request whose client went away
	// before its answer is recorded with (499, nginx's "client closed
	// request"): nobody reads the answer, and it is not the relay's failure.
	ErrClientClosedRequest = &Error{Status: 499}
)

// ErrChanged is a Backend's answer to a read that names the version of the
// resource it goes with (Members) when the resource has changed since, or
// is gone. It is not a SCIM error: the handler reads the resource again,
// and only after several changes in a row answers 503 (see respond).
var ErrChanged = errors.New("changed since it was read")

// Errorf returns an error of kind's status and scimType with a formatted detail.
func Errorf(kind *Error, format string, args ...any) *Error {
	return &Error{Status: kind.Status, Type: kind.Type, Detail: fmt.Sprintf(format, args...)}
}

// Error returns the detail, or the status text when there is none.
func (e *Error) Error() string {
	if e.Detail != "" {
		return e.Detail
	}
	if e.Type != "" {
		return strconv.Itoa(e.Status) + " " + e.Type
	}
	return strconv.Itoa(e.Status)
}

// Is reports whether target is an *Error of the same status and scimType.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status && t.Type == e.Type
}

// errorBody is the wire form of Error: status is a JSON string (RFC 7644 §3.12).
type errorBody struct {
	Schemas []string `json:"schemas"`
	Status  string   `json:"status"`
	Type    string   `json:"scimType,omitempty"`
	Detail  string   `json:"detail,omitempty"`
}

func (e *Error) body() errorBody {
	return errorBody{
		Schemas: []string{ErrorSchema},
		Status:  strconv.Itoa(e.Status),
		Type:    e.Type,
		Detail:  e.Detail,
	}
}
