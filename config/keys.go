// SPDX-License-Identifier: Apache-2.0

package config

import (
	"reflect"
	"strings"
)

// Keys lists every key relay.yaml can hold, as the field paths problems
// name, in the order of the Config type: "listen", "nats.tls.ca_file",
// "tenants[].name", "sinks[].batch.max_wait". A list of entries is written
// "[]"; a list of values ("sinks[].retry") and a mapping of names to values
// ("sinks[].headers") are one key each. It is derived from the types the
// decoder reads, so that a test can hold every key to a rule (documented
// in relay.yaml, checked when wrong) and a new key cannot escape it.
func Keys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			path := joinPath(prefix, name)
			ft := t.Field(i).Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft.Kind() == reflect.Struct:
				walk(ft, path)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), path+"[]")
			default:
				keys = append(keys, path)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}
