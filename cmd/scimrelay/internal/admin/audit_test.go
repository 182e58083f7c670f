// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// auditLines returns the "admin action" lines of a log.
func auditLines(log string) []string {
	var lines []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `msg="admin action"`) {
			lines = append(lines, l)
		}
	}
	return lines
}

// wantAuditLines checks that the log has one "admin action" line for each
// of want, in order, each holding its want, and no other.
func wantAuditLines(t *testing.T, log string, want ...string) {
	t.Helper()
	lines := auditLines(log)
	if len(lines) != len(want) {
		t.Fatalf("%d admin action lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d:\n%s\nwant it to hold\n%s", i, lines[i], w)
		}
	}
}

// TestAdminActionsAreAudited: issuing, rotating and revoking a token
// through the API each log one Info line "admin action" with the action,
// tenant, id and name, via api, the client's address and the request id,
// and never the secret.
func TestAdminActionsAreAudited(t *testing.T) {
	f := newFixture(t)
	var issued, rotated TokenResponse
	a := f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","name":"entra"}`).want(t, http.StatusCreated, &issued)
	issueID := a.header.Get("X-Request-Id")
	f.request("POST", "/admin/v1/tokens/rotate", `{"tenant":"acme","name":"entra-2","overlap":"1h"}`).want(t, http.StatusCreated, &rotated)
	a = f.request("DELETE", "/admin/v1/tokens/"+issued.Token.ID, "").want(t, http.StatusOK, nil)
	revokeID := a.header.Get("X-Request-Id")
	// Revoked again: said so, and no second action.
	var again RevokeResponse
	f.request("DELETE", "/admin/v1/tokens/"+issued.Token.ID, "").want(t, http.StatusOK, &again)
	if !again.AlreadyRevoked || again.ID != issued.Token.ID {
		t.Fatalf("revoking again: %+v", again)
	}
	f.request("DELETE", "/admin/v1/tokens/tok_nope", "").wantError(t, http.StatusNotFound, "no such token")

	// A refused revoke, and a repeated one, are no action.
	wantAuditLines(t, f.log.String(),
		`level=INFO msg="admin action" action=token.issue tenant=acme id=`+issued.Token.ID+` name=entra via=api client=127.0.0.1 request_id=`+issueID,
		`action=token.rotate tenant=acme id=`+rotated.Token.ID+` name=entra-2 expiring=[`+issued.Token.ID+`] overlap=1h0m0s via=api client=127.0.0.1`,
		`level=INFO msg="admin action" action=token.revoke tenant=acme id=`+issued.Token.ID+` name=entra via=api client=127.0.0.1 request_id=`+revokeID,
	)
	for _, secret := range []string{issued.Secret, rotated.Secret} {
		if strings.Contains(f.log.String(), secret) {
			t.Fatalf("the log holds a secret:\n%s", f.log.String())
		}
	}
}

// TestCallersDoNotChooseRequestIDs: an admin request's id is the relay's
// own whatever X-Request-Id its caller sent: the answer's X-Request-Id and
// its log lines' request_id. A refused request's sender could be anyone,
// so its id (here one that looks like the relay's, as a legitimate
// request's would) is in no log line; an accepted caller's is kept apart,
// as client_request_id on the audit line.
func TestCallersDoNotChooseRequestIDs(t *testing.T) {
	f := newFixture(t)
	relayID := regexp.MustCompile(`^[0-9a-f]{16}$`)
	const chosen = "5f0c9a2e41d7b388"
	refused := f.requestAs("guess-0123456789abcdef", "GET", "/admin/v1/tokens", "", "X-Request-Id", chosen).want(t, http.StatusUnauthorized, nil)
	id := refused.header.Get("X-Request-Id")
	if !relayID.MatchString(id) || id == chosen {
		t.Fatalf("the refused request's answer has X-Request-Id %q, want the relay's own", id)
	}
	if !strings.Contains(f.log.String(), `msg="admin token refused; more refusals are summed up once a minute" reason="wrong admin token" client=127.0.0.1 where="admin API" path=/admin/v1/tokens request_id=`+id+"\n") {
		t.Errorf("no refusal line with the relay's request id %s:\n%s", id, f.log.String())
	}
	if strings.Contains(f.log.String(), chosen) {
		t.Errorf("the log holds the id a refused request chose:\n%s", f.log.String())
	}

	var issued TokenResponse
	a := f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","name":"entra"}`, "X-Request-Id", "ops-4711").want(t, http.StatusCreated, &issued)
	if id = a.header.Get("X-Request-Id"); !relayID.MatchString(id) {
		t.Fatalf("the answer has X-Request-Id %q, want the relay's own", id)
	}
	wantAuditLines(t, f.log.String(),
		`action=token.issue tenant=acme id=`+issued.Token.ID+` name=entra via=api client=127.0.0.1 request_id=`+id+" client_request_id=ops-4711")
}
