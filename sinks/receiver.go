// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// NewReceiver returns a webhook endpoint that checks each delivery the way
// a receiver should: the Standard Webhooks signature with the official
// library, then the CloudEvent, in binary or structured mode, or the
// events of a batch (application/cloudevents-batch+json) in their order.
// It hands good events to handle and answers 204; a bad signature gets
// 401, a bad event 400 (a batch with one bad event is refused whole), a
// body over maxReceived 413 (not a signature failure on the part read). It
// is what `scimrelay receive` serves, for trying a sink out.
func NewReceiver(secret string, handle func(event.Event)) (http.Handler, error) {
	wh, err := ParseSecret(secret)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "deliveries are POSTed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReceived))
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, fmt.Sprintf("the body is over %d bytes, more than this receiver takes", maxReceived), http.StatusRequestEntityTooLarge)
			return
		}
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := wh.Verify(body, r.Header); err != nil {
			http.Error(w, "signature: "+err.Error(), http.StatusUnauthorized)
			return
		}
		es, err := ReadDelivery(r.Header, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, e := range es {
			handle(e)
		}
		w.WriteHeader(http.StatusNoContent)
	}), nil
}

// maxReceived is the largest delivery NewReceiver reads: a batch's largest
// max_bytes, and more than a structured body of the largest event (8 MiB,
// the embedded NATS server's) with every character written as \u0026 and
// the like, up to 6 bytes for one. It was 8 MiB: a structured delivery of a
// 1.5 MiB event of '&' was refused 413, and dead-lettered.
const maxReceived = maxBatchBytes

// IsBatch reports whether a webhook request's Content-Type is the
// CloudEvents batched content mode: its body is an array of events.
func IsBatch(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == batchMediaType
}

// ReadDelivery reads the events of one webhook request whose body was
// read: one in binary or structured mode, or the array of a batch, in
// order. Each event is valid. The signature is the caller's to check
// first.
func ReadDelivery(h http.Header, body []byte) ([]event.Event, error) {
	if IsBatch(h) {
		var es []event.Event
		if err := json.Unmarshal(body, &es); err != nil {
			return nil, fmt.Errorf("not a CloudEvents batch: %w", err)
		}
		for i := range es {
			if err := es[i].Validate(); err != nil {
				return nil, fmt.Errorf("event %d of the batch: %w", i, err)
			}
		}
		return es, nil
	}
	// A ce- header's value is percent-encoded (the HTTP binding, 3.1.3.2),
	// which sdk-go does not decode. A sequence that is not an escape (a
	// sender that did not encode) is read as it is.
	decoded := h.Clone()
	for name, vs := range decoded {
		if isCEHeader(name) {
			for i, v := range vs {
				if u, err := url.PathUnescape(v); err == nil {
					vs[i] = u
				}
			}
		}
	}
	req := &http.Request{Header: decoded, Body: io.NopCloser(bytes.NewReader(body))}
	e, err := binding.ToEvent(context.Background(), cehttp.NewMessageFromHttpRequest(req))
	if err != nil {
		return nil, fmt.Errorf("not a CloudEvent: %w", err)
	}
	if err := e.Validate(); err != nil { // ToEvent does not check
		return nil, fmt.Errorf("not a valid CloudEvent: %w", err)
	}
	return []event.Event{*e}, nil
}
