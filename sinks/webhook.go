// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http/httpproxy"
)

// WebhookOptions configures a webhook sink.
type WebhookOptions struct {
	Name string
	URL  string
	// Secret is the Standard Webhooks secret, "whsec_" + base64.
	Secret string
	// PreviousSecret, while a secret rotates, is the one being replaced:
	// deliveries carry a signature by each, so that a receiver verifying
	// with either accepts them. PreviousSecretExpires (RFC 3339, optional)
	// ends that overlap by itself.
	PreviousSecret        string
	PreviousSecretExpires string
	// Format is "binary" (ce-* headers, data as body; the default) or
	// "structured" (application/cloudevents+json).
	Format string
	// Batch sends events as application/cloudevents-batch+json arrays,
	// several per request; Format must then be left empty.
	Batch   bool
	Timeout time.Duration // per HTTP request, at most 5m; 0 is 10 s
	Headers map[string]string
	// AllowPrivate lets the sink reach loopback and private addresses.
	AllowPrivate bool
	// AllowPrivateProxy lets the sink use a proxy (HTTPS_PROXY,
	// HTTP_PROXY) on a loopback or private address; targets stay guarded.
	AllowPrivateProxy bool
	// MaxRetries is the number of quick retries inside one delivery
	// (default 2); the long schedule is the consumer's.
	MaxRetries int
	// MaxResponseBody caps how much of an answer is read (default 64 KiB).
	MaxResponseBody int64
	// UserAgent names the sender (default "scimrelay").
	UserAgent string

	// proxyEnv is the proxy configuration; nil reads the environment.
	proxyEnv *httpproxy.Config
	// lookup resolves targets checked before a proxy; nil is the system's.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// rootCAs, when set, replaces the system's (tests with a TLS receiver).
	rootCAs *x509.CertPool
}

// Webhook delivers events by HTTP POST, signed per Standard Webhooks.
type Webhook struct {
	o      WebhookOptions
	url    string
	signer *signer
	client *retryablehttp.Client
	// transport holds the connections kept to the receiver.
	transport *http.Transport
	log       *slog.Logger
}

var (
	_ Sink        = (*Webhook)(nil)
	_ batchSender = (*Webhook)(nil)
	_ idleCloser  = (*Webhook)(nil)
)

// In-request retries are quick: a receiver that needs longer gets the
// consumer's schedule instead.
const (
	retryWaitMin     = 100 * time.Millisecond
	retryWaitMax     = time.Second
	maxRetryAfterNow = 2 * time.Second
)

// reservedHeaders are set on every delivery and cannot be configured.
var reservedHeaders = []string{"content-type", "content-length", "content-encoding", "host", "user-agent", "webhook-", "ce-",
	// HTTP's own (hop-by-hop and framing): set, they break or change the request.
	"connection", "keep-alive", "proxy-", "te", "trailer", "transfer-encoding", "upgrade", "expect",
	// The trace context the relay sends when it traces.
	"traceparent", "tracestate"}

// NewWebhook checks the options and returns the sink. Each problem names
// the option as relay.yaml spells it ("url: ..."), all of them at once.
func NewWebhook(o WebhookOptions, log *slog.Logger) (*Webhook, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	switch {
	case o.Batch && o.Format != "":
		errs = append(errs, fmt.Errorf("format: batched deliveries are always application/cloudevents-batch+json; leave format out, got %q", o.Format))
	case o.Batch:
		o.Format = formatBatch
	case o.Format == "":
		o.Format = "binary"
	case o.Format != "binary" && o.Format != "structured":
		errs = append(errs, fmt.Errorf("format: must be binary or structured, got %q", o.Format))
	}
	switch {
	case o.Timeout == 0:
		o.Timeout = 10 * time.Second
	case o.Timeout < minTimeout || o.Timeout > maxTimeout:
		errs = append(errs, fmt.Errorf("timeout: must be 0 (10s) or between %s and %s, got %s", minTimeout, maxTimeout, o.Timeout))
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 2
	}
	if o.MaxResponseBody <= 0 {
		o.MaxResponseBody = defaultResponseBody
	}
	if o.UserAgent == "" {
		o.UserAgent = "scimrelay"
	}
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		errs = append(errs, fmt.Errorf("url: must be an absolute http(s) URL, got %q", RedactURL(o.URL)))
	} else if err := checkHost(u.Hostname()); err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	} else if p := u.Port(); p != "" && !validPort(p) {
		errs = append(errs, fmt.Errorf("url: port %s is not between 1 and 65535", p))
	} else if strings.Contains(o.URL, "#") {
		// A client never sends a fragment: a token put there reached no
		// receiver, and deliveries were refused with no word of why.
		errs = append(errs, errors.New("url: has a #fragment, which is never sent to the receiver; remove it (put a token in the path, the query or headers)"))
	} else if !o.AllowPrivate {
		if addr, err := netip.ParseAddr(u.Hostname()); err == nil && blocked(addr) {
			errs = append(errs, fmt.Errorf("url: %s is a loopback, private or link-local address; set allow_private: true to deliver there", u.Hostname()))
		}
	}
	s, err := newSigner(o.Secret, o.PreviousSecret, o.PreviousSecretExpires)
	errs = append(errs, leaves(err)...)
	seen := map[string]string{}
	for h, v := range o.Headers {
		switch {
		case !httpguts.ValidHeaderFieldName(h):
			// The field is headers: a name that is no header name would
			// not be a field relay.yaml's problems can find the line of.
			errs = append(errs, fmt.Errorf("headers: %q is not an HTTP header name (letters, digits and !#$%%&'*+-.^_`|~)", h))
			continue
		case !httpguts.ValidHeaderFieldValue(v):
			// The value is not quoted: it may be a secret.
			errs = append(errs, fmt.Errorf("headers.%s: its value holds a line break or another control character", h))
		case strings.TrimSpace(v) == "":
			// `X-Api-Key:` with nothing after it, or a secret's variable
			// that expanded to nothing: sent empty, and a receiver refused
			// the deliveries with no word of why.
			errs = append(errs, fmt.Errorf("headers.%s: has no value; give it one or leave the header out", h))
		case schemeAlone(h, v):
			// "Bearer ${CRM_API_KEY}" (the Helm chart's example) with the
			// variable empty: a scheme and no credential, sent as
			// `Authorization: Bearer`, refused by the receiver as the
			// empty header was.
			errs = append(errs, fmt.Errorf("headers.%s: has its scheme %q and no credential after it; did its variable expand to nothing?", h, strings.TrimSpace(v)))
		}
		if other, twice := seen[strings.ToLower(h)]; twice {
			errs = append(errs, fmt.Errorf("headers.%s: is headers.%s again (header names are case-insensitive); give it once", h, other))
		}
		seen[strings.ToLower(h)] = h
		// Webhook_Signature is webhook-signature to a receiver that reads
		// "_" as "-".
		lh := strings.ReplaceAll(strings.ToLower(h), "_", "-")
		for _, r := range reservedHeaders {
			if lh == r || strings.HasSuffix(r, "-") && strings.HasPrefix(lh, r) {
				errs = append(errs, fmt.Errorf("headers.%s: is set by scimrelay on every delivery and cannot be overridden", h))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if o.proxyEnv == nil {
		o.proxyEnv = httpproxy.FromEnvironment()
	}
	w := &Webhook{o: o, url: o.URL, signer: s, transport: newTransport(o), log: log}
	w.client = &retryablehttp.Client{
		HTTPClient: &http.Client{
			Transport:     keptAlive{w.transport},
			Timeout:       o.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		RetryWaitMin: retryWaitMin,
		RetryWaitMax: retryWaitMax,
		RetryMax:     max(o.MaxRetries, 0),
		CheckRetry:   checkRetry,
		Backoff:      backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		PrepareRetry: w.resign,
	}
	return w, nil
}

// validPort reports whether p, a URL's port, is one a connection can be
// made to (url.Parse takes any digits).
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// ClearText says why deliveries to rawURL, a sink's url, would cross a
// network unencrypted, for the operator to read (ClearTextHost). The
// events (names, email addresses) and the headers set for the sink would
// be readable on the way; the signature keeps them from being changed,
// not from being read.
func ClearText(rawURL string) string {
	host := ClearTextHost(rawURL)
	if host == "" {
		return ""
	}
	return fmt.Sprintf("its url is plain http to %s, which is not on this machine or a private network by its address or name, so the events (names, email addresses) and the headers set for it can be read on the way; use https, or leave it if the network in between is yours", host)
}

// ClearTextHost is the host of rawURL when it is plain http to a host
// that is neither on this machine nor, by its address or the form of its
// name, on a private network. "" when the URL is https, or its host is a
// loopback or private address, a name of one label (a Compose service),
// localhost, or a name under a suffix kept for private networks
// (.internal, .local, .lan, .home.arpa, a Kubernetes service's .svc, and
// .svc.cluster.local, which ends in .local).
func ClearTextHost(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return ""
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if addr, err := netip.ParseAddr(host); err == nil {
		if blocked(addr) {
			return ""
		}
	} else if !strings.Contains(host, ".") || host == "localhost" || slices.ContainsFunc(privateSuffixes, func(s string) bool { return strings.HasSuffix(host, s) }) {
		return ""
	}
	return u.Hostname()
}

// privateSuffixes are the name suffixes ClearText takes for a private
// network's.
var privateSuffixes = []string{".localhost", ".local", ".internal", ".lan", ".home.arpa", ".svc"}

// formatBatch is the format a batching sink reports.
const formatBatch = "batch"

// attempt is what the retry hook needs of the delivery under way.
type attempt struct {
	tries atomic.Int32
	body  []byte
	// dials and refused count the addresses the delivery dialled, and
	// those the guard refused (guardDial).
	dials, refused atomic.Int32
}

// refusedOnly reports whether err is the guard's refusal and every address
// the delivery dialled was refused: such a delivery is not tried again
// within the request (checkRetry), since the name's answer will not have
// changed a moment later; it waits for the schedule. A name resolving to
// a private address and to a public one that is down for a moment fails
// with the first address's error, which may be the refusal, and is
// retried as any connection error is.
func refusedOnly(ctx context.Context, err error) bool {
	var refused *refusedError
	if !errors.As(err, &refused) {
		return false
	}
	at, _ := ctx.Value(attemptKey{}).(*attempt)
	return at == nil || at.refused.Load() == at.dials.Load()
}

type attemptKey struct{}

// Deliver POSTs the event once, with quick retries for passing failures.
// A batching sink sends it as a batch of one, so that its receiver sees
// one format.
func (w *Webhook) Deliver(ctx context.Context, e *event.Event) Result {
	if w.o.Batch {
		part, err := w.part(e)
		if err != nil {
			return Result{Err: err, Permanent: true}
		}
		return w.sendBatch(ctx, []string{e.ID()}, [][]byte{part})
	}
	body, header, err := w.encode(ctx, e)
	if err != nil {
		return Result{Err: fmt.Errorf("encoding event %s: %w", e.ID(), err), Permanent: true}
	}
	res := w.post(ctx, e.ID(), body, header)
	res.Events = 1
	return res
}

// part encodes one event of a batch: the event in structured mode.
func (w *Webhook) part(e *event.Event) ([]byte, error) {
	var buf bytes.Buffer
	if err := event.WriteJson(e, &buf); err != nil {
		return nil, fmt.Errorf("encoding event %s: %w", e.ID(), err)
	}
	return buf.Bytes(), nil
}

// sendBatch POSTs encoded events as one JSON array, in the order given,
// signed once. Its webhook-id (batchID) is the same whenever the same
// events are sent together again.
func (w *Webhook) sendBatch(ctx context.Context, ids []string, parts [][]byte) Result {
	size := 2 + len(parts)
	for _, p := range parts {
		size += len(p)
	}
	body := make([]byte, 0, size)
	body = append(body, '[')
	for i, p := range parts {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, p...)
	}
	body = append(body, ']')
	header := http.Header{"Content-Type": {batchContentType}}
	res := w.post(ctx, batchID(ids), body, header)
	res.Events = len(ids)
	return res
}

// batchMediaType is the CloudEvents HTTP binding's batched content mode,
// batchContentType the Content-Type sent with it.
const (
	batchMediaType   = "application/cloudevents-batch+json"
	batchContentType = batchMediaType + "; charset=utf-8"
)

// batchID is a batch's webhook-id: "batch_" and the first 128 bits of the
// SHA-256 of its events' ids in order, in hex. The in-request retries of a
// batch resend it unchanged, with the same id; events sent again in
// another composition (after a retry was scheduled) make another batch,
// with another id. Each event's own id stays the key to deduplicate on.
func batchID(ids []string) string {
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte(id))
		h.Write([]byte{'\n'})
	}
	return "batch_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// post sends one request, with quick retries for passing failures.
func (w *Webhook) post(ctx context.Context, id string, body []byte, header http.Header) Result {
	start := time.Now()
	at := &attempt{body: body}
	at.tries.Store(1)
	ctx = context.WithValue(ctx, attemptKey{}, at)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, w.url, body)
	if err != nil {
		return Result{Err: err, Permanent: true, Latency: time.Since(start)}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	for k, v := range w.o.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("User-Agent", w.o.UserAgent)
	req.Header.Set("webhook-id", id)
	injectTrace(ctx, req.Header)
	if err := w.sign(req.Request, id, body); err != nil {
		return Result{Err: err, Permanent: true, Latency: time.Since(start)}
	}

	resp, err := w.client.Do(req)
	res := Result{Attempts: int(at.tries.Load())}
	if err != nil {
		if headersTooLarge(err) {
			err = errHeadersTooLarge
		}
		// Not permanent, even when the SSRF guard refused every address:
		// a name resolves anew at each try, and a receiver's DNS answering
		// a private address for a while (a split-horizon mistake) would
		// otherwise dead-letter every event at once, to be redriven behind
		// the later ones. Its error says to set allow_private or mend DNS.
		res.Err = fmt.Errorf("POST %s: %w%s", RedactURL(w.url), unwrapURLError(err), w.transportHint(ctx, err))
		res.Latency = time.Since(start)
		return res
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, w.o.MaxResponseBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, w.o.MaxResponseBody)) // drain a little for keep-alive
	res.Status = resp.StatusCode
	res.Latency = time.Since(start)
	// The status as Go names it, not the receiver's reason phrase, and at
	// most maxLocationInError bytes of a Location: both are the receiver's
	// text, and the error goes to the log, the attempts and dead letters.
	status := statusText(resp.StatusCode)
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return res
	case code >= 300 && code < 400:
		loc := truncate(RedactURL(resp.Header.Get("Location")), maxLocationInError)
		res.Err = fmt.Errorf("POST %s: %s: redirect to %q not followed", RedactURL(w.url), status, loc)
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		res.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
		res.Err = fmt.Errorf("POST %s: %s", RedactURL(w.url), status)
	case code == http.StatusRequestTimeout || code == http.StatusTooEarly || code >= 500:
		res.Err = fmt.Errorf("POST %s: %s", RedactURL(w.url), status)
	case refusesCredentials(code):
		res.Err = fmt.Errorf("POST %s: %s: the receiver refused the request's credentials; check that its secret is the sink's (secret, previous_secret) and the sink's headers", RedactURL(w.url), status)
	case code >= 400 && code < 500: // 410 and the other 4xx: the receiver will never take it
		res.Err = fmt.Errorf("POST %s: %s (permanent)", RedactURL(w.url), status)
		res.Permanent = true
	default:
		// No 2xx, and no 4xx either (a 101 from a proxy that took the POST
		// for an upgrade, a 0xx): not the receiver's word that it will
		// never take the event. Retried on the schedule, as README says of
		// everything but the 4xx.
		res.Err = fmt.Errorf("POST %s: %s (not a status a receiver answers a delivery with)", RedactURL(w.url), status)
	}
	w.log.Debug("delivery refused", "sink", w.o.Name, "webhook_id", id, "status", resp.StatusCode, "body", string(snippet))
	return res
}

// refusesCredentials reports whether a receiver's status says it refused
// who sent the request rather than the event: 401 (most often a signature
// made with another secret than the receiver's) or 403. That is the
// sink's configuration, the same for every event, which the operator
// fixes: such a failure is retried on the schedule, its resource parked
// and tried again as soon as the receiver takes a request (wake.go), so
// that nothing is dead-lettered before the schedule ends and no
// resource's events come out of order while the secrets disagree. It is
// not retried within the delivery: an answer about credentials does not
// change in a second.
func refusesCredentials(code int) bool {
	return code == http.StatusUnauthorized || code == http.StatusForbidden
}

// maxResponseHeader caps the status line and headers of an answer (Go's
// default is 10 MiB, which a hostile receiver could make every delivery
// read and hold).
const maxResponseHeader = 64 << 10

// minConnectTimeout is the least a sink's connection and its TLS handshake
// may each take. The sink's timeout bounds the whole request (the client's
// Timeout), so a longer one allows them as long: one of their own shorter
// than it failed a request the timeout allowed, with an error telling to
// raise the timeout, which could not help.
const minConnectTimeout = 10 * time.Second

// defaultResponseBody is how much of a receiver's answer is read unless
// WebhookOptions.MaxResponseBody says otherwise.
const defaultResponseBody = 64 << 10

// maxLocationInError caps how much of a redirect's Location a delivery
// error quotes.
const maxLocationInError = 256

// errHeadersTooLarge is an answer whose headers exceed maxResponseHeader.
// The delivery fails without quick retries (a receiver that answers so
// does it again a moment later), but not for good: it is retried on the
// schedule, since a proxy or load balancer in front of the receiver may be
// what answered, and may stop.
var errHeadersTooLarge = fmt.Errorf("the answer's headers exceed %d KiB; aborted", maxResponseHeader>>10)

// headersTooLarge reports whether err is the transport's refusal of an
// answer over MaxResponseHeaderBytes: HTTP/1's and HTTP/2's, which Go
// reports only as text.
func headersTooLarge(err error) bool {
	if errors.Is(err, errHeadersTooLarge) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "server response headers exceeded") ||
		strings.Contains(msg, "response header list larger than advertised limit")
}

// statusText is a status code and Go's name for it ("302 Found").
func statusText(code int) string {
	if text := http.StatusText(code); text != "" {
		return strconv.Itoa(code) + " " + text
	}
	return strconv.Itoa(code)
}

// encode renders the event with the CloudEvents HTTP binding: binary mode
// (ce-* headers, data as body) or structured mode.
func (w *Webhook) encode(ctx context.Context, e *event.Event) ([]byte, http.Header, error) {
	if w.o.Format == "structured" {
		ctx = binding.WithForceStructured(ctx)
	} else {
		ctx = binding.WithForceBinary(ctx)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(e), req); err != nil {
		return nil, nil, err
	}
	for name, vs := range req.Header {
		if isCEHeader(name) {
			for i, v := range vs {
				vs[i] = percentEncode(v)
			}
		}
	}
	var body []byte
	if req.Body != nil {
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, nil, err
		}
	}
	return body, req.Header, nil
}

// isCEHeader reports whether a header (its canonical name) carries a
// CloudEvents attribute in binary mode.
func isCEHeader(name string) bool { return strings.HasPrefix(name, "Ce-") }

// percentEncode encodes a ce- header's value as the CloudEvents HTTP
// binding asks (3.1.3.2, which sdk-go does not do): space, '"', '%' and
// every byte outside printable ASCII as %XX, the bytes of its UTF-8. A
// public_url with an escaped path or a non-ASCII host puts '%' in every
// event's source, and a W3C tracestate may hold spaces.
func percentEncode(v string) string {
	i := strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '"' || r == '%' })
	if i < 0 {
		return v
	}
	var b strings.Builder
	b.WriteString(v[:i])
	for ; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// sign sets webhook-timestamp and webhook-signature for this attempt.
func (w *Webhook) sign(req *http.Request, id string, body []byte) error {
	now := time.Now()
	sig, err := w.signer.sign(id, now, body)
	if err != nil {
		return err
	}
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	return nil
}

// resign signs a retry afresh: receivers refuse stale timestamps.
func (w *Webhook) resign(req *http.Request) error {
	at, ok := req.Context().Value(attemptKey{}).(*attempt)
	if !ok {
		return errors.New("retrying a request that is not a delivery")
	}
	at.tries.Add(1)
	return w.sign(req, req.Header.Get("webhook-id"), at.body)
}

// checkRetry retries inside one delivery on connection errors (but a
// refused dial, headers over the limit and a request that ran out of the
// sink's timeout), 408, 425, 5xx but 504, and 429/503 that ask for at most
// a short wait. A receiver too slow to answer within the timeout would be
// sent the same request twice more at once, each holding the resource's
// lane for another timeout (a 10 s timeout made one try take 30 s): it
// gets the schedule's first retry instead. So does a 504, a proxy's word
// that the receiver behind it did not answer in the proxy's time (often
// a minute).
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return !refusedOnly(ctx, err) && !headersTooLarge(err) && !timedOut(err), nil
	}
	retry := false
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		retry = retryAfter(resp.Header.Get("Retry-After"), time.Now()) <= maxRetryAfterNow
	case code == http.StatusRequestTimeout || code == http.StatusTooEarly || code >= 500 && code != http.StatusGatewayTimeout:
		retry = true
	}
	if retry && answerTimedOut(resp) {
		// The status came, the rest of the answer did not within the
		// sink's timeout: as for no answer at all, the schedule's next
		// try, not two more timeouts now.
		return false, nil
	}
	return retry, nil
}

// answerTimedOut reads the body of an answer to be retried, as far as the
// relay reads one, and reports whether the sink's timeout ran out before
// it ended. What it read is put back for post.
func answerTimedOut(resp *http.Response) bool {
	read, err := io.ReadAll(io.LimitReader(resp.Body, defaultResponseBody))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(read), resp.Body), resp.Body}
	return err != nil && timedOut(err)
}

// transportHint says what an operator can do about a request that got no
// answer, where the error alone does not: the sink's timeout ran out, or
// the receiver's certificate is not one the relay trusts. "" otherwise.
func (w *Webhook) transportHint(ctx context.Context, err error) string {
	var unknownCA x509.UnknownAuthorityError
	switch {
	case ctx.Err() != nil:
		return "" // the relay stopping or handing over, not the receiver
	case timedOut(err):
		return fmt.Sprintf(" (no answer within the sink's timeout, %s: the receiver should answer first and work after, or raise sinks[].timeout, at most 5m)", w.o.Timeout)
	case errors.As(err, &unknownCA):
		return " (the receiver's certificate is not signed by an authority this machine trusts: add its CA to the system's store, or point SSL_CERT_FILE or SSL_CERT_DIR at it, and restart the relay)"
	}
	return ""
}

// Why a request got no answer, in a word, for an attempt that has no
// status to say it (Attempt.ErrorClass): what `sinks list` and the
// console show beside the outcome. The error holds the detail.
const (
	classTimeout = "timeout"            // no answer within the sink's timeout, or no connection in time
	classRefused = "connection refused" // nothing listens at the address
	classClosed  = "connection closed"  // the receiver closed or reset the connection without an answer
	classDNS     = "dns"                // the name did not resolve
	classTLS     = "tls"                // the receiver's certificate is not trusted, or the handshake failed
	classBlocked = "blocked address"    // the SSRF guard: a private address without allow_private
	classAnswer  = "answer too large"   // the answer's headers exceed what the relay reads
	classOther   = "network"            // anything else between the relay and the receiver
)

// errorClass names why res got no status, "" when it got one (or did not
// fail).
func errorClass(res Result) string {
	err := res.Err
	if err == nil || res.Status != 0 {
		return ""
	}
	var (
		refused   *refusedError
		dnsErr    *net.DNSError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		alert     tls.AlertError
	)
	switch {
	case errors.As(err, &refused):
		return classBlocked
	case timedOut(err):
		return classTimeout
	case errors.As(err, &dnsErr):
		return classDNS
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &verify), errors.As(err, &record), errors.As(err, &alert), handshakeRefused(err):
		return classTLS
	case errors.Is(err, syscall.ECONNREFUSED):
		return classRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return classClosed
	case errors.Is(err, errHeadersTooLarge):
		return classAnswer
	}
	return classOther
}

// handshakeRefused reports whether the TLS handshake failed in a way
// the types above do not tell: an alert, the receiver's (it requires a
// client certificate, shares no protocol version or cipher suite with the
// relay) or the relay's, which crypto/tls returns as a *net.OpError
// around a type of its own, and its other refusals, plain errors; each
// says "tls: " first. Or Go's transport found plain HTTP where an https
// URL wants TLS, which it says in a text of its own.
func handshakeRefused(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.HasPrefix(e.Error(), "tls: ") {
			return true
		}
	}
	return strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// timedOut reports whether a request failed for want of an answer in time:
// the sink's timeout, or the dial's, the TLS handshake's or a name
// lookup's.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// backoff waits what Retry-After asks when it is short, else doubles.
func backoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if ra := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ra > 0 && ra <= maxRetryAfterNow {
			return ra
		}
	}
	return retryablehttp.DefaultBackoff(lo, hi, attempt, nil)
}

// retryAfter parses Retry-After: seconds or an HTTP date; 0 when absent or bad.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) && v[0] != '-':
		// delay-seconds is 1*DIGIT (RFC 9110 10.2.3), of any length:
		// past int64, still the longest wait asked for.
		return maxRetryAfter
	case err != nil:
	case secs <= 0:
		return 0
	case secs > int64(maxRetryAfter/time.Second):
		return maxRetryAfter // and no overflow multiplying it
	default:
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

// unwrapURLError drops url.Error's repetition of method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// CloseIdleConnections closes the connections kept to the receiver that
// no delivery is using.
func (w *Webhook) CloseIdleConnections() { w.transport.CloseIdleConnections() }

// keptAlive is a sink's transport without CloseIdleConnections, which
// retryablehttp calls on its client whenever a request fails: that dropped
// every kept connection of the sink, the healthy resources' too, and broke
// a delivery that had just taken one of them ("http: CloseIdleConnections
// called", a failed try of an event the receiver would have taken). Idle
// connections still close after the transport's IdleConnTimeout.
type keptAlive struct{ http.RoundTripper }

// newTransport is the HTTP transport of a sink: the SSRF guard on every
// dial (unless private targets are allowed), proxies from the environment
// under the guard's rules (ssrf.go), and connections kept for reuse.
func newTransport(o WebhookOptions) *http.Transport {
	d := newDialer(o.AllowPrivate, o.AllowPrivateProxy, o.Timeout, o.proxyEnv)
	if o.lookup != nil {
		d.lookup = o.lookup
	}
	t := &http.Transport{
		Proxy:                  d.proxy,
		DialContext:            d.dial,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    128,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    max(minConnectTimeout, o.Timeout),
		ResponseHeaderTimeout:  0, // the client's Timeout bounds the whole request
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxResponseHeader,
	}
	if o.rootCAs != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: o.rootCAs, MinVersion: tls.VersionTLS12}
	}
	return t
}

// schemeAlone reports whether v, the value of header h, is an
// Authorization of one word and the space that should have come before its
// credential: "Bearer ${CRM_API_KEY}", "Splunk ${HEC_TOKEN}" with the
// variable empty, whatever the scheme (a header's trailing space is never
// sent, RFC 9110 §5.5).
func schemeAlone(h, v string) bool {
	word := strings.TrimSpace(v)
	return strings.EqualFold(h, "Authorization") && word != "" && !strings.ContainsAny(word, " \t") &&
		strings.TrimRightFunc(v, unicode.IsSpace) != v
}
