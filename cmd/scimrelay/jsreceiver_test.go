// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// jsReceiver is docs/examples/js/receive.mjs running under node.
type jsReceiver struct {
	url            string
	stdout, stderr *eventstest.Log
	exited         chan struct{} // closed when node has exited
	err            error         // its exit status, once exited is closed
}

// startJSReceiver runs receive.mjs on a free port with the sinks' secret
// and returns once it listens.
func startJSReceiver(t *testing.T, node, dir string) *jsReceiver {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	port := eventstest.FreePort(t)
	r := &jsReceiver{url: fmt.Sprintf("http://127.0.0.1:%d", port), stdout: &eventstest.Log{}, stderr: &eventstest.Log{}, exited: make(chan struct{})}
	cmd := exec.CommandContext(ctx, node, "receive.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "SCIMRELAY_RECEIVER_SECRET="+sinkSecret)
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.exited
	})
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-r.exited:
			t.Fatalf("node receive.mjs exited before it listened: %v\n%s", r.err, r.stderr.String())
		default:
		}
		c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
		if err != nil {
			return err
		}
		return c.Close()
	})
	return r
}

// appliedEvent is a line receive.mjs prints for an event it applied.
type appliedEvent struct {
	ID, Type, Subject, Subjectseq string
	UserName, DisplayName         string
}

func (r *jsReceiver) applied(t *testing.T) []appliedEvent {
	t.Helper()
	var out []appliedEvent
	sc := bufio.NewScanner(strings.NewReader(r.stdout.String()))
	for sc.Scan() {
		var e appliedEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("receive.mjs printed %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// jsReceiverExample returns node and the directory of the JavaScript
// receiver example, skipping the test when either is not ready.
func jsReceiverExample(t *testing.T) (node, dir string) {
	t.Helper()
	var err error
	if node, err = exec.LookPath("node"); err != nil {
		t.Skip("node is not installed; the JavaScript receiver example needs it")
	}
	dir, err = filepath.Abs("../../docs/examples/js")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks")); err != nil {
		t.Skip("docs/examples/js/node_modules has no standardwebhooks: run npm ci --prefix docs/examples/js")
	}
	return node, dir
}

// TestJavaScriptReceiverExample runs docs/examples/js/receive.mjs (the
// README's JavaScript receiver) against a relay with three sinks, one per
// mode: binary, structured, batches. Each sink has a receiver of its own,
// since a receiver drops an event id it has applied. Every event must be
// verified and applied once, in order per resource, whatever the mode; the
// names carry &, < and >, which a structured body escapes, so a receiver
// that verified re-serialised JSON would refuse them. A forged delivery is
// answered 401.
func TestJavaScriptReceiverExample(t *testing.T) {
	node, dir := jsReceiverExample(t)
	modes := []string{"binary", "structured", "batch"}
	receivers := map[string]*jsReceiver{}
	cfg := testConfig(t, t.TempDir())
	for _, mode := range modes {
		receivers[mode] = startJSReceiver(t, node, dir)
		withSink(cfg, mode, receivers[mode].url+"/scim-events", func(s *config.Sink) {
			switch mode {
			case "structured":
				s.Format = "structured"
			case "batch":
				s.Format = ""
				s.Batch = &config.SinkBatch{MaxEvents: 10, MaxWait: config.Duration(20 * time.Millisecond)}
			}
		})
	}
	p := startRelay(t, cfg, roleAll)

	const user = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q,"active":true}`
	ann := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(user, "ann&co<1>@example.com")).want(t, 201).str("id")
	bob := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(user, "bob>@example.com")).want(t, 201).str("id")
	p.scim("acme", acmeToken, "PATCH", "/Users/"+ann, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":false}]}`).want(t, 200)
	group := p.scim("acme", acmeToken, "POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"R&D <core>","members":[{"value":%q},{"value":%q}]}`, ann, bob)).want(t, 201).str("id")
	p.scim("acme", acmeToken, "DELETE", "/Users/"+bob, "").want(t, 204)

	// What each receiver must apply per resource, in this order (subjectseq 1, 2, …).
	want := map[string][]string{
		"Users/" + ann:    {"user.created", "user.deactivated"},
		"Users/" + bob:    {"user.created", "user.deleted"},
		"Groups/" + group: {"group.created", "group.member_added", "group.member_added", "group.member_removed"},
	}
	names := map[string]string{"Users/" + ann: "ann&co<1>@example.com", "Users/" + bob: "bob>@example.com", "Groups/" + group: "R&D <core>"}
	total := 0
	for _, types := range want {
		total += len(types)
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		for _, mode := range modes {
			if s := receivers[mode].stderr.String(); s != "" {
				t.Fatalf("the %s receiver refused deliveries:\n%s", mode, s)
			}
			if n := len(receivers[mode].applied(t)); n < total {
				return fmt.Errorf("the %s receiver applied %d of %d events", mode, n, total)
			}
		}
		return nil
	})

	var ids []string // the event ids the binary receiver applied, sorted
	for _, mode := range modes {
		r := receivers[mode]
		got := map[string][]string{}
		var modeIDs []string
		for _, e := range r.applied(t) {
			seq, _ := strconv.Atoi(e.Subjectseq)
			if seq != len(got[e.Subject])+1 || len(e.Subjectseq) != 20 {
				t.Errorf("%s receiver: %s %s has subjectseq %s after %d events of its subject", mode, e.Subject, e.Type, e.Subjectseq, len(got[e.Subject]))
			}
			got[e.Subject] = append(got[e.Subject], strings.TrimPrefix(e.Type, "io.scimrelay."))
			modeIDs = append(modeIDs, e.ID)
			if name := e.UserName + e.DisplayName; name != names[e.Subject] {
				t.Errorf("%s receiver: %s %s names %q, want %q", mode, e.Subject, e.Type, name, names[e.Subject])
			}
		}
		for subject, types := range want {
			if !slices.Equal(got[subject], types) {
				t.Errorf("%s receiver applied %v for %s, want %v", mode, got[subject], subject, types)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s receiver applied events of %d resources, want %d: %v", mode, len(got), len(want), got)
		}
		slices.Sort(modeIDs)
		if len(slices.Compact(slices.Clone(modeIDs))) != len(modeIDs) {
			t.Errorf("%s receiver applied an event twice: %v", mode, modeIDs)
		}
		if ids == nil {
			ids = modeIDs
		} else if !slices.Equal(ids, modeIDs) {
			t.Errorf("the %s receiver applied events %v, the binary one %v", mode, modeIDs, ids)
		}
		if s := r.stderr.String(); s != "" {
			t.Errorf("the %s receiver refused deliveries:\n%s", mode, s)
		}
	}

	// Forged deliveries: signed with another secret, or with the sink's
	// secret over other bytes.
	body := []byte(`{"tenant":"acme","resourceType":"User","id":"x","resource":{"userName":"mallory"}}`)
	other, err := standardwebhooks.NewWebhook("whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==")
	if err != nil {
		t.Fatal(err)
	}
	sink, err := standardwebhooks.NewWebhook(sinkSecret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	byOther, _ := other.Sign("forged-1", now, body)
	overOther, _ := sink.Sign("forged-2", now, []byte(`{"tenant":"acme"}`))
	for id, signature := range map[string]string{"forged-1": byOther, "forged-2": overOther} {
		req, err := http.NewRequest("POST", receivers["binary"].url+"/forged", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("webhook-signature", signature)
		for k, v := range map[string]string{"ce-id": id, "ce-type": "io.scimrelay.user.deleted", "ce-subject": "Users/" + ann, "ce-subjectseq": "00000000000000000099"} {
			req.Header.Set(k, v)
		}
		do(t, req).want(t, http.StatusUnauthorized)
	}
	if n := len(receivers["binary"].applied(t)); n != total {
		t.Errorf("the binary receiver applied %d events after the forged deliveries, want %d", n, total)
	}
	// The receiver writes its line after answering, and the pipe is read
	// by another goroutine: wait for both lines (a CI run read one).
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := receivers["binary"].stderr.String(); strings.Count(s, "401 POST /forged: ") != 2 {
			return fmt.Errorf("the receiver said on stderr %q, want a line per forged delivery", s)
		}
		return nil
	})
}

// TestJavaScriptReceiverAfterARedrive: the README's JavaScript receiver
// keeps memberships right when a dead letter is redriven after later
// events of its group. A proxy in front of it refuses (400) each group's
// first member_added once, so it is dead-lettered and the group's later
// events go on. Group g then gets another member, who leaves again; group
// h is deleted. Redriven, g's member_added is applied though its
// subjectseq is below the group's latest (it is another member's change),
// and h's is not (the group is gone).
func TestJavaScriptReceiverAfterARedrive(t *testing.T) {
	node, dir := jsReceiverExample(t)
	r := startJSReceiver(t, node, dir)
	target, err := url.Parse(r.url)
	if err != nil {
		t.Fatal(err)
	}
	forward := httputil.NewSingleHostReverseProxy(target)
	var refusing atomic.Bool
	refusing.Store(true)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if refusing.Load() && req.Header.Get("Ce-Type") == "io.scimrelay.group.member_added" && strings.TrimLeft(req.Header.Get("Ce-Subjectseq"), "0") == "2" {
			http.Error(w, "refused once", http.StatusBadRequest)
			return
		}
		forward.ServeHTTP(w, req)
	}))
	t.Cleanup(front.Close)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", front.URL+"/scim-events", nil)
	p := startRelay(t, cfg, roleAll)

	const user = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q}`
	const group = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":%q}`
	const patch = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[%s]}`
	ann := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(user, "ann@example.com")).want(t, 201).str("id")
	bob := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(user, "bob@example.com")).want(t, 201).str("id")
	g := p.scim("acme", acmeToken, "POST", "/Groups", fmt.Sprintf(group, "g")).want(t, 201).str("id")
	h := p.scim("acme", acmeToken, "POST", "/Groups", fmt.Sprintf(group, "h")).want(t, 201).str("id")
	add := func(group, member string) {
		p.scim("acme", acmeToken, "PATCH", "/Groups/"+group, fmt.Sprintf(patch, fmt.Sprintf(`{"op":"add","path":"members","value":[{"value":%q}]}`, member))).want(t, 204)
	}
	add(g, ann)                                                                                                                                              // subjectseq 2: dead-lettered
	add(h, ann)                                                                                                                                              // 2: dead-lettered
	add(g, bob)                                                                                                                                              // 3
	p.scim("acme", acmeToken, "PATCH", "/Groups/"+g, fmt.Sprintf(patch, fmt.Sprintf(`{"op":"remove","path":"members[value eq \"%s\"]"}`, bob))).want(t, 204) // 4
	p.scim("acme", acmeToken, "DELETE", "/Groups/"+h, "").want(t, 204)                                                                                       // 3

	// What the receiver applied of each group: type#subjectseq, in order.
	appliedOf := func(id string) []string {
		var out []string
		for _, e := range r.applied(t) {
			if e.Subject == "Groups/"+id {
				out = append(out, strings.TrimPrefix(e.Type, "io.scimrelay.")+"#"+strings.TrimLeft(e.Subjectseq, "0"))
			}
		}
		return out
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := appliedOf(g); len(got) != 3 {
			return fmt.Errorf("g: applied %v before the redrive, want 3", got)
		}
		if got := appliedOf(h); len(got) != 2 {
			return fmt.Errorf("h: applied %v before the redrive, want 2", got)
		}
		return nil
	})
	refusing.Store(false)
	if code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", cliConfig(t, p, adminSecret)); code != exitOK || !strings.Contains(out, "delivered 2") {
		t.Fatalf("redrive: %d %s %s", code, out, stderr)
	}
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got, want := appliedOf(g), []string{"group.created#1", "group.member_added#3", "group.member_removed#4", "group.member_added#2"}; !slices.Equal(got, want) {
			return fmt.Errorf("g: applied %v, want %v", got, want)
		}
		return nil
	})
	if got, want := appliedOf(h), []string{"group.created#1", "group.deleted#3"}; !slices.Equal(got, want) {
		t.Errorf("h: applied %v, want %v", got, want)
	}
	if s := r.stderr.String(); s != "" {
		t.Errorf("the receiver refused deliveries:\n%s", s)
	}
}

// TestJavaScriptReceiverOutlivesARequestCutShort: README, the JavaScript
// receiver "takes a sink's deliveries" and answers 401, 400 or 413 for
// what it refuses. A request whose sender goes away while it sends the
// body (the sink's timeout, a relay stopping, any client on the network)
// must cost that request alone: the relay's next deliveries are applied.
// The request here is cut short by closing its connection mid-body, as an
// HTTP client whose timeout expires does.
func TestJavaScriptReceiverOutlivesARequestCutShort(t *testing.T) {
	node, dir := jsReceiverExample(t)
	r := startJSReceiver(t, node, dir)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", r.url+"/scim-events", nil)
	p := startRelay(t, cfg, roleAll)

	// A POST whose sender goes away after part of its body, as an HTTP
	// client does when its timeout cuts the request short.
	c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "POST /scim-events HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{\"tenant\":\"acme\",\"resource\":{\"userName\":\""); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()

	const user = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann@example.com"}`
	p.scim("acme", acmeToken, "POST", "/Users", user).want(t, 201)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-r.exited:
			t.Fatalf("node receive.mjs exited after a request cut short (%v), and takes no delivery more:\n%s", r.err, r.stderr.String())
		default:
		}
		for _, e := range r.applied(t) {
			if e.UserName == "ann@example.com" {
				return nil
			}
		}
		return fmt.Errorf("applied %v; stderr %q", r.applied(t), strings.TrimSpace(r.stderr.String()))
	})
}
