// Package routingkey validates AMQP routing keys and the allow-lists that restrict which routing keys
// a message's Route may name for the RabbitMQ sink. It does not depend on an AMQP client, so
// configuration loaders can check keys and patterns without pulling one in.
package routingkey

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest routing key AMQP 0-9-1 carries (a short string).
const MaxLen = 255

// Validate reports why k is not a routing key the sink may publish with: at most [MaxLen] bytes of
// valid UTF-8 without control characters. The empty key is valid (a fanout exchange ignores the key).
func Validate(k string) error {
	if len(k) > MaxLen {
		return fmt.Errorf("routing key of %d bytes is over AMQP's limit of %d", len(k), MaxLen)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("routing key %q is not valid UTF-8", quoteShort(k))
	}
	for i, r := range k {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f {
			return fmt.Errorf("routing key %q has the control character %U at byte %d", quoteShort(k), r, i)
		}
	}
	return nil
}

func quoteShort(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// AllowList is a set of routing-key patterns with the semantics of a topic exchange's bindings: words
// separated by '.', '*' matching exactly one word and '#' zero or more words ("orders.*" matches
// "orders.created" but not "orders.eu.created"; "orders.#" matches "orders", "orders.created" and
// "orders.eu.created"). A pattern without wildcards matches only itself. It is immutable and safe for
// concurrent use.
type AllowList struct {
	exact    map[string]struct{}
	patterns [][]string
	raw      []string
}

// ValidatePattern reports why p is not an allow-list pattern (see [AllowList]).
func ValidatePattern(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty pattern")
	case p == "#" || p == "*" || strings.Trim(p, "#*.") == "":
		return fmt.Errorf("pattern %q would allow (almost) every routing key: leave the allow-list out instead, or list keys and patterns such as \"orders.#\"", p)
	}
	if err := Validate(p); err != nil {
		return err
	}
	for i, w := range strings.Split(p, ".") {
		if w != "*" && w != "#" && strings.ContainsAny(w, "*#") {
			return fmt.Errorf("pattern %q: '*' and '#' must be whole words (word %d is %q)", quoteShort(p), i+1, w)
		}
	}
	return nil
}

// NewAllowList parses patterns (see [AllowList]). An error names the first bad pattern by its index;
// an empty list is an error too, since it would reject every routing key.
func NewAllowList(patterns []string) (*AllowList, error) {
	if len(patterns) == 0 {
		return nil, fmt.Errorf("empty allow-list: it would reject every routing key (leave it out to allow any)")
	}
	a := &AllowList{exact: map[string]struct{}{}, raw: append([]string(nil), patterns...)}
	for i, p := range patterns {
		if err := ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		words := strings.Split(p, ".")
		wild := false
		for _, w := range words {
			wild = wild || w == "*" || w == "#"
		}
		if wild {
			a.patterns = append(a.patterns, words)
		} else {
			a.exact[p] = struct{}{}
		}
	}
	return a, nil
}

// Allows reports whether the routing key k matches one of the patterns.
func (a *AllowList) Allows(k string) bool {
	if _, ok := a.exact[k]; ok {
		return true
	}
	if len(a.patterns) == 0 {
		return false
	}
	words := strings.Split(k, ".")
	for _, p := range a.patterns {
		if match(p, words) {
			return true
		}
	}
	return false
}

// match is the topic-exchange match of pattern against words ('#' may match zero words).
func match(pattern, words []string) bool {
	if len(pattern) == 0 {
		return len(words) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(words); i++ {
			if match(pattern[1:], words[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(words) > 0 && match(pattern[1:], words[1:])
	}
	return len(words) > 0 && words[0] == pattern[0] && match(pattern[1:], words[1:])
}

// String lists the patterns, comma-separated.
func (a *AllowList) String() string { return strings.Join(a.raw, ", ") }
