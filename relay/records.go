// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/scim"
)

// record is a stored resource with the counters kept beside it.
type record struct {
	subjectSeq uint64 // events emitted on this resource so far
	version    uint64 // meta.version is W/"<version>"
	res        *scim.Resource
	size       int // bytes of the stored value it was read from (0: not read from the file)
}

const recordHeader = 16

func encodeRecord(rec *record) []byte {
	b := make([]byte, recordHeader, recordHeader+512)
	binary.BigEndian.PutUint64(b[0:8], rec.subjectSeq)
	binary.BigEndian.PutUint64(b[8:16], rec.version)
	return rec.res.AppendJSON(b)
}

// decodeRecord reads a stored record. The bytes come from the file, but a
// damaged file must give an error naming what is wrong, never a panic.
func decodeRecord(rt *scim.ResourceType, v []byte) (*record, error) {
	if len(v) < recordHeader {
		return nil, fmt.Errorf("stored %s record is %d bytes, shorter than its header", rt.Name, len(v))
	}
	res, err := scim.UnmarshalResource(rt, v[recordHeader:])
	if err != nil {
		return nil, err
	}
	if res.ID() == "" {
		return nil, fmt.Errorf("stored %s record has no id", rt.Name)
	}
	return &record{
		subjectSeq: binary.BigEndian.Uint64(v[0:8]),
		version:    recordVersion(v),
		res:        res,
		size:       len(v),
	}, nil
}

// recordVersion is the version in a stored record's header (0 for a
// value too short to hold a header, which decodeRecord refuses).
func recordVersion(v []byte) uint64 {
	if len(v) < recordHeader {
		return 0
	}
	return binary.BigEndian.Uint64(v[8:16])
}

func versionTag(v uint64) string { return `W/"` + strconv.FormatUint(v, 10) + `"` }

// resourceBucket returns the bucket that stores resources of rt.
func resourceBucket(tb *bolt.Bucket, rt *scim.ResourceType) *bolt.Bucket {
	if rt == scim.GroupResourceType {
		return appending(tb.Bucket(bucketGroups))
	}
	return appending(tb.Bucket(bucketUsers))
}

// appendFill is how full bbolt fills a page it splits in a bucket whose new
// keys come last (UUIDv7 ids, commit numbers, timestamps). bbolt's default,
// half, suits keys that arrive in any order; with keys that only grow, a
// split page is never written again, so half of every page would stay
// empty and the file would take twice the room.
const appendFill = 0.9

// appending sets b up for keys that arrive in order (in this transaction:
// bbolt keeps the setting per bucket handle).
func appending(b *bolt.Bucket) *bolt.Bucket {
	if b != nil {
		b.FillPercent = appendFill
	}
	return b
}

// getRecord loads a resource; nil when there is none.
func getRecord(tb *bolt.Bucket, rt *scim.ResourceType, id string) (*record, error) {
	if !validKey(id) {
		return nil, nil
	}
	v := resourceBucket(tb, rt).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	rec, err := decodeRecord(rt, v)
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", rt.Name, id, err)
	}
	return rec, nil
}

func putRecord(tb *bolt.Bucket, rec *record) error {
	return putEncoded(tb, rec, encodeRecord(rec))
}

// putEncoded stores rec as value, encoded by encodeRecord before rec's
// events were numbered: it writes rec's subjectseq into the header.
func putEncoded(tb *bolt.Bucket, rec *record, value []byte) error {
	binary.BigEndian.PutUint64(value[0:8], rec.subjectSeq)
	return resourceBucket(tb, rec.res.Type).Put([]byte(rec.res.ID()), value)
}

// validKey reports whether an id taken from a request can be a key: ids this
// store issues are UUIDs, so anything empty, huge or holding the key
// separator names nothing.
func validKey(id string) bool {
	return id != "" && len(id) <= maxIndexedValue && strings.IndexByte(id, 0) < 0
}

// maxIndexedValue bounds the indexed values (userName, emails, externalId,
// displayName) so that index keys stay far below bbolt's 32 KiB key limit.
// Real values are a few dozen bytes; Entra caps userPrincipalName at 113.
const maxIndexedValue = 2048

// ixKey is the index key prefix of value: 0x00 escaped as 0x00 0xFF and a
// 0x00 0x00 terminator, so that no value's prefix is another's and keys sort
// by value.
func ixKey(value string) []byte {
	b := make([]byte, 0, len(value)+2+36)
	for i := 0; i < len(value); i++ {
		b = append(b, value[i])
		if value[i] == 0 {
			b = append(b, 0xFF)
		}
	}
	return append(b, 0, 0)
}

type indexEntry struct {
	bucket []byte
	key    []byte
}

// indexEntries lists the secondary index keys of a resource, refusing
// values too long to index.
func indexEntries(r *scim.Resource) ([]indexEntry, error) {
	id := r.ID()
	var out []indexEntry
	var tooLong error
	add := func(bucket []byte, attr, value string) {
		if len(value) > maxIndexedValue {
			if tooLong == nil {
				tooLong = scim.Errorf(scim.ErrInvalidValue, "attribute %s is %d bytes long; the limit is %d", attr, len(value), maxIndexedValue)
			}
			return
		}
		out = append(out, indexEntry{bucket: bucket, key: append(ixKey(value), id...)})
	}
	if ext := r.ExternalID(); ext != "" {
		if r.Type == scim.GroupResourceType {
			add(ixGroupExt, "externalId", ext)
		} else {
			add(ixUserExt, "externalId", ext)
		}
	}
	if r.Type == scim.GroupResourceType {
		add(ixDisplayName, "displayName", scim.Fold(r.String("displayName")))
		return out, tooLong
	}
	add(ixUserName, "userName", scim.Fold(r.String("userName")))
	// Every email, and every work email, once under its folded value.
	addEmails := func(bucket []byte, values []string) {
		seen := make(map[string]bool, len(values))
		for _, v := range values {
			if v = scim.Fold(v); !seen[v] {
				seen[v] = true
				add(bucket, "emails.value", v)
			}
		}
	}
	addEmails(ixEmail, r.Emails())
	addEmails(ixWorkEmail, r.WorkEmails())
	return out, tooLong
}

// reindex replaces a resource's index entries old by new, touching only the
// keys that differ.
func reindex(tb *bolt.Bucket, old, new []indexEntry) error {
	inOld, inNew := entrySet(old), entrySet(new)
	for _, e := range old {
		if !inNew(e) {
			if err := tb.Bucket(e.bucket).Delete(e.key); err != nil {
				return err
			}
		}
	}
	for _, e := range new {
		if !inOld(e) {
			if err := tb.Bucket(e.bucket).Put(e.key, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// entrySet reports whether list holds an entry. A user has an entry per
// email, so past a few entries the list is put in a set: scanning it for
// each entry of the other made a change to a user of 40,000 emails take
// 14 s, holding the committer every tenant's writes wait for.
func entrySet(list []indexEntry) func(indexEntry) bool {
	if len(list) <= 16 {
		return func(e indexEntry) bool {
			return slices.ContainsFunc(list, func(x indexEntry) bool {
				return bytes.Equal(x.bucket, e.bucket) && bytes.Equal(x.key, e.key)
			})
		}
	}
	type entry struct{ bucket, key string }
	set := make(map[entry]bool, len(list))
	for _, e := range list {
		set[entry{string(e.bucket), string(e.key)}] = true
	}
	return func(e indexEntry) bool { return set[entry{string(e.bucket), string(e.key)}] }
}

// lookupIDs returns up to limit ids indexed under value (limit < 0: all),
// in id order.
func lookupIDs(b *bolt.Bucket, value string, limit int) []string {
	if len(value) > maxIndexedValue {
		return nil // nothing that long was ever indexed
	}
	return scanIDs(b, ixKey(value), limit)
}

// scanIDs returns up to limit key suffixes after prefix (limit < 0: all), in order.
func scanIDs(b *bolt.Bucket, prefix []byte, limit int) []string {
	var out []string
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && (limit < 0 || len(out) < limit); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}

// memberKey is groupID ‖ 0 ‖ memberID (and memberID ‖ 0 ‖ groupID in memberof).
func memberKey(a, b string) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

// memberRecord is the value of a membership key.
type memberRecord struct {
	Display string `json:"d,omitempty"`
	Type    string `json:"t"`
}
