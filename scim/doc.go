// SPDX-License-Identifier: Apache-2.0

// Package scim is the SCIM 2.0 protocol (RFC 7643, RFC 7644) as Microsoft
// Entra ID and other identity providers speak it, over storage it does not
// know:
//
//   - the resource model (Resource, Member) and its JSON, and the User,
//     Group and enterprise extension schemas with the resource types built
//     on them;
//   - attribute paths, the filter grammar and its evaluation, the PATCH
//     engine with Entra's dialect (capitalised ops, "True", path-less
//     replaces, member removal by value), attribute projection, and the
//     changes between two states of a resource;
//   - the HTTP handlers for /scim/v2/<tenant>/... with bearer-token
//     authentication, discovery documents, list paging and the one writer
//     of SCIM errors.
//
// The handlers store and read through the Backend and Authenticator
// interfaces this package defines; the relay implements them on bbolt. The
// package imports nothing else of the project, so that the protocol is
// tested on its own; scim/scimtest holds the Backend conformance suite
// every implementation passes, an in-memory Backend, the Entra fixture's
// contract and the golden-file helpers.
package scim
