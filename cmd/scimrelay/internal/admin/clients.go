// SPDX-License-Identifier: Apache-2.0

package admin

// clientRoutes serves the OAuth clients (scimrelay client ...): the same
// lifecycle as tokens, under /admin/v1/clients. A client's id is its
// client_id; its secret, in the create and rotate answers, is shown once.
func (h *Handler) clientRoutes(clients Credentials) {
	h.credentialRoutes("/admin/v1/clients", "OAuth client management", "client", clients)
}
