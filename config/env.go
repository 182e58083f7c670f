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
// A $ before a letter or _ ($NAME, as a shell writes a variable) is an
// error, in a default too: taken as text, "token: $ADMIN_TOKEN" made the
// token that text and refused the variable's value. Any other $ (before
// a digit, a space, punctuation or the end) stays as it is. When strict is
// false, an unset variable expands to "" instead of being an error.
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
			if nameStart(s[i+1]) {
				return "", shellVariable(s, i)
			}
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// EnvNames returns the environment variables s refers to with ${...}, in
// order, as relay.yaml reads them; none where s is not a valid value.
func EnvNames(s string) []string {
	var names []string
	if _, err := expandEnv(s, func(name string) (string, bool) {
		names = append(names, name)
		return "", false
	}, false); err != nil {
		return nil
	}
	return names
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
	if op == ":-" {
		// A default holds no "${" (expandEnv refuses one), so reading it
		// as a value reads $$ and refuses $NAME, and nothing else.
		def, err := expandEnv(arg, lookupEnv, true)
		if err != nil {
			// Not quoting arg: it may be a secret's fallback.
			return "", fmt.Errorf("${%s:-...}: a $ before a letter or _ in a default looks like a shell variable; a default is plain text and cannot refer to a variable (write $$ for a literal $)", name)
		}
		arg = def
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

// shellVariable is the error for the $ at s[i], which a letter or _
// follows. It names the variable when what follows looks like one, in
// capitals after the start or a separator ("$ADMIN_TOKEN",
// "https://$HOST/"); otherwise the $ may sit inside a secret
// ("pa$sword"), whose text a problem must not show.
func shellVariable(s string, i int) error {
	end := i + 1
	for end < len(s) && nameByte(s[end]) {
		end++
	}
	name := s[i+1 : end]
	if (i == 0 || !nameByte(s[i-1])) && strings.ToUpper(name) == name {
		return fmt.Errorf("$%s looks like a shell variable; write ${%s} to expand it, or $$ for a literal $", name, name)
	}
	return errors.New("a $ before a letter or _ looks like a shell variable; write ${NAME} to expand one, or $$ for a literal $")
}

// nameStart reports whether c can begin an environment variable's name,
// and nameByte whether it can be part of one.
func nameStart(c byte) bool { return c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
func nameByte(c byte) bool  { return nameStart(c) || c >= '0' && c <= '9' }

func validEnvName(s string) bool {
	if s == "" || !nameStart(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
}
