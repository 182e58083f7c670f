package relay

import (
	"bytes"
	"encoding/binary"
	"fmt"
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
}

const recordHeader = 16

func encodeRecord(rec *record) []byte {
	b := make([]byte, recordHeader, recordHeader+512)
	binary.BigEndian.PutUint64(b[0:8], rec.subjectSeq)
	binary.BigEndian.PutUint64(b[8:16], rec.version)
	return rec.res.AppendJSON(b)
}

func decodeRecord(rt *scim.ResourceType, v []byte) (*record, error) {
	if len(v) < recordHeader {
		return nil, fmt.Errorf("stored %s record is %d bytes, shorter than its header", rt.Name, len(v))
	}
	res, err := scim.UnmarshalResource(rt, v[recordHeader:])
	if err != nil {
		return nil, err
	}
	return &record{
		subjectSeq: binary.BigEndian.Uint64(v[0:8]),
		version:    binary.BigEndian.Uint64(v[8:16]),
		res:        res,
	}, nil
}

func versionTag(v uint64) string { return `W/"` + strconv.FormatUint(v, 10) + `"` }

// resourceBucket returns the bucket that stores resources of rt.
func resourceBucket(tb *bolt.Bucket, rt *scim.ResourceType) *bolt.Bucket {
	if rt == scim.GroupResourceType {
		return tb.Bucket(bucketGroups)
	}
	return tb.Bucket(bucketUsers)
}

// getRecord loads a resource; nil when there is none.
func getRecord(tb *bolt.Bucket, rt *scim.ResourceType, id string) (*record, error) {
	v := resourceBucket(tb, rt).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	return decodeRecord(rt, v)
}

func putRecord(tb *bolt.Bucket, rec *record) error {
	return resourceBucket(tb, rec.res.Type).Put([]byte(rec.res.ID()), encodeRecord(rec))
}

// ixKey is an index key prefix: the value with its length in front, so that
// no indexed value is a prefix of another.
func ixKey(value string) []byte {
	b := binary.AppendUvarint(make([]byte, 0, len(value)+40), uint64(len(value)))
	return append(b, value...)
}

type indexEntry struct {
	bucket []byte
	key    []byte
}

// indexEntries lists the secondary index keys of a resource.
func indexEntries(r *scim.Resource) []indexEntry {
	id := r.ID()
	entry := func(bucket []byte, value string) indexEntry {
		return indexEntry{bucket: bucket, key: append(ixKey(value), id...)}
	}
	var out []indexEntry
	if r.Type == scim.GroupResourceType {
		out = append(out, entry(ixDisplayName, strings.ToLower(r.String("displayName"))))
		if ext := r.ExternalID(); ext != "" {
			out = append(out, entry(ixGroupExt, ext))
		}
		return out
	}
	out = append(out, entry(ixUserName, strings.ToLower(r.String("userName"))))
	if ext := r.ExternalID(); ext != "" {
		out = append(out, entry(ixUserExt, ext))
	}
	seen := map[string]bool{}
	for _, e := range r.Emails() {
		e = strings.ToLower(e)
		if !seen[e] {
			seen[e] = true
			out = append(out, entry(ixEmail, e))
		}
	}
	if we := r.WorkEmail(); we != "" {
		out = append(out, entry(ixWorkEmail, strings.ToLower(we)))
	}
	return out
}

// reindex replaces a resource's index entries old by new, touching only the
// keys that differ.
func reindex(tb *bolt.Bucket, old, new []indexEntry) error {
	has := func(list []indexEntry, e indexEntry) bool {
		for _, x := range list {
			if bytes.Equal(x.bucket, e.bucket) && bytes.Equal(x.key, e.key) {
				return true
			}
		}
		return false
	}
	for _, e := range old {
		if !has(new, e) {
			if err := tb.Bucket(e.bucket).Delete(e.key); err != nil {
				return err
			}
		}
	}
	for _, e := range new {
		if !has(old, e) {
			if err := tb.Bucket(e.bucket).Put(e.key, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// lookupIDs returns the ids indexed under value, in id order.
func lookupIDs(b *bolt.Bucket, value string) []string {
	prefix := ixKey(value)
	var out []string
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}

// memberKey is groupID ‖ 0 ‖ memberID (and the reverse for memberof).
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
