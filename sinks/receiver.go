// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// NewReceiver returns a webhook endpoint that checks each delivery the way
// a receiver should: the Standard Webhooks signature with the official
// library (a second implementation agreeing with ours), then the
// CloudEvent, in binary or structured mode. It hands good events to handle
// and answers 204; a bad signature gets 401, a bad event 400. It is what
// `scimrelay receive` serves, for trying a sink out.
func NewReceiver(secret string, handle func(event.Event)) (http.Handler, error) {
	if _, err := newSigner(secret); err != nil { // the library is lenient about the format
		return nil, fmt.Errorf("secret: %w", err)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "deliveries are POSTed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := wh.Verify(body, r.Header); err != nil {
			http.Error(w, "signature: "+err.Error(), http.StatusUnauthorized)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		e, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
			return
		}
		handle(*e)
		w.WriteHeader(http.StatusNoContent)
	}), nil
}
