// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"testing"

	. "github.com/scimrelay/scimrelay/scim"
)

// TestBulkKeepsEachResourcesPatchesInOrder: random requests of POSTs
// whose references make no circle, and PATCHes of the users and groups
// they create, in random order: every operation succeeds and each resource
// ends with the value of its PATCH sent last (RFC 7644 §3.7: the same
// result as in the order sent). BULKSEED, BULKITERS and BULKBIG (larger
// requests) run it longer; a review ran 20,000 at each size. It found the
// stale and the foreseen waits TestBulkPostsWaitingByTypeAreNotForeseen
// keeps.
func TestBulkKeepsEachResourcesPatchesInOrder(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	seed := int64(1)
	if s := os.Getenv("BULKSEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	iters := 1000
	if s := os.Getenv("BULKITERS"); s != "" {
		iters, _ = strconv.Atoi(s)
	}
	big := 0
	if s := os.Getenv("BULKBIG"); s != "" {
		big, _ = strconv.Atoi(s)
	}
	for it := 0; it < iters; it++ {
		rng := rand.New(rand.NewSource(seed + int64(it)))
		nu, ng := 1+rng.Intn(3+big), rng.Intn(2+big)
		// rank: references from a POST go only to a lower rank
		rank := rng.Perm(nu)
		var ops []string
		for u := 0; u < nu; u++ {
			var lower []int
			for v := 0; v < nu; v++ {
				if rank[v] < rank[u] {
					lower = append(lower, v)
				}
			}
			if len(lower) > 0 && rng.Intn(2) == 0 {
				m := lower[rng.Intn(len(lower))]
				ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Users","bulkId":"u%d","data":{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","%s"],"userName":"u%d","%s":{"manager":{"value":"bulkId:u%d"}}}}`, u, ent, u, ent, m))
			} else {
				ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Users","bulkId":"u%d","data":{%s,"userName":"u%d"}}`, u, userSchemas, u))
			}
		}
		for g := 0; g < ng; g++ {
			mem := ""
			if rng.Intn(2) == 0 {
				mem = fmt.Sprintf(`,"members":[{"value":"bulkId:u%d"}]`, rng.Intn(nu))
			}
			ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Groups","bulkId":"g%d","data":{%s,"displayName":"g%d"%s}}`, g, groupSchemas, g, mem))
		}
		type pt struct {
			target string
			val    string
		}
		var patches []pt
		np := 1 + rng.Intn(5+2*big)
		for k := 0; k < np; k++ {
			val := fmt.Sprintf("t%d", k)
			if ng > 0 && rng.Intn(3) == 0 {
				g := rng.Intn(ng)
				extra := ""
				if rng.Intn(2) == 0 {
					extra = fmt.Sprintf(`,{"op":"add","path":"members","value":[{"value":"bulkId:u%d"}]}`, rng.Intn(nu))
				}
				ops = append(ops, fmt.Sprintf(`{"method":"PATCH","path":"/Groups/bulkId:g%d","data":{%s,"Operations":[{"op":"replace","path":"externalId","value":"%s"}%s]}}`, g, patchSchemas, val, extra))
				patches = append(patches, pt{fmt.Sprintf("g%d", g), val})
				continue
			}
			u := rng.Intn(nu)
			extra := ""
			if rng.Intn(2) == 0 {
				extra = fmt.Sprintf(`,{"op":"replace","path":"%s:manager","value":{"value":"bulkId:u%d"}}`, ent, rng.Intn(nu))
			}
			ops = append(ops, fmt.Sprintf(`{"method":"PATCH","path":"/Users/bulkId:u%d","data":{%s,"Operations":[{"op":"replace","path":"title","value":"%s"}%s]}}`, u, patchSchemas, val, extra))
			patches = append(patches, pt{fmt.Sprintf("u%d", u), val})
		}
		// shuffle keeping the PATCHes' relative order (their values are t0..)
		rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
		// re-number PATCH values in the order sent
		last := map[string]string{}
		n := 0
		for i, o := range ops {
			if strings.Contains(o, `"method":"PATCH"`) {
				for k, p := range patches {
					if strings.Contains(o, `"value":"`+p.val+`"`) && p.val != "" {
						nv := fmt.Sprintf("s%d", n)
						ops[i] = strings.Replace(o, `"value":"`+p.val+`"`, `"value":"`+nv+`"`, 1)
						last[p.target] = nv
						patches[k].val = ""
						n++
						break
					}
				}
			}
		}
		fail := false
		t.Run(strconv.Itoa(it), func(t *testing.T) {
			ts := newTestServer(t, Options{})
			body := bulkBody("", strings.Join(ops, ",\n"))
			a := ts.bulk(t, body)
			bad := false
			for _, o := range a.Operations {
				if st, _ := strconv.Atoi(o.Status); st >= 400 {
					bad = true
				}
			}
			for target, v := range last {
				var q string
				if target[0] == 'u' {
					q = "/Users?filter=userName%20eq%20%22" + target + "%22"
				} else {
					q = "/Groups?filter=displayName%20eq%20%22" + target + "%22"
				}
				var lr struct{ Resources []map[string]any }
				json.Unmarshal(ts.do("GET", q, "").want(t, 200).body, &lr)
				got := ""
				if len(lr.Resources) == 1 {
					if target[0] == 'u' {
						got, _ = lr.Resources[0]["title"].(string)
					} else {
						got, _ = lr.Resources[0]["externalId"].(string)
					}
				}
				if got != v {
					bad = true
					t.Errorf("iter %d: %s ends with %q, want %q", it, target, got, v)
				}
			}
			if bad {
				t.Errorf("iter %d: statuses %s\n%s", it, a.statuses(), body)
				fail = true
			}
		})
		if fail {
			return
		}
	}
}
