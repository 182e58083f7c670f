// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The order a Bulk request's operations run in (docs/decisions.md, "Bulk
// order and references"): in the order sent, but an operation referring
// to a bulkId waits for the POST creating it, and one that would act
// ahead of a waiting operation it touches waits behind it.

// visit runs operation i, unless it refers to a bulkId whose POST has not
// run yet: then it waits, and runs right after that POST. The others keep
// the order they were sent in: a forward reference ran the POST it named
// ahead of the operations sent before it, and a DELETE of a user sent
// before the POST that takes her userName ran after it (RFC 7644 §3.7: the
// same stateful result as in the order sent).
func (b *bulkRun) visit(ctx context.Context, i int) {
	if b.stopped() || b.state[i] == opDone {
		return
	}
	if j := b.actsAfter(i); j >= 0 {
		b.wait(i, j)
		return
	}
	// The references before refsDone[i] were to POSTs done (they stay
	// done): a revisit does not read them again.
	for refs := b.req.ops[i].refs; b.refsDone[i] < len(refs); b.refsDone[i]++ {
		if j, ok := b.req.creates[refs[b.refsDone[i]]]; ok && b.state[j] != opDone {
			b.wait(i, j)
			return
		}
	}
	b.runNow(ctx, i)
}

// wait makes operation i wait for operation j.
func (b *bulkRun) wait(i, j int) {
	b.state[i], b.waitsOn[i] = opWaiting, j
	b.waiting[j] = append(b.waiting[j], i)
}

// actsAfter returns the last operation sent before i that waits and that
// operation i touches (touching), -1 for none. An operation does not wait
// for one that waits, in the end, for it: the POST a waiting operation
// needs runs.
func (b *bulkRun) actsAfter(i int) int {
	var needI []bool // the operations that wait, in the end, for i
	for _, j := range b.touching(i) {
		if b.state[j] != opWaiting {
			continue
		}
		if needI == nil {
			needI = b.needing(i)
		}
		if !needI[j] {
			return j
		}
	}
	return -1
}

// touching returns the operations sent before i that i would act on
// ahead of, were they waiting, the last first: one on the same resource;
// one whose data names i's resource (a member, a manager); one on a
// resource i's data names; and, for a POST, one on a resource of the same
// type, whose name the POST may take (a DELETE of ann before the POST of
// a new ann). Run ahead, a PATCH adding a member sent after a waiting
// replace of the members lost it, a DELETE made the waiting PATCH before
// it 404, and a POST of ann failed on the ann a waiting DELETE was to
// remove (reviews of the order of a Bulk). It is read once from the
// request's touchIndex: an operation visited again as each POST it names
// runs scanned every operation before it each time, seconds for 1,000.
func (b *bulkRun) touching(i int) []int {
	if b.touches[i] != nil {
		return b.touches[i]
	}
	t := b.touchIndex()
	list := []int{}
	for _, l := range t.back[i] {
		ops := t.lists[l]
		list = append(list, ops[:sort.SearchInts(ops, i)]...)
	}
	if len(t.back[i]) > 1 { // one list is in order, and holds each once
		slices.Sort(list)
		list = slices.Compact(list)
	}
	slices.Reverse(list)
	b.touches[i] = list
	return list
}

// needing marks the operations that wait, in the end, for operation i:
// through what they wait for now; through a bulkId they, or one on their
// way, refer to, whose POST they will wait for once what they wait for
// now has run; and, for a waiting operation on the way, the waiting ones
// on its resource or naming it (or named by it), which will wait behind
// it once what they wait for now has run. Following the first alone, a
// POST of dir was made to wait behind ann's PATCH naming mgr, whose POST,
// sent after, names dir: a circle none of them made, and all three failed
// 409. Without the last, w's POST was made to wait behind u's second
// PATCH, which was to wait behind u's first, which waited, through a
// group's PATCH, for w: u's second PATCH then ran first
// (TestBulkWaitingOperationSeesWhatItWillWaitBehind). Not a POST that
// touches it by its type alone: it waits behind a waiting operation only
// to leave a name free, and whether it will is its own decision when it
// is visited again, often not (the waiting one needs it); counted as
// waiting, it made operations overtake earlier ones on their resource
// (TestBulkPostsWaitingByTypeAreNotForeseen). Nor those touching i: they
// wait behind i only if i waits, which is what is being decided. One walk
// back from i, in time linear in the operations, their references and
// the keys they share: a list of touchIndex is walked once in a walk, from
// the earliest operation it was walked ahead of.
func (b *bulkRun) needing(i int) []bool {
	t := b.touchIndex()
	need := make([]bool, len(b.state))
	walkedFrom := make([]int, len(t.lists)) // a list → 1 + where its walk began, 0 for none yet
	var next []int
	mark := func(w int) {
		if !need[w] {
			need[w] = true
			next = append(next, w)
		}
	}
	for x := i; ; {
		if b.state[x] != opDone { // a done operation is waited for by none
			for _, w := range b.waiting[x] {
				if b.state[w] == opWaiting && b.waitsOn[w] == x {
					mark(w)
				}
			}
			for _, w := range b.req.referrers[x] {
				mark(w)
			}
		}
		if b.state[x] == opWaiting {
			for _, l := range t.ahead[x] {
				ops := t.lists[l]
				from, to := sort.SearchInts(ops, x+1), len(ops)
				if walkedFrom[l] > 0 {
					to = walkedFrom[l] - 1
				}
				for k := from; k < to; k++ {
					if b.state[ops[k]] == opWaiting {
						mark(ops[k])
					}
				}
				if from < to {
					walkedFrom[l] = from + 1
				}
			}
		}
		if len(next) == 0 {
			return need
		}
		x, next = next[len(next)-1], next[:len(next)-1]
	}
}

// touchIndex returns what the request's operations touch (touching),
// indexed by the key two of them share, made at the first visit.
func (b *bulkRun) touchIndex() *bulkTouches {
	if b.touch == nil {
		b.touch = newBulkTouches(b.req.ops, b.ids)
	}
	return b.touch
}

// bulkTouches indexes which operations of a Bulk request touch which
// (touching) by the key they share, as lists of the operations sharing
// one, in the order sent: a resource's id (the operations on it; those
// whose data names it) and a resource type (its operations, which a POST
// of it touches).
// Each operation knows the lists holding the operations before it that it
// touches (back: touching reads them) and those after it that touch it on
// its resource (ahead: needing walks them; a POST touching it by type
// alone is not foreseen), so that no question about touching scans
// the request: a walk that followed a reverse list per operation cost up
// to n²/2 at every visit (0.78 s for BenchmarkBulkOrder's forward chain,
// 0.14 s without).
type bulkTouches struct {
	lists [][]int // operations sharing a key, in the order sent
	back  [][]int // an operation → the lists holding those before it that it touches
	ahead [][]int // an operation → the lists holding those after it that touch it on its resource
}

func newBulkTouches(ops []*bulkOp, ids []string) *bulkTouches {
	t := &bulkTouches{back: make([][]int, len(ops)), ahead: make([][]int, len(ops))}
	onID, namingID, onType := map[string]int{}, map[string]int{}, map[string]int{}
	list := func(keys map[string]int, key string) int {
		l, ok := keys[key]
		if !ok {
			l = len(t.lists)
			keys[key] = l
			t.lists = append(t.lists, nil)
		}
		return l
	}
	add := func(keys map[string]int, key string, i int) int {
		l := list(keys, key)
		t.lists[l] = append(t.lists[l], i)
		return l
	}
	for i, id := range ids {
		if id != "" {
			add(onID, id, i)
		}
	}
	both := func(i int, ls ...int) {
		t.back[i] = append(t.back[i], ls...)
		t.ahead[i] = append(t.ahead[i], ls...)
	}
	for i, op := range ops {
		if id := ids[i]; id != "" { // the operations on its resource, and those naming it
			both(i, onID[id], list(namingID, id))
		}
		if len(onID) > 0 { // only a resource operated on can be named
			for s := range mentions(op) { // the operations on a resource it names
				if on, ok := onID[s]; ok {
					add(namingID, s, i)
					both(i, on)
				}
			}
		}
		byType := add(onType, strings.ToLower(op.endpoint()), i)
		if op.method == http.MethodPost { // the operations on a resource of its type
			t.back[i] = append(t.back[i], byType)
		}
	}
	return t
}

// mentions returns the strings in an operation's data, where it names
// other resources by id.
func mentions(op *bulkOp) map[string]bool {
	m := map[string]bool{}
	walkBulkStrings(op.data, op.method == http.MethodPatch, func(s string, inPath bool) string {
		m[s] = true
		if inPath { // members[value eq "<id>"] names <id> as a value does
			for _, q := range filterString.FindAllStringSubmatch(s, -1) {
				m[q[1]] = true
			}
		}
		return s
	})
	return m
}

// finish runs what still waits once every operation was visited: each
// waits, in the end, on a circle of operations referring to each other's
// bulkIds, whose members fail (circular) and whose waiters then fail
// (what they refer to failed). A waiter let go may then wait on another
// circle (a DELETE of a circle's member held the POSTs of a second one):
// so it goes on until nothing waits, or failOnErrors stops the request.
func (b *bulkRun) finish(ctx context.Context) {
	for ran := true; ran && !b.stopped(); {
		ran = false
		walked := make([]bool, len(b.state)) // this pass: each waiting operation is followed once
		for i := range b.state {
			if _, marked := b.cyclic[i]; b.state[i] == opWaiting && !marked {
				b.markCycle(i, walked) // named from its first member
			}
		}
		for i := range b.state {
			if _, ok := b.cyclic[i]; ok && b.state[i] != opDone {
				b.runNow(ctx, i)
				ran = true
			}
		}
	}
}

// runNow runs operation i, whatever it waits for, then those waiting for
// it.
func (b *bulkRun) runNow(ctx context.Context, i int) {
	if b.stopped() || b.state[i] == opDone {
		return
	}
	b.state[i] = opDone
	res := b.run(ctx, b.req.ops[i])
	b.results = append(b.results, res)
	if st, _ := strconv.Atoi(res.Status); st >= 400 {
		b.failed++
	}
	waiters := b.waiting[i]
	delete(b.waiting, i)
	for _, k := range waiters {
		if b.state[k] == opWaiting && b.waitsOn[k] == i {
			b.state[k] = opPending
			b.visit(ctx, k)
		}
	}
}

// markCycle follows what operation i waits for, and records the circle it
// reaches: the operations referring to each other's bulkIds.
// walked holds the operations already followed in this pass: what they
// reach was named then (one walk per operation, not one per waiter behind
// it: a chain of circles held behind each other took seconds).
func (b *bulkRun) markCycle(i int, walked []bool) {
	at := map[int]int{} // operation → its place on the path
	var path []int
	defer func() {
		for _, m := range path {
			walked[m] = true
		}
	}()
	for cur := i; b.state[cur] == opWaiting; cur = b.waitsOn[cur] {
		if _, marked := b.cyclic[cur]; marked || walked[cur] {
			return // a circle already named, or reached by a walk before
		}
		if k, ok := at[cur]; ok {
			members := append(append([]int(nil), path[k:]...), cur)
			names := make([]string, len(members))
			for n, m := range members {
				names[n] = "Operations[" + strconv.Itoa(m) + "]"
				if id := b.req.ops[m].bulkID; id != "" {
					names[n] += " (bulkId " + Truncate(id, 64) + ")"
				}
			}
			if b.cyclic == nil {
				b.cyclic = map[int]string{}
			}
			for _, m := range path[k:] {
				b.cyclic[m] = strings.Join(names, " → ")
			}
			return
		}
		at[cur] = len(path)
		path = append(path, cur)
	}
}
