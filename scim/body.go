// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Request bodies: read within their size limit, and refused before they
// are parsed when a decoder would read them other than as sent (a content
// coding, a media type or charset other than SCIM's, invalid UTF-8, a lone
// surrogate escape) or they nest too deep.

// UTF8Charset reports whether a body in charset cs can be read as UTF-8:
// UTF-8 (also spelled utf8), or ASCII, which is part of it.
func UTF8Charset(cs string) bool {
	for _, name := range []string{"utf-8", "utf8", "us-ascii", "ascii"} {
		if strings.EqualFold(cs, name) {
			return true
		}
	}
	return false
}

// readBody reads a request body of at most limit bytes nesting at most
// depth levels.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, limit int64, depth int) ([]byte, error) {
	// A body in a content coding is not read: a gzip body would be refused
	// for what it is not, and a plain one sent under a coding's name taken
	// as if the name were not there. RFC 9110 §15.5.16: 415, saying in
	// Accept-Encoding what is taken.
	if coding := ContentCoding(r.Header); coding != "" {
		w.Header().Set("Accept-Encoding", "identity")
		return nil, Errorf(ErrUnsupportedMedia, "Content-Encoding %q is not supported; send the body uncompressed, without Content-Encoding", Truncate(coding, 32))
	}
	// Content-Type is one value (RFC 9110 §8.3): of two, which gives the
	// body's media type and charset is anyone's guess.
	if len(r.Header.Values("Content-Type")) > 1 {
		return nil, Errorf(ErrInvalidSyntax, "more than one Content-Type header; send exactly one")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/scim+json" && mt != "application/json") {
			return nil, Errorf(ErrUnsupportedMedia, "Content-Type must be application/scim+json or application/json, got %q", Truncate(ct, 64))
		}
		// SCIM is UTF-8 (RFC 7644 §3.8); a body in another charset
		// would be read as UTF-8 and stored wrong.
		if cs, ok := params["charset"]; ok && !UTF8Charset(cs) {
			return nil, Errorf(ErrUnsupportedMedia, "a SCIM body is UTF-8, got charset %q", Truncate(cs, 64))
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, Errorf(ErrPayloadTooLarge, "request body is larger than %d bytes", limit)
		}
		var busy *bodiesInFlight
		if errors.As(err, &busy) {
			return nil, &rateLimited{wait: time.Second, tenant: busy.tenant, bodies: true}
		}
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			// The listener's read_timeout ended the read; the client is
			// still there to be answered (the request's context is
			// cancelled by the read error all the same).
			return nil, Errorf(ErrInvalidSyntax, "the request body did not arrive within the server's read timeout")
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || r.Context().Err() != nil {
			return nil, errClientGone()
		}
		return nil, Errorf(ErrInvalidSyntax, "reading request body: %v", err)
	}
	if jsonDepth(body) > depth {
		return nil, Errorf(ErrInvalidSyntax, "request body nests deeper than %d levels", depth)
	}
	if err := CheckText(body); err != nil {
		return nil, Errorf(ErrInvalidSyntax, "request body: %v", err)
	}
	return body, nil
}

// ContentCoding returns the first content coding h's Content-Encoding
// names other than identity, "" for none: a body in one is not decoded,
// and read as if plain it would be taken under a false label.
func ContentCoding(h http.Header) string {
	for _, line := range h.Values("Content-Encoding") {
		for _, coding := range strings.Split(line, ",") {
			if coding = strings.TrimSpace(coding); coding != "" && !strings.EqualFold(coding, "identity") {
				return coding
			}
		}
	}
	return ""
}

// CheckText returns an error when a JSON decoder would read body other
// than as sent: it replaces invalid UTF-8 and an unpaired surrogate escape
// by U+FFFD, silently changing a name (and making it collide with
// others).
func CheckText(body []byte) error {
	if !utf8.Valid(body) {
		return errors.New("not valid UTF-8")
	}
	if at := loneSurrogate(body); at >= 0 {
		return fmt.Errorf("an unpaired UTF-16 surrogate escape at byte %d", at)
	}
	return nil
}

// loneSurrogate returns the offset of the first \uD800–\uDFFF escape in a
// JSON string that is not part of a surrogate pair, or -1.
func loneSurrogate(b []byte) int {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
		return rune(n), err == nil
	}
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\':
			r, ok := hex4(i)
			switch {
			case !ok:
				i++ // a one-character escape
			case utf16.IsSurrogate(r) && r < 0xDC00:
				if r2, ok := hex4(i + 6); !ok || r2 < 0xDC00 || r2 > 0xDFFF {
					return i
				}
				i += 11
			case utf16.IsSurrogate(r):
				return i
			default:
				i += 5
			}
		}
	}
	return -1
}

// jsonDepth returns how deeply the JSON text nests objects and arrays,
// without decoding it, so that a hostile body is refused before it costs more.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
