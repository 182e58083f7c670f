// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/scimrelay/scimrelay/scim"
)

// FuzzDecodeRecord: stored bytes of any shape give a record or an error,
// never a panic, and a record decodes to what it encodes.
func FuzzDecodeRecord(f *testing.F) {
	rec := &record{subjectSeq: 3, version: 2, res: &scim.Resource{Type: scim.UserResourceType, Attrs: map[string]any{"id": "x", "userName": "ann"}}}
	f.Add(encodeRecord(rec))
	f.Add([]byte{})
	f.Add(make([]byte, recordHeader))
	f.Add(append(make([]byte, recordHeader), `{"id":"g","displayName":"G","members":[{"value":"u"}]}`...))
	f.Add(append(make([]byte, recordHeader), `{"id":7}`...))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, rt := range []*scim.ResourceType{scim.UserResourceType, scim.GroupResourceType} {
			rec, err := decodeRecord(rt, data)
			if err != nil {
				continue
			}
			again, err := decodeRecord(rt, encodeRecord(rec))
			if err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
			if again.subjectSeq != rec.subjectSeq || again.version != rec.version ||
				!bytes.Equal(again.res.AppendJSON(nil), rec.res.AppendJSON(nil)) {
				t.Fatalf("round trip changed the record")
			}
		}
	})
}

// FuzzIxKey: index keys sort like their values, and no value's key with an
// id after it can be mistaken for another value's.
func FuzzIxKey(f *testing.F) {
	for _, p := range [][2]string{{"a", "a\x00"}, {"a", "ab"}, {"a\x00\x00", "a\x00"}, {"", "\x00"}, {"\xff", "\x00\xff"}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ka, kb := ixKey(a), ixKey(b)
		if got, want := bytes.Compare(ka, kb), strings.Compare(a, b); got != want {
			t.Fatalf("ixKey order %d, value order %d for %q and %q", got, want, a, b)
		}
		const id = "0190f0e0-0000-7000-8000-000000000000"
		if a != b && bytes.HasPrefix(append(ka, id...), kb) {
			t.Fatalf("the key of %q (with an id) starts with the key of %q", a, b)
		}
	})
}

// FuzzParseRequirement: any configured required attribute gives a
// requirement or an error naming it, never a panic.
func FuzzParseRequirement(f *testing.F) {
	for _, s := range []string{"emails", "name.givenName", scim.EnterpriseUserSchema + ":employeeNumber", scim.EnterpriseUserSchema, "emails pr or userName", "", "urn:x:y:z", "a.b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		req, err := parseRequirement(s)
		if err != nil {
			if !strings.Contains(err.Error(), "required attribute") {
				t.Fatalf("error %q does not say which setting", err)
			}
			return
		}
		if req.path.Name == "" || req.present == nil {
			t.Fatalf("requirement %+v from %q", req, s)
		}
	})
}

// FuzzListFilter: whatever filter parses, List gives the same answer as
// evaluating it on every resource, whether an index or a scan answers.
func FuzzListFilter(f *testing.F) {
	s, _, _ := openStore(f)
	var uids []string
	for i := 0; i < 12; i++ {
		r := create(f, s, "acme", user(f, fmt.Sprintf(`"userName":"User%d@x.com","externalId":"e%d","displayName":"D%d","active":%v,
			"emails":[{"value":"u%d@X.com","type":"work"},{"value":"shared@x.com","type":"home","primary":true}]`, i, i%3, i%2, i%2 == 0, i)))
		uids = append(uids, r.ID())
	}
	g := create(f, s, "acme", group(f, fmt.Sprintf(`"displayName":"Sales","externalId":"g","members":[{"value":%q},{"value":%q}]`, uids[1], uids[2])))
	create(f, s, "acme", group(f, fmt.Sprintf(`"displayName":"Ops","externalId":"g","members":[{"value":%q},{"value":%q}]`, uids[2], g.ID())))
	for _, seed := range []string{
		`userName eq "user3@x.com"`, `externalId eq "e1" and active eq true`, `emails.value eq "SHARED@x.com"`,
		`emails[type eq "work"].value eq "u4@x.com"`, `userName eq "a" or externalId eq "e2"`, `not (userName eq "User1@x.com")`,
		`displayName eq "sales"`, `members.value eq "` + uids[2] + `"`, `members[value eq "` + g.ID() + `"]`, `id eq "` + uids[5] + `"`,
		`displayName co "s" and externalId eq "g"`, `userName sw "user1"`, `groups.value eq "` + g.ID() + `"`,
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, fs string, users bool) {
		rt := scim.GroupResourceType
		if users {
			rt = scim.UserResourceType
		}
		filter, err := scim.ParseFilter(rt, fs)
		if err != nil {
			return
		}
		got, err := s.List(ctx, "acme", rt, scim.Query{Filter: filter, StartIndex: 1, Count: 1000})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		want := referenceList(t, s, rt, filter)
		if got.Total != len(want) || !slices.Equal(ids(got.Resources), want) {
			t.Fatalf("%s: List gives %v (total %d), evaluating every resource gives %v", fs, ids(got.Resources), got.Total, want)
		}
	})
}

// cardSeeds are stored resources whose cards readCard and cardOf must
// agree on: Entra's user, names and emails missing, of the wrong type,
// repeated, escaped, and several emails in every order of primary and work.
var cardSeeds = []string{
	`{"id":"u1","userName":"ann@example.com","externalId":"x1","displayName":"Ann","emails":[{"primary":true,"type":"work","value":"ann@example.com"}],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D"}}`,
	`{"id":"u2","userName":"bob"}`,
	`{"id":"u3","userName":7,"displayName":null,"externalId":["x"],"emails":"bob@x"}`,
	`{"id":"u4","userName":"a","userName":"b","displayName":"first","displayName":"second"}`,
	`{"id":"u5","userName":"\u00e9l\u00e8ve \"q\" \\ \ud83d\ude00","emails":[{"value":"h@x","type":"home"},{"value":"w@x","type":"WORK"},{"value":"p@x","primary":true}]}`,
	`{"id":"u6","emails":[{"value":"w1@x","type":"work"},{"value":"w2@x","type":"work"}]}`,
	`{"id":"u7","emails":[{"value":"","primary":true},{"value":"w@x","type":"work"}]}`,
	`{"id":"u8","emails":[{"value":"p@x","primary":"true"},{"value":"q@x","primary":false,"type":"other"}]}`,
	`{"id":"u9","emails":[7,null,{"value":3,"primary":true},{"value":"v@x","type":"work","type":"home"}]}`,
	`{"id":"u10","emails":[{"value":"a@x","value":"b@x","primary":true}]}`,
	`{"id":"u11","Emails":[{"value":"a@x","primary":true}],"USERNAME":"upper"}`,
	`{"id":"g1","displayName":"Group One","externalId":"gx","members":[{"value":"u1"}]}`,
}

// TestCardMatchesDecodedRecord: the card read from a record's JSON
// without decoding it is the card of the decoded resource.
func TestCardMatchesDecodedRecord(t *testing.T) {
	for _, seed := range cardSeeds {
		checkCard(t, []byte(seed))
	}
}

// FuzzCard: for any JSON object, readCard agrees with cardOf.
func FuzzCard(f *testing.F) {
	for _, seed := range cardSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(checkCard)
}

func checkCard(t *testing.T, data []byte) {
	for _, rt := range []*scim.ResourceType{scim.UserResourceType, scim.GroupResourceType} {
		got, err := readCard(rt, data)
		res, derr := scim.UnmarshalResource(rt, data)
		if derr != nil {
			continue // readCard may refuse it too, or read what gjson accepts
		}
		if err != nil {
			t.Fatalf("%s %s: readCard: %v; the resource decodes", rt.Name, data, err)
		}
		if want := cardOf(res); got != want {
			t.Fatalf("%s %s:\nreadCard %+v\ncardOf   %+v", rt.Name, data, got, want)
		}
	}
}
