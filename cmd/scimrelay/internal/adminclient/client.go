// SPDX-License-Identifier: Apache-2.0

// Package adminclient is the admin API's client. The CLI's commands and the
// web console both act through it, so that every action (issue a token,
// redrive a dead letter, replay a sink) has one code path: the admin API's
// route, its checks and its one error adapter. The CLI reaches the API over
// HTTP on admin_listen; the console, in the same process, through
// HandlerTransport.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client calls the admin API with the admin token.
type Client struct {
	// BaseURL is where the API is, e.g. http://127.0.0.1:8081.
	BaseURL string
	// Token is the admin token, sent as a bearer token.
	Token string
	// HTTP sends the requests; nil is http.DefaultClient.
	HTTP *http.Client
	// Timeout bounds each request but a stream's (Tail); 0 waits as long
	// as the context lets it.
	Timeout time.Duration
	// RequestID, when set, is sent as X-Request-Id: the relay's log lines
	// about the request carry it as client_request_id, beside the
	// relay's own request_id, so that they can be matched with the
	// caller's.
	RequestID string
}

// Error is the admin API's answer to a request it refused or failed: its
// status and the message of its error body.
type Error struct {
	Status    int
	Message   string
	RequestID string // on a 500: where the relay's log has the details
	JobID     string // on a 409: the job already running
	// Problems lists what a refused relay.yaml got wrong (422 on reload).
	Problems []string
}

func (e *Error) Error() string {
	if e.Status == http.StatusUnauthorized {
		// The commonest cause after the first run: admin.token changed in
		// relay.yaml (or its variable), which the running relay takes only
		// when it starts again.
		return "the relay refused the admin token: " + e.Message +
			" (the relay uses the admin token it started with: after a change of admin.token, restart it)"
	}
	return e.Message
}

// UnreachableError means no answer came from the admin API.
type UnreachableError struct {
	BaseURL string
	Err     error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the relay's admin API at %s: %v (is scimrelay serve running with this admin_listen?)", e.BaseURL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Do sends a request with in as its JSON body (when not nil) and decodes
// the JSON answer into out (when not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	res, err := c.Send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("reading the relay's answer to %s %s: %w", method, path, err)
	}
	return nil
}

// bounded returns ctx bounded by Timeout, for a request that is not a
// stream.
func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.Timeout > 0 {
		return context.WithTimeout(ctx, c.Timeout)
	}
	return ctx, func() {}
}

// Send performs a request and returns the answer for its caller to read
// (a stream, a backup); an answer of 300 or more is returned as an *Error,
// no answer as an *UnreachableError.
func (c *Client) Send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	return c.send(ctx, method, path, body, 0)
}

// send is Send that also returns an answer of status also (0: none) for
// its caller to read.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, also int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.RequestID != "" {
		req.Header.Set("X-Request-Id", c.RequestID)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, &UnreachableError{BaseURL: c.BaseURL, Err: err}
	}
	if res.StatusCode >= 300 && res.StatusCode != also {
		defer res.Body.Close()
		return nil, readError(res)
	}
	return res, nil
}

// readError turns an error answer into an *Error.
func readError(res *http.Response) error {
	var body struct {
		Error     string   `json:"error"`
		RequestID string   `json:"request_id"`
		JobID     string   `json:"job_id"`
		Problems  []string `json:"problems"`
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if json.Unmarshal(b, &body) != nil || body.Error == "" {
		body.Error = strings.TrimSpace(string(b))
	}
	if body.Error == "" {
		body.Error = res.Status
	}
	return &Error{Status: res.StatusCode, Message: body.Error, RequestID: body.RequestID, JobID: body.JobID, Problems: body.Problems}
}
