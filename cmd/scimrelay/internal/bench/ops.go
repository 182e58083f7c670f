// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The ops mode measures the two requests that dominate a provisioning
// cycle, each alone: Entra's create-user POST and its userName filter GET
// (a hit, on a user the round created), Requests of each per round, at
// Concurrency, against the endpoint and, with Baseline, against the
// minimal JSON handler right after it, so that both see the same machine.
// Rounds repeat it; the report gives each round and the medians.

// Operations of the ops mode.
const (
	opsCreateUser = "create-user"
	opsFilterGet  = "filter-get-user"
)

// OpsReport is what an ops run measured. Its JSON form:
//
//	{"config": {...as Report's},
//	 "requests",
//	 "rounds": [{"round", "rows": [row...]}],
//	 "median": [row...]}
//	row: {"operation", "endpoint": op, "baseline": op or null, "ratio"}
//
// where op is an operation of Report and ratio the endpoint's requests/s
// over the baseline's (0 without a baseline). A median row's figures are
// each the median over the rounds, except the endpoint's count, errors and
// throttled: the rounds' sums.
type OpsReport struct {
	Config    Config
	Requests  int
	RoundRows [][]OpsRow
	Median    []OpsRow
}

// Failures lists the operations whose requests failed, in any round.
func (r *OpsReport) Failures() []string {
	var stats []OpStats
	for _, rows := range r.RoundRows {
		for _, row := range rows {
			stats = append(stats, row.Endpoint)
		}
	}
	return failedRequests(stats...)
}

// OpsRow is one operation of a round: the endpoint's figures and the
// baseline's.
type OpsRow struct {
	Operation string
	Endpoint  OpStats
	Baseline  *OpStats
	Ratio     float64
}

// RunOps runs the ops mode.
func RunOps(ctx context.Context, o Options) (*OpsReport, error) {
	o.Mode = ModeOps
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	rep := &OpsReport{Config: configOf(o), Requests: o.Requests}
	per := int64(2 * o.Requests)
	if o.Baseline {
		per *= 2
	}
	b := newBar(o.Progress, per*int64(o.Rounds), "ops")
	defer b.finish()
	endpoint := newClient(o, o.URL)
	defer endpoint.close()
	var base *client
	if o.Baseline {
		url, stop, err := startBaseline()
		if err != nil {
			return nil, err
		}
		defer stop()
		base = newClient(o, url)
		defer base.close()
	}
	for r := range o.Rounds {
		b.describe(fmt.Sprintf("ops round %d", r+1))
		rows, err := opsRound(ctx, o, r, endpoint, base, b)
		if err != nil {
			return rep, err
		}
		rep.RoundRows = append(rep.RoundRows, rows)
	}
	rep.Median = medianRows(rep.RoundRows)
	return rep, nil
}

// opsRound creates Requests users then reads each back by filter, on the
// endpoint and then on the baseline.
func opsRound(ctx context.Context, o Options, round int, endpoint, base *client, b *bar) ([]OpsRow, error) {
	users := func(tag string) []user {
		us := make([]user, o.Requests)
		for i := range us {
			us[i] = user{name: o.userName(fmt.Sprintf("%s.r%d%s.u%06d", o.Prefix, round, tag, i)), externalID: newUUID()}
		}
		return us
	}
	create := func(c *client, us []user) phaseResult {
		return runPhase(ctx, c, opsCreateUser, len(us), o.Concurrency, 0, b, func(i int) request { return createUserRequest(&us[i], i) })
	}
	filter := func(c *client, us []user, check bool) phaseResult {
		return runPhase(ctx, c, opsFilterGet, len(us), o.Concurrency, 0, b, func(i int) request {
			// Spread over the users, not in creation order.
			u := &us[(i*7919)%len(us)]
			r := request{method: "GET", path: filterUserPath(u.name), want: []int{200}}
			if check {
				r.parse = expectOne
			}
			return r
		})
	}
	row := func(name string, e phaseResult, bl *phaseResult) OpsRow {
		r := OpsRow{Operation: name, Endpoint: e.OpStats}
		if bl != nil {
			r.Baseline = &bl.OpStats
			if bl.RPS > 0 {
				r.Ratio = e.RPS / bl.RPS
			}
		}
		return r
	}
	eu := users("")
	ec := create(endpoint, eu)
	var bu []user
	var bc, bf *phaseResult
	if base != nil {
		bu = users("b")
		r := create(base, bu)
		bc = &r
	}
	ef := filter(endpoint, eu, true)
	if base != nil {
		r := filter(base, bu, false)
		bf = &r
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return []OpsRow{row(opsCreateUser, ec, bc), row(opsFilterGet, ef, bf)}, nil
}

// medianRows takes each figure's median over the rounds, per operation.
func medianRows(rounds [][]OpsRow) []OpsRow {
	if len(rounds) == 0 {
		return nil
	}
	var out []OpsRow
	for k := range rounds[0] {
		col := func(f func(r OpsRow) float64) float64 {
			v := make([]float64, len(rounds))
			for i, rows := range rounds {
				v[i] = f(rows[k])
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		dur := func(f func(r OpsRow) time.Duration) time.Duration {
			return time.Duration(col(func(r OpsRow) float64 { return float64(f(r)) }))
		}
		m := OpsRow{Operation: rounds[0][k].Operation, Endpoint: OpStats{Name: rounds[0][k].Operation, Errors: map[int]int{}}}
		for _, rows := range rounds {
			m.Endpoint.Count += rows[k].Endpoint.Count
			m.Endpoint.Throttled += rows[k].Endpoint.Throttled
			for s, n := range rows[k].Endpoint.Errors {
				m.Endpoint.Errors[s] += n
			}
		}
		m.Endpoint.RPS = col(func(r OpsRow) float64 { return r.Endpoint.RPS })
		m.Endpoint.Latency = Latency{
			P50: dur(func(r OpsRow) time.Duration { return r.Endpoint.Latency.P50 }),
			P95: dur(func(r OpsRow) time.Duration { return r.Endpoint.Latency.P95 }),
			P99: dur(func(r OpsRow) time.Duration { return r.Endpoint.Latency.P99 }),
			Max: dur(func(r OpsRow) time.Duration { return r.Endpoint.Latency.Max }),
		}
		if rounds[0][k].Baseline != nil {
			bl := OpStats{Name: m.Operation, Errors: map[int]int{}}
			bl.RPS = col(func(r OpsRow) float64 { return r.Baseline.RPS })
			bl.Latency = Latency{
				P50: dur(func(r OpsRow) time.Duration { return r.Baseline.Latency.P50 }),
				P95: dur(func(r OpsRow) time.Duration { return r.Baseline.Latency.P95 }),
				P99: dur(func(r OpsRow) time.Duration { return r.Baseline.Latency.P99 }),
				Max: dur(func(r OpsRow) time.Duration { return r.Baseline.Latency.Max }),
			}
			m.Baseline = &bl
			m.Ratio = col(func(r OpsRow) float64 { return r.Ratio })
		}
		out = append(out, m)
	}
	return out
}

// --- output

type jsonOpsRow struct {
	Operation string  `json:"operation"`
	Endpoint  jsonOp  `json:"endpoint"`
	Baseline  *jsonOp `json:"baseline"`
	Ratio     float64 `json:"ratio"`
}

func opsRowsJSON(rows []OpsRow) []jsonOpsRow {
	out := make([]jsonOpsRow, len(rows))
	for i, r := range rows {
		out[i] = jsonOpsRow{Operation: r.Operation, Endpoint: opJSON(r.Endpoint), Ratio: round3(r.Ratio)}
		if r.Baseline != nil {
			b := opJSON(*r.Baseline)
			out[i].Baseline = &b
		}
	}
	return out
}

// MarshalJSON writes the report in its documented shape (see OpsReport).
func (r *OpsReport) MarshalJSON() ([]byte, error) {
	type round struct {
		Round int          `json:"round"`
		Rows  []jsonOpsRow `json:"rows"`
	}
	j := struct {
		Config   jsonConfig   `json:"config"`
		Requests int          `json:"requests"`
		Rounds   []round      `json:"rounds"`
		Median   []jsonOpsRow `json:"median"`
	}{Config: configJSON(r.Config), Requests: r.Requests, Rounds: []round{}, Median: opsRowsJSON(r.Median)}
	for i, rows := range r.RoundRows {
		j.Rounds = append(j.Rounds, round{Round: i + 1, Rows: opsRowsJSON(rows)})
	}
	return json.Marshal(j)
}

// WriteTable writes the report as aligned text for people.
func (r *OpsReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d requests of each operation per round, concurrency %d, %d rounds; prefix %s\n\n",
		r.Config.URL, r.Requests, r.Config.Concurrency, len(r.RoundRows), r.Config.Prefix)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "round\toperation\treq/s\tp50 ms\tp99 ms\tmax ms\terrors\tbaseline req/s\tbaseline p99 ms\tratio\t\n")
	line := func(round string, row OpsRow) {
		e := row.Endpoint
		base := "-\t-\t-"
		if bl := row.Baseline; bl != nil {
			base = fmt.Sprintf("%.1f\t%s\t%.3f", bl.RPS, msText(bl.Latency.P99), row.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n", round, row.Operation, e.RPS,
			msText(e.Latency.P50), msText(e.Latency.P99), msText(e.Latency.Max), errorsText(e.Errors), base)
	}
	throttled := 0
	for i, rows := range r.RoundRows {
		for _, row := range rows {
			line(fmt.Sprint(i+1), row)
			throttled += row.Endpoint.Throttled
		}
	}
	for _, row := range r.Median {
		line("median", row)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeThrottled(&b, throttled)
	_, err := io.WriteString(w, b.String())
	return err
}
