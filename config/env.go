// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"fmt"
	"strings"
)

// unsetError is a reference to a variable that is not set (or, for
// ${NAME:?message}, empty); lenient readers expand it to "".
type unsetError struct{ msg string }

func (e *unsetError) Error() string { return e.msg }

// expandEnv expands references to environment variables in a value:
//
//	${NAME}          the variable; an error if it is not set
//	${NAME:-default} the variable, or default when it is unset or empty
//	${NAME:?message} the variable; an error saying message when it is unset or empty
//	$$               a literal $
//
// Any other $ stays as it is. When strict is false, an unset variable
// expands to "" instead of being an error.
func expandEnv(s string, lookupEnv func(string) (string, bool), strict bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				// Not quoting s: it may be a secret that holds "${".
				return "", errors.New("a ${ without its } (write $$ for a literal $)")
			}
			if strings.Contains(s[i+2:i+2+end], "${") {
				return "", errors.New("a ${...} inside another one's default; defaults are plain text (write $$ for a literal $)")
			}
			v, err := reference(s[i+2:i+2+end], lookupEnv)
			var unset *unsetError
			if err != nil && (strict || !errors.As(err, &unset)) {
				return "", err
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// reference resolves the inside of one ${...}.
func reference(expr string, lookupEnv func(string) (string, bool)) (string, error) {
	name, op, arg := expr, "", ""
	if i := strings.IndexByte(expr, ':'); i >= 0 && i+1 < len(expr) && (expr[i+1] == '-' || expr[i+1] == '?') {
		name, op, arg = expr[:i], expr[i:i+2], expr[i+2:]
	}
	if !validEnvName(name) {
		// Not quoting expr: "${" may be part of a secret.
		return "", errors.New("a ${...} that is not a valid environment variable reference (want ${NAME}, ${NAME:-default} or ${NAME:?message}; write $$ for a literal $)")
	}
	v, ok := lookupEnv(name)
	switch op {
	case ":-":
		if v == "" {
			v = arg
		}
		return v, nil
	case ":?":
		if v == "" {
			if arg == "" {
				arg = "must be set and not empty"
			}
			return "", &unsetError{fmt.Sprintf("${%s}: %s", name, arg)}
		}
		return v, nil
	}
	if !ok {
		return "", &unsetError{fmt.Sprintf("${%s} is not set; set it, or write ${%s:-} to allow it to be empty", name, name)}
	}
	return v, nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}
