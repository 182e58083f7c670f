// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzReceiver feeds arbitrary deliveries to the receiver: it must answer
// each with a status and never panic.
func FuzzReceiver(f *testing.F) {
	_, binary := craftedEvent("e1", "user.created", "Users/u1", "1", "", false)
	_, structured := craftedEvent("e2", "group.member_added", "Groups/g1", "2", "u1", true)
	f.Add("application/json", "io.scimrelay.user.created", "Users/u1", "1", binary)
	f.Add("application/cloudevents+json", "", "", "", structured)
	f.Add("application/json", "io.scimrelay.group.member_added", "Groups/g1", "x", []byte(`{"member":7}`))
	f.Add("application/cloudevents-batch+json", "", "", "", []byte(`[`+string(structured)+`]`))
	f.Add("", "", "/", "-1", []byte{0xff, 0x00})
	r, err := newReceiver("")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, contentType, ceType, subject, seq string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		if ceType != "" {
			req.Header.Set("ce-specversion", "1.0")
			req.Header.Set("ce-id", "fuzz")
			req.Header.Set("ce-source", "/scim/v2/default")
			req.Header.Set("ce-type", ceType)
			req.Header.Set("ce-subject", subject)
			req.Header.Set("ce-subjectseq", seq)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != http.StatusNoContent && w.Code != http.StatusBadRequest {
			t.Fatalf("status %d", w.Code)
		}
	})
}

// FuzzResponseParsers checks the parsers of filter and create responses.
func FuzzResponseParsers(f *testing.F) {
	f.Add([]byte(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}`))
	f.Add([]byte(`{"totalResults":1,"Resources":[{"id":"abc"}]}`))
	f.Add([]byte(`{"id":"2819c223"}`))
	f.Add([]byte(`{"totalResults":"1","id":7}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		found := ""
		if err := expectEmptyList(body, &found); err == nil && found != "" {
			t.Fatalf("an empty list set found = %q", found)
		}
		found = ""
		if err := expectID(body, &found); (err == nil) != (found != "") {
			t.Fatalf("expectID err %v with id %q", err, found)
		}
	})
}
