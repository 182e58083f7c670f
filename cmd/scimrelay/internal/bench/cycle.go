// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"time"
)

// The operations of a cycle, in report order.
const (
	opFilterGetUser = iota
	opCreateUser
	opFilterGetGroup
	opCreateGroup
	opPatchMembers
	opPatchUser
	opDeactivateUser
	opDeleteUser
	numOps
)

// opNames are the operation names of the report (a stable interface: the
// JSON output and scripts use them).
var opNames = [numOps]string{
	"filter-get-user", "create-user", "filter-get-group", "create-group",
	"patch-members", "patch-user", "deactivate-user", "delete-user",
}

// Event types the cycle causes (the scimrelay catalog; the bench does not
// import the relay, so that it stays a client of any SCIM endpoint).
const (
	typeUserCreated        = "io.scimrelay.user.created"
	typeUserUpdated        = "io.scimrelay.user.updated"
	typeUserDeactivated    = "io.scimrelay.user.deactivated"
	typeUserDeleted        = "io.scimrelay.user.deleted"
	typeGroupCreated       = "io.scimrelay.group.created"
	typeGroupMemberAdded   = "io.scimrelay.group.member_added"
	typeGroupMemberRemoved = "io.scimrelay.group.member_removed"
)

// eventKey identifies one event the bench expects: its type, its subject's
// resource id and, for member events, the member's id. An event's key is
// unique within a cycle, because no resource gets the same change twice.
type eventKey struct {
	typ, id, member string
}

// cycle is the state of one run against one endpoint.
type cycle struct {
	o      Options
	client *client
	bar    *bar
	rec    *recorder
	acks   *acks // nil without a receiver

	users  []user
	groups []group

	mu       sync.Mutex
	memberOf map[int][]int // user index → indexes of the groups it was added to
	start    time.Time
	end      time.Time
}

type user struct {
	name, externalID string
	id               string // set once created (or found)
}

type group struct {
	name, externalID string
	id               string
}

func newCycle(o Options, base string, b *bar, expectEvents bool) *cycle {
	c := &cycle{
		o:        o,
		client:   newClient(o, base),
		bar:      b,
		rec:      &recorder{},
		users:    make([]user, o.Users),
		groups:   make([]group, o.Groups),
		memberOf: make(map[int][]int),
	}
	if expectEvents {
		c.acks = newAcks()
	}
	for i := range c.users {
		c.users[i] = user{name: o.userName(fmt.Sprintf("%s.u%06d", o.Prefix, i)), externalID: newUUID()}
	}
	for i := range c.groups {
		c.groups[i] = group{name: fmt.Sprintf("%s-group-%04d", o.Prefix, i), externalID: newUUID()}
	}
	return c
}

func (c *cycle) close() { c.client.close() }

// ack records that the response to a request that causes event k arrived.
func (c *cycle) ack(k eventKey, at time.Time) {
	if c.acks != nil {
		c.acks.add(k, at)
	}
}

// testConnection does what Entra's Test Connection does: a filter GET for a
// user that does not exist, expecting 200 and an empty list. It fails the
// run early on a wrong URL or token instead of counting thousands of 401s.
func (c *cycle) testConnection(ctx context.Context) error {
	res := c.client.send(ctx, request{
		method: "GET", path: "/Users?" + url.Values{"filter": {`userName eq "` + newUUID() + `"`}}.Encode(),
		want: []int{200}, parse: expectEmptyList,
	})
	c.bar.add()
	if res.err != nil {
		return fmt.Errorf("%w: GET %s/Users?filter=userName eq \"<random>\": %w", ErrTestConnection, c.o.URL, res.err)
	}
	return nil
}

// run performs the initial then the incremental cycle, one phase after the
// other: each phase needs the ids the previous one created.
func (c *cycle) run(ctx context.Context) error {
	p := newPacer(c.o)
	c.start = time.Now()
	defer func() { c.end = time.Now() }()

	c.bar.describe("users")
	if err := p.phase(ctx, c.userTasks()); err != nil {
		return err
	}
	c.bar.describe("groups")
	if err := p.phase(ctx, c.groupTasks()); err != nil {
		return err
	}
	c.bar.describe("members")
	if err := p.phase(ctx, c.memberTasks()); err != nil {
		return err
	}
	c.bar.describe("incremental")
	return p.phase(ctx, c.incrementalTasks())
}

func (c *cycle) userTasks() []task {
	tasks := make([]task, len(c.users))
	for i := range c.users {
		tasks[i] = task{reqs: 2, run: func(ctx context.Context, s *sender) { c.provisionUser(ctx, s, i) }}
	}
	return tasks
}

// provisionUser matches then creates user i, as Entra does for a user in
// scope that is not yet linked.
func (c *cycle) provisionUser(ctx context.Context, s *sender, i int) {
	u := &c.users[i]
	var found string
	res := c.do(ctx, s, opFilterGetUser, request{
		method: "GET", path: "/Users?" + url.Values{"filter": {`userName eq "` + u.name + `"`}}.Encode(),
		want: []int{200}, parse: expectEmptyList, found: &found,
	})
	if found != "" {
		// Entra links to a match instead of creating: so does the bench, having
		// counted the match as an error (the run's names should be new).
		u.id = found
		return
	}
	if res.err != nil {
		return // Entra cannot know whether the user exists: it retries next cycle
	}
	res = c.do(ctx, s, opCreateUser, request{
		method: "POST", path: "/Users", body: userBody(u, i),
		want: []int{201}, parse: expectID, found: &u.id,
	})
	if res.err == nil {
		c.ack(eventKey{typeUserCreated, u.id, ""}, res.end)
	}
}

func (c *cycle) groupTasks() []task {
	tasks := make([]task, len(c.groups))
	for i := range c.groups {
		tasks[i] = task{reqs: 2, run: func(ctx context.Context, s *sender) { c.provisionGroup(ctx, s, i) }}
	}
	return tasks
}

func (c *cycle) provisionGroup(ctx context.Context, s *sender, i int) {
	g := &c.groups[i]
	var found string
	res := c.do(ctx, s, opFilterGetGroup, request{
		method: "GET",
		path:   "/Groups?excludedAttributes=members&" + url.Values{"filter": {`displayName eq "` + g.name + `"`}}.Encode(),
		want:   []int{200}, parse: expectEmptyList, found: &found,
	})
	if found != "" {
		g.id = found
		return
	}
	if res.err != nil {
		return
	}
	res = c.do(ctx, s, opCreateGroup, request{
		method: "POST", path: "/Groups", body: groupBody(g),
		want: []int{201}, parse: expectID, found: &g.id,
	})
	if res.err == nil {
		c.ack(eventKey{typeGroupCreated, g.id, ""}, res.end)
	}
}

// created returns the indexes of the users that have an id.
func (c *cycle) created() []int {
	var idx []int
	for i := range c.users {
		if c.users[i].id != "" {
			idx = append(idx, i)
		}
	}
	return idx
}

// rng returns a random source seeded from the run's prefix, so that a run
// with a given prefix picks the same members and targets again.
func (c *cycle) rng(salt string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(c.o.Prefix + "/" + salt))
	return rand.New(rand.NewPCG(h.Sum64(), 0x5c1a))
}

// memberTasks draws MembersPerGroup distinct users for every group and adds
// them in PATCH batches of up to MemberBatch, the way Entra does.
func (c *cycle) memberTasks() []task {
	if c.o.MembersPerGroup == 0 {
		return nil
	}
	pool := c.created()
	r := c.rng("members")
	n := min(c.o.MembersPerGroup, len(pool))
	var tasks []task
	for gi := range c.groups {
		if c.groups[gi].id == "" {
			continue
		}
		// A partial Fisher-Yates shuffle: the first n of pool are a uniform sample.
		for k := range n {
			j := k + r.IntN(len(pool)-k)
			pool[k], pool[j] = pool[j], pool[k]
		}
		chosen := slices.Clone(pool[:n])
		for b := 0; b < len(chosen); b += MemberBatch {
			batch := chosen[b:min(b+MemberBatch, len(chosen))]
			tasks = append(tasks, task{reqs: 1, run: func(ctx context.Context, s *sender) { c.addMembers(ctx, s, gi, batch) }})
		}
	}
	return tasks
}

func (c *cycle) addMembers(ctx context.Context, s *sender, gi int, batch []int) {
	g := &c.groups[gi]
	ids := make([]string, len(batch))
	for k, ui := range batch {
		ids[k] = c.users[ui].id
	}
	res := c.do(ctx, s, opPatchMembers, request{
		method: "PATCH", path: "/Groups/" + url.PathEscape(g.id), body: addMembersBody(ids),
		want: []int{204, 200},
	})
	if res.err != nil {
		return
	}
	c.mu.Lock()
	for _, ui := range batch {
		c.memberOf[ui] = append(c.memberOf[ui], gi)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.ack(eventKey{typeGroupMemberAdded, g.id, id}, res.end)
	}
}

// incrementalCounts is how many users the incremental cycle patches,
// deactivates and deletes: 20%, 5% and 1%.
func incrementalCounts(users int) (patch, deactivate, del int) {
	return users * 20 / 100, users * 5 / 100, users / 100
}

// incrementalTasks picks disjoint sets of users to patch, deactivate and
// delete (so that no two requests of the phase race on one user), and
// orders the tasks by user so that the three kinds interleave.
func (c *cycle) incrementalTasks() []task {
	nPatch, nDeact, nDel := incrementalCounts(c.o.Users)
	pool := c.created()
	r := c.rng("incremental")
	r.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	op := make(map[int]int, nPatch+nDeact+nDel)
	for k, ui := range pool {
		switch {
		case k < nDel:
			op[ui] = opDeleteUser
		case k < nDel+nDeact:
			op[ui] = opDeactivateUser
		case k < nDel+nDeact+nPatch:
			op[ui] = opPatchUser
		}
	}
	var tasks []task
	for ui := range c.users {
		kind, ok := op[ui]
		if !ok {
			continue
		}
		tasks = append(tasks, task{reqs: 1, run: func(ctx context.Context, s *sender) { c.change(ctx, s, ui, kind) }})
	}
	return tasks
}

func (c *cycle) change(ctx context.Context, s *sender, ui, kind int) {
	u := &c.users[ui]
	path := "/Users/" + url.PathEscape(u.id)
	switch kind {
	case opPatchUser:
		res := c.do(ctx, s, kind, request{method: "PATCH", path: path, body: patchUserBody(u, ui), want: []int{200, 204}})
		if res.err == nil {
			c.ack(eventKey{typeUserUpdated, u.id, ""}, res.end)
		}
	case opDeactivateUser:
		res := c.do(ctx, s, kind, request{method: "PATCH", path: path, body: deactivateBody, want: []int{200, 204}})
		if res.err == nil {
			c.ack(eventKey{typeUserDeactivated, u.id, ""}, res.end)
		}
	case opDeleteUser:
		res := c.do(ctx, s, kind, request{method: "DELETE", path: path, want: []int{204}})
		if res.err != nil {
			return
		}
		c.ack(eventKey{typeUserDeleted, u.id, ""}, res.end)
		c.mu.Lock()
		groups := c.memberOf[ui]
		c.mu.Unlock()
		for _, gi := range groups {
			c.ack(eventKey{typeGroupMemberRemoved, c.groups[gi].id, u.id}, res.end)
		}
	}
}

// do sends one request of a task when it is due and records the outcome.
func (c *cycle) do(ctx context.Context, s *sender, op int, req request) result {
	origin, err := s.start(ctx)
	if err != nil {
		return result{err: err}
	}
	res := c.client.send(ctx, req)
	s.done(res.end)
	if ctx.Err() != nil {
		// The run is being cancelled: this failure is ours, not the server's.
		return result{err: ctx.Err()}
	}
	c.rec.add(op, origin, res)
	c.bar.add()
	return res
}
