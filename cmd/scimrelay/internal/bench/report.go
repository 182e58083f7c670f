// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a Run measured. Its JSON form (MarshalJSON) is a stable
// interface for scripts:
//
//	{
//	  "config":     {"url", "users", "groups", "members_per_group", "concurrency",
//	                 "rate", "receiver", "baseline", "prefix", "drain_timeout_s"},
//	  "duration_s": wall time of the cycle (without the webhook drain),
//	  "operations": [{"name", "count", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms",
//	                  "errors": {"<status>": count}, "first_error",
//	                  "throttled": 429s waited out and sent again}],   // 8, in cycle order
//	  "total":      {same keys as an operation, name "total"},
//	  "events":     null without a receiver, else
//	                {"expected", "received", "missing", "duplicated", "out_of_order",
//	                 "signature_failures", "unexpected", "invalid", "signatures_verified",
//	                 "latency": {"p50_ms", "p95_ms", "p99_ms", "max_ms"}, "requests", "caught_up_s",
//	                 "by_type": [{"type", "expected", "received", "missing", "unexpected"}]},
//	  "baseline":   null without Baseline, else
//	                {"duration_s", "operations": [...], "total": {...}, "rps_ratio", "p99_ratio"}
//	}
//
// Operation names: filter-get-user, create-user, filter-get-group,
// create-group, patch-members, patch-user, deactivate-user, delete-user.
// An error status of 0 means no response (connection refused, reset,
// timeout). An answer with the expected status but an unusable body (not
// JSON, no id, a filter that found something) counts under its status.
// Latencies are exact nearest-rank percentiles over every request, failed
// ones included, in milliseconds.
type Report struct {
	Config Config
	// Duration is the cycle's wall time, test connection and drain excluded.
	Duration   time.Duration
	Operations []OpStats
	Total      OpStats
	// Events is nil without a receiver.
	Events *EventStats
	// Baseline is nil unless Options.Baseline.
	Baseline *Baseline
}

// Config is what the run was asked to do (never the token).
type Config struct {
	URL                            string
	Users, Groups, MembersPerGroup int
	Concurrency                    int
	Rate                           float64
	Receiver                       string
	Baseline                       bool
	Prefix                         string
	DrainTimeout                   time.Duration
}

// OpStats describes one operation (or the total of all).
type OpStats struct {
	Name  string
	Count int
	// RPS is Count over the span from the first request's start to the last
	// one's end (for the total: over the cycle's duration). Operations of one
	// phase run interleaved (a filter GET with its create; patches,
	// deactivations and deletes), so an operation's rate is its share of its
	// phase, not what the endpoint could do of it alone.
	RPS     float64
	Latency Latency
	// Errors counts failed requests by status (0 = no response).
	Errors map[int]int
	// FirstError describes the first failure, "" if none.
	FirstError string
	// Throttled counts the 429 answers waited out (Retry-After) and sent
	// again, as Entra does; a request that succeeded after them is not an
	// error, but its latency includes the wait.
	Throttled int
}

// ErrorCount returns the number of failed requests.
func (s OpStats) ErrorCount() int {
	n := 0
	for _, c := range s.Errors {
		n += c
	}
	return n
}

// Latency holds exact nearest-rank percentiles.
type Latency struct {
	P50, P95, P99, Max time.Duration
}

// EventStats compares the webhooks that arrived with the events the cycle
// should have caused: user.created per created user, group.created per
// group, group.member_added per member added, user.updated per attribute
// PATCH, user.deactivated per deactivation, and per deleted user a
// user.deleted plus a group.member_removed per membership.
type EventStats struct {
	// Expected counts the events the cycle caused, by the requests that
	// succeeded.
	Expected int
	// Received counts distinct deliveries (by webhook-id) that passed
	// signature verification and were CloudEvents.
	Received int
	// Missing counts expected events that never arrived.
	Missing int
	// Duplicated counts deliveries of a webhook-id that had arrived before.
	Duplicated int
	// OutOfOrder counts deliveries whose subjectseq was lower than one
	// already received for the same subject.
	OutOfOrder int
	// SignatureFailures counts deliveries whose Standard Webhooks signature
	// did not verify (answered 401, not counted as received).
	SignatureFailures int
	// Unexpected counts events that arrived but that the cycle did not cause
	// (another client's changes, or a request the bench counted as failed
	// that the server carried out).
	Unexpected int
	// Invalid counts deliveries that were not a CloudEvent POST.
	Invalid int
	// SignaturesVerified is false when no secret was given.
	SignaturesVerified bool
	// Latency runs from the SCIM response that caused an event to the
	// event's first delivery.
	Latency Latency
	// Requests counts the webhook requests that passed verification: a
	// batch (application/cloudevents-batch+json) is one, whatever it holds.
	Requests int
	// CaughtUp is how long after the cycle began the last expected event
	// arrived: the whole cycle, delivery included; 0 while any is missing.
	CaughtUp time.Duration
	ByType   []TypeStats
}

// TypeStats is EventStats for one event type.
type TypeStats struct {
	Type                                    string
	Expected, Received, Missing, Unexpected int
}

// Baseline is the same cycle against a minimal net/http JSON handler in the
// bench's process: the ceiling of the machine and the client.
type Baseline struct {
	Duration   time.Duration
	Operations []OpStats
	Total      OpStats
	// RPSRatio is the endpoint's total requests/s over the baseline's.
	RPSRatio float64
	// P99Ratio is the endpoint's total p99 over the baseline's.
	P99Ratio float64
}

func configOf(o Options) Config {
	c := Config{
		URL: o.URL, Users: o.Users, Groups: o.Groups, MembersPerGroup: o.MembersPerGroup,
		Concurrency: o.Concurrency, Rate: o.Rate, Receiver: o.Receiver, Baseline: o.Baseline,
		Prefix: o.Prefix, DrainTimeout: o.DrainTimeout,
	}
	if u, err := url.Parse(o.URL); err == nil && u.User != nil {
		u.User = nil // credentials in a URL are not for reports
		c.URL = u.String()
	}
	if c.Receiver == "" && o.ReceiverListener != nil {
		c.Receiver = o.ReceiverListener.Addr().String()
	}
	return c
}

func (r *Report) fill(c *cycle) {
	r.Duration = c.end.Sub(c.start)
	r.Operations, r.Total = c.rec.stats(r.Duration)
}

func (r *Report) setBaseline(c *cycle) {
	b := &Baseline{Duration: c.end.Sub(c.start)}
	b.Operations, b.Total = c.rec.stats(b.Duration)
	if b.Total.RPS > 0 {
		b.RPSRatio = r.Total.RPS / b.Total.RPS
	}
	if b.Total.Latency.P99 > 0 {
		b.P99Ratio = float64(r.Total.Latency.P99) / float64(b.Total.Latency.P99)
	}
	r.Baseline = b
}

// --- JSON

var _ json.Marshaler = (*Report)(nil)

type jsonReport struct {
	Config     jsonConfig    `json:"config"`
	DurationS  float64       `json:"duration_s"`
	Operations []jsonOp      `json:"operations"`
	Total      jsonOp        `json:"total"`
	Events     *jsonEvents   `json:"events"`
	Baseline   *jsonBaseline `json:"baseline"`
}

type jsonConfig struct {
	URL             string  `json:"url"`
	Users           int     `json:"users"`
	Groups          int     `json:"groups"`
	MembersPerGroup int     `json:"members_per_group"`
	Concurrency     int     `json:"concurrency"`
	Rate            float64 `json:"rate"`
	Receiver        string  `json:"receiver"`
	Baseline        bool    `json:"baseline"`
	Prefix          string  `json:"prefix"`
	DrainTimeoutS   float64 `json:"drain_timeout_s"`
}

type jsonLatency struct {
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

type jsonOp struct {
	Name  string  `json:"name"`
	Count int     `json:"count"`
	RPS   float64 `json:"rps"`
	jsonLatency
	Errors     map[string]int `json:"errors"`
	FirstError string         `json:"first_error"`
	Throttled  int            `json:"throttled"`
}

type jsonEvents struct {
	Expected           int         `json:"expected"`
	Received           int         `json:"received"`
	Missing            int         `json:"missing"`
	Duplicated         int         `json:"duplicated"`
	OutOfOrder         int         `json:"out_of_order"`
	SignatureFailures  int         `json:"signature_failures"`
	Unexpected         int         `json:"unexpected"`
	Invalid            int         `json:"invalid"`
	SignaturesVerified bool        `json:"signatures_verified"`
	Latency            jsonLatency `json:"latency"`
	Requests           int         `json:"requests"`
	CaughtUpS          float64     `json:"caught_up_s"`
	ByType             []jsonType  `json:"by_type"`
}

type jsonType struct {
	Type       string `json:"type"`
	Expected   int    `json:"expected"`
	Received   int    `json:"received"`
	Missing    int    `json:"missing"`
	Unexpected int    `json:"unexpected"`
}

type jsonBaseline struct {
	DurationS  float64  `json:"duration_s"`
	Operations []jsonOp `json:"operations"`
	Total      jsonOp   `json:"total"`
	RPSRatio   float64  `json:"rps_ratio"`
	P99Ratio   float64  `json:"p99_ratio"`
}

func configJSON(c Config) jsonConfig {
	return jsonConfig{
		URL: c.URL, Users: c.Users, Groups: c.Groups, MembersPerGroup: c.MembersPerGroup,
		Concurrency: c.Concurrency, Rate: c.Rate, Receiver: c.Receiver, Baseline: c.Baseline,
		Prefix: c.Prefix, DrainTimeoutS: c.DrainTimeout.Seconds(),
	}
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func latencyJSON(l Latency) jsonLatency {
	return jsonLatency{P50: ms(l.P50), P95: ms(l.P95), P99: ms(l.P99), Max: ms(l.Max)}
}

func opJSON(s OpStats) jsonOp {
	errs := make(map[string]int, len(s.Errors))
	for status, n := range s.Errors {
		errs[strconv.Itoa(status)] = n
	}
	return jsonOp{Name: s.Name, Count: s.Count, RPS: round3(s.RPS), jsonLatency: latencyJSON(s.Latency), Errors: errs, FirstError: s.FirstError, Throttled: s.Throttled}
}

func opsJSON(ops []OpStats) []jsonOp {
	out := make([]jsonOp, len(ops))
	for i, s := range ops {
		out[i] = opJSON(s)
	}
	return out
}

// MarshalJSON writes the report in its documented shape (see Report).
func (r *Report) MarshalJSON() ([]byte, error) {
	j := jsonReport{
		Config:     configJSON(r.Config),
		DurationS:  round3(r.Duration.Seconds()),
		Operations: opsJSON(r.Operations),
		Total:      opJSON(r.Total),
	}
	if e := r.Events; e != nil {
		je := &jsonEvents{
			Expected: e.Expected, Received: e.Received, Missing: e.Missing, Duplicated: e.Duplicated,
			OutOfOrder: e.OutOfOrder, SignatureFailures: e.SignatureFailures, Unexpected: e.Unexpected,
			Invalid: e.Invalid, SignaturesVerified: e.SignaturesVerified, Latency: latencyJSON(e.Latency),
			Requests: e.Requests, CaughtUpS: round3(e.CaughtUp.Seconds()), ByType: []jsonType{},
		}
		for _, t := range e.ByType {
			je.ByType = append(je.ByType, jsonType(t))
		}
		j.Events = je
	}
	if b := r.Baseline; b != nil {
		j.Baseline = &jsonBaseline{
			DurationS: round3(b.Duration.Seconds()), Operations: opsJSON(b.Operations), Total: opJSON(b.Total),
			RPSRatio: round3(b.RPSRatio), P99Ratio: round3(b.P99Ratio),
		}
	}
	return json.Marshal(j)
}

// --- table

// WriteTable writes the report as aligned text for people.
func (r *Report) WriteTable(w io.Writer) error {
	c := r.Config
	mode := "closed loop, concurrency " + strconv.Itoa(c.Concurrency)
	if c.Rate > 0 {
		mode = fmt.Sprintf("open loop at %g requests/s", c.Rate)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d users, %d groups × %d members; %s; prefix %s\n",
		c.URL, c.Users, c.Groups, c.MembersPerGroup, mode, c.Prefix)
	fmt.Fprintf(&b, "cycle took %s\n\n", r.Duration.Round(time.Millisecond))
	if err := writeOps(&b, r.Operations, r.Total); err != nil {
		return err
	}
	if e := r.Events; e != nil {
		verified := ""
		if !e.SignaturesVerified {
			verified = " (signatures not verified: no secret)"
		}
		fmt.Fprintf(&b, "\nwebhooks at %s%s\n", c.Receiver, verified)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "event\texpected\treceived\tmissing\tunexpected")
		for _, t := range e.ByType {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", t.Type, t.Expected, t.Received, t.Missing, t.Unexpected)
		}
		fmt.Fprintf(tw, "all\t%d\t%d\t%d\t%d\n", e.Expected, e.Received, e.Missing, e.Unexpected)
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(&b, "duplicated %d, out of order %d, signature failures %d, invalid %d\n",
			e.Duplicated, e.OutOfOrder, e.SignatureFailures, e.Invalid)
		fmt.Fprintf(&b, "response-to-delivery latency ms: p50 %s  p95 %s  p99 %s  max %s\n",
			msText(e.Latency.P50), msText(e.Latency.P95), msText(e.Latency.P99), msText(e.Latency.Max))
		fmt.Fprintf(&b, "%d requests", e.Requests)
		if e.Requests > 0 {
			fmt.Fprintf(&b, " (%.1f events each)", float64(e.Received)/float64(e.Requests))
		}
		if e.CaughtUp > 0 {
			fmt.Fprintf(&b, "; the last event arrived %s after the cycle began", e.CaughtUp.Round(time.Millisecond))
		}
		b.WriteString("\n")
	}
	if bl := r.Baseline; bl != nil {
		fmt.Fprintf(&b, "\nbaseline: the same cycle against a minimal net/http JSON handler in this process (took %s)\n\n",
			bl.Duration.Round(time.Millisecond))
		if err := writeOps(&b, bl.Operations, bl.Total); err != nil {
			return err
		}
		fmt.Fprintf(&b, "\nendpoint ÷ baseline: requests/s %.3f, p99 %.2f×\n", bl.RPSRatio, bl.P99Ratio)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeOps writes the operations and their total as a table, then each
// operation's first error and the 429s waited out.
func writeOps(w io.Writer, ops []OpStats, total OpStats) error {
	if err := writeOpRows(w, append(slices.Clone(ops), total)); err != nil {
		return err
	}
	writeFirstErrors(w, ops)
	writeThrottled(w, total.Throttled)
	return nil
}

// writeOpRows writes one table row per operation.
func writeOpRows(w io.Writer, rows []OpStats) error {
	// Numbers align right; names, padded to one width, read from the left.
	width := len("operation")
	for _, s := range rows {
		width = max(width, len(s.Name))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tcount\treq/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\terrors\t\n", width, "operation")
	for _, s := range rows {
		fmt.Fprintf(tw, "%-*s\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n", width, s.Name, s.Count, s.RPS,
			msText(s.Latency.P50), msText(s.Latency.P95), msText(s.Latency.P99), msText(s.Latency.Max), errorsText(s.Errors))
	}
	return tw.Flush()
}

// writeFirstErrors writes the first error of each operation that had one.
func writeFirstErrors(w io.Writer, ops []OpStats) {
	for _, s := range ops {
		if s.FirstError != "" {
			fmt.Fprintf(w, "first %s error: %s\n", s.Name, s.FirstError)
		}
	}
}

// writeThrottled says how many 429s were waited out, when there were any.
func writeThrottled(w io.Writer, n int) {
	if n > 0 {
		fmt.Fprintf(w, "throttled: %d answers of 429 waited out as Retry-After asked and sent again (as Entra does)\n", n)
	}
}

// Failures says what went wrong in the run, one phrase each: failed
// requests, and events missing, repeated, out of order or badly signed.
// Empty when nothing did.
func (r *Report) Failures() []string {
	var out []string
	if n := r.Total.ErrorCount(); n > 0 {
		out = append(out, fmt.Sprintf("%d requests failed (%s)", n, errorsText(r.Total.Errors)))
	}
	if e := r.Events; e != nil {
		for _, f := range []struct {
			n    int
			what string
		}{{e.Missing, "events missing"}, {e.Duplicated, "events delivered twice"}, {e.OutOfOrder, "events out of order"},
			{e.SignatureFailures, "signatures that did not verify"}, {e.Invalid, "deliveries that were not CloudEvents"}} {
			if f.n > 0 {
				out = append(out, fmt.Sprintf("%d %s", f.n, f.what))
			}
		}
	}
	return out
}

// failedRequests names, for Failures, the operations whose requests failed.
func failedRequests(stats ...OpStats) []string {
	var out []string
	for _, s := range stats {
		if n := s.ErrorCount(); n > 0 {
			out = append(out, fmt.Sprintf("%d %s requests failed (%s)", n, s.Name, errorsText(s.Errors)))
		}
	}
	return out
}

func msText(d time.Duration) string { return strconv.FormatFloat(ms(d), 'f', 2, 64) }

// errorsText writes errors by status, e.g. "409×3 500×1", or "-"; status 0
// (no response) reads "network".
func errorsText(errs map[int]int) string {
	if len(errs) == 0 {
		return "-"
	}
	statuses := slices.Sorted(maps.Keys(errs))
	parts := make([]string, len(statuses))
	for i, s := range statuses {
		label := strconv.Itoa(s)
		if s == 0 {
			label = "network"
		}
		parts[i] = fmt.Sprintf("%s×%d", label, errs[s])
	}
	return strings.Join(parts, " ")
}
