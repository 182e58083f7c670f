// SPDX-License-Identifier: Apache-2.0

package console

import (
	"net/http"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
)

// GET /ui/keys: the relay's keys, as scimrelay keys list shows them (never
// a secret). Rotating one is left to the command line, where an operator
// rotates after a leak and reads the rotation's answer.
func (c *Console) keysPage(w http.ResponseWriter, r *http.Request, s *session) error {
	info, err := c.api(s).Keys(r.Context())
	if err != nil {
		return err
	}
	c.render(w, r, http.StatusOK, "keys", page{Title: "Keys", Nav: "keys", CSRF: s.csrf, Data: struct {
		Now  time.Time
		Keys admin.KeysInfo
	}{c.now(), info}})
	return nil
}
