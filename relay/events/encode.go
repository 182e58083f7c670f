// SPDX-License-Identifier: Apache-2.0

package events

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// Encoding an event once. The relay writes every event as the NATS message
// it publishes (binary content mode: the headers and data ToMsg writes for
// the event it decodes to), so that nothing between the outbox and the
// stream encodes it again. The encoding happens before the write transaction; the two
// numbers only the transaction knows, the tenant's sequence and the
// resource's subjectseq, are fixed-width in the header (20 digits), so the
// transaction writes them in place (Draft.SetSequences).
//
// A Message's stored form (Message.Append, ParseMessage) is a tag byte,
// the subject and the NATS header block (each preceded by its length as a
// uvarint), then the data. The header block is NATS's own wire form
// ("NATS/1.0\r\n", "name: value\r\n" lines, "\r\n").

// messageTag starts a stored message. A structured CloudEvent in JSON, what
// earlier releases stored, starts with '{'.
const messageTag = 0x01

// Message is an event encoded as the NATS message the relay publishes.
type Message struct {
	Subject string
	// Header is the NATS header block in wire form.
	Header []byte
	Data   []byte
}

// Draft is an encoded event whose sequence numbers are not set yet. Its
// bytes are the stored form of the message (Row).
type Draft struct {
	id       string
	row      []byte
	seqAt    int // offset in row of the 20 digits of ce-sequence
	subSeqAt int // of ce-subjectseq
}

// ID returns the event's id (also its Nats-Msg-Id).
func (d *Draft) ID() string { return d.id }

// SetSequences writes the tenant sequence and the subjectseq into the
// encoded message.
func (d *Draft) SetSequences(seq, subjectSeq uint64) {
	putSeq(d.row[d.seqAt:d.seqAt+seqWidth], seq)
	putSeq(d.row[d.subSeqAt:d.subSeqAt+seqWidth], subjectSeq)
}

// Row returns the stored form of the message. The caller must not change
// it, nor call SetSequences again while a store still holds it.
func (d *Draft) Row() []byte { return d.row }

// putSeq writes n as 20 zero-padded decimal digits into b.
func putSeq(b []byte, n uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
}

// placeholderSeq holds the place of a sequence number until SetSequences.
var placeholderSeq = strings.Repeat("0", seqWidth)

// extensionName is what a CloudEvents attribute name may be: lower-case
// letters and digits, at most 20 of them.
func extensionName(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// reservedAttributes are the attributes Encode writes itself.
var reservedAttributes = []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data", ExtTenant, ExtSequence, ExtSubjectSeq}

// Encode builds the message of an event, with a fresh UUIDv7 id. It is
// the only builder of events: New decodes what it writes. Sequence numbers
// in m are ignored: set them with SetSequences.
func Encode(m Meta, d Data) (*Draft, error) {
	if err := m.check(d); err != nil {
		return nil, err
	}
	if err := checkExtensions(m.Extensions); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("generating an event id: %w", err)
	}
	dr := &Draft{id: id.String()}
	subject := Subject(m.Tenant, m.Action, m.ResourceID)
	data := d.appendJSON(make([]byte, 0, 256+len(d.Resource)))

	h := make([]byte, 0, 512)
	h = append(h, "NATS/1.0\r\n"...)
	h = appendHeader(h, headerPrefix+"specversion", "1.0")
	h = appendHeader(h, headerPrefix+"id", dr.id)
	h = appendHeader(h, headerPrefix+"source", strings.TrimRight(m.BaseURL, "/")+"/scim/v2/"+m.Tenant)
	h = appendHeader(h, headerPrefix+"type", m.Action.Type())
	h = appendHeader(h, headerPrefix+"subject", subjectOf(m.Action, m.ResourceID))
	h = appendHeader(h, headerPrefix+"time", m.Time.UTC().Format(time.RFC3339Nano))
	h = appendHeader(h, headerPrefix+ExtTenant, m.Tenant)
	h = appendHeader(h, headerPrefix+ExtSequence, placeholderSeq)
	seqAt := len(h) - len(placeholderSeq) - 2
	h = appendHeader(h, headerPrefix+ExtSubjectSeq, placeholderSeq)
	subSeqAt := len(h) - len(placeholderSeq) - 2
	for _, name := range slices.Sorted(maps.Keys(m.Extensions)) {
		h = appendHeader(h, headerPrefix+name, m.Extensions[name])
	}
	h = appendHeader(h, headerContentType, event.ApplicationJSON)
	h = appendHeader(h, nats.MsgIdHdr, dr.id)
	h = append(h, "\r\n"...)

	row := Message{Subject: subject, Header: h, Data: data}.Append(make([]byte, 0, 1+2*binary.MaxVarintLen32+len(subject)+len(h)+len(data)))
	headerAt := len(row) - len(data) - len(h)
	dr.row, dr.seqAt, dr.subSeqAt = row, headerAt+seqAt, headerAt+subSeqAt
	return dr, nil
}

// checkExtensions refuses extension attributes that are not CloudEvents
// names, that Encode writes itself, or whose values cannot be a header.
func checkExtensions(ext map[string]string) error {
	var errs []error
	for name, v := range ext {
		switch {
		case !extensionName(name):
			errs = append(errs, fmt.Errorf("extension %q: a CloudEvents attribute name is 1 to 20 lower-case letters or digits", name))
		case slices.Contains(reservedAttributes, name):
			errs = append(errs, fmt.Errorf("extension %q is an attribute the relay sets itself", name))
		case strings.ContainsAny(v, "\r\n") || !utf8.ValidString(v):
			errs = append(errs, fmt.Errorf("extension %q: the value must be UTF-8 without line breaks", name))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("building event: %w", errors.Join(errs...))
	}
	return nil
}

func appendHeader(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ':', ' ')
	b = append(b, value...)
	return append(b, '\r', '\n')
}

// Append appends the message's stored form to b.
func (m Message) Append(b []byte) []byte {
	b = append(b, messageTag)
	b = binary.AppendUvarint(b, uint64(len(m.Subject)))
	b = append(b, m.Subject...)
	b = binary.AppendUvarint(b, uint64(len(m.Header)))
	b = append(b, m.Header...)
	return append(b, m.Data...)
}

// IsMessage reports whether stored bytes are a Message's stored form (and
// not an earlier release's structured JSON).
func IsMessage(b []byte) bool { return len(b) > 0 && b[0] == messageTag }

// ErrBadMessage is wrapped by every error of ParseMessage.
var ErrBadMessage = errors.New("not a stored event message")

// ParseMessage reads a Message's stored form. The Message refers to b.
func ParseMessage(b []byte) (Message, error) {
	if !IsMessage(b) {
		return Message{}, fmt.Errorf("%w: it does not start with the tag byte", ErrBadMessage)
	}
	subject, rest, err := storedField(b[1:], "subject")
	if err != nil {
		return Message{}, err
	}
	header, rest, err := storedField(rest, "header")
	if err != nil {
		return Message{}, err
	}
	return Message{Subject: string(subject), Header: header, Data: rest}, nil
}

// MessageSubject reads the subject of a Message's stored form alone, which
// is all that needs to be whole: a row the outbox quarantined is kept as
// JSON text, which replaced its bytes that are not UTF-8 (a header's
// length among them), but not those of its subject.
func MessageSubject(b []byte) (string, error) {
	if !IsMessage(b) {
		return "", fmt.Errorf("%w: it does not start with the tag byte", ErrBadMessage)
	}
	subject, _, err := storedField(b[1:], "subject")
	return string(subject), err
}

// storedField reads a field of a stored Message, its length as a uvarint
// first, and returns it and what follows it.
func storedField(b []byte, what string) (field, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, fmt.Errorf("%w: its %s is cut short", ErrBadMessage, what)
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// NATS returns the message to publish. The header block is parsed into the
// map nats.go wants; the CloudEvent is not decoded.
func (m Message) NATS() (*nats.Msg, error) {
	h, err := nats.DecodeHeadersMsg(m.Header)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrBadMessage, err)
	}
	if h.Get(nats.MsgIdHdr) == "" {
		return nil, fmt.Errorf("%w: no %s header", ErrBadMessage, nats.MsgIdHdr)
	}
	return &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}, nil
}

// --- data

// appendJSON appends the payload as JSON, the same as json.Marshal of d
// with Resource, Old and New trusted to be valid JSON (they come from the
// relay's own encoder).
func (d *Data) appendJSON(b []byte) []byte {
	b = append(b, `{"tenant":`...)
	b = appendJSONString(b, d.Tenant)
	b = append(b, `,"resourceType":`...)
	b = appendJSONString(b, d.ResourceType)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, d.ID)
	if d.ExternalID != "" {
		b = append(b, `,"externalId":`...)
		b = appendJSONString(b, d.ExternalID)
	}
	b = append(b, `,"resource":`...)
	b = appendRaw(b, d.Resource)
	if len(d.Changes) > 0 {
		b = append(b, `,"changes":[`...)
		for i, c := range d.Changes {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"path":`...)
			b = appendJSONString(b, c.Path)
			if len(c.Old) > 0 {
				b = append(b, `,"old":`...)
				b = append(b, c.Old...)
			}
			if len(c.New) > 0 {
				b = append(b, `,"new":`...)
				b = append(b, c.New...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if m := d.Member; m != nil {
		b = append(b, `,"member":{"value":`...)
		b = appendJSONString(b, m.Value)
		for _, f := range [...]struct{ name, v string }{
			{"display", m.Display}, {"type", m.Type}, {"userName", m.UserName}, {"email", m.Email},
			{"displayName", m.DisplayName}, {"externalId", m.ExternalID},
		} {
			if f.v != "" {
				b = append(b, ',', '"')
				b = append(b, f.name...)
				b = append(b, '"', ':')
				b = appendJSONString(b, f.v)
			}
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

// appendJSONString appends s as a JSON string: as it is when nothing in it
// needs escaping (the usual case), else as encoding/json writes it without
// its HTML escapes: &, < and > as they are, as the resource beside it
// writes them (README, Webhooks: binary and batch bodies write them as
// they are), not as six bytes each.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
