// Package topicname validates Kafka topic names and the allow-lists that restrict which topics a
// message's Route may name. It does not depend on sarama, so configuration loaders can check names and
// patterns without pulling in a Kafka client.
package topicname

import (
	"fmt"
	"strings"
)

// MaxLen is the longest topic name Kafka accepts.
const MaxLen = 249

// Validate reports why name is not a legal Kafka topic name: 1 to [MaxLen] characters of a-z, A-Z,
// 0-9, '.', '_' and '-', and neither "." nor "..".
func Validate(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty topic name")
	case len(name) > MaxLen:
		return fmt.Errorf("topic name of %d bytes is over Kafka's limit of %d", len(name), MaxLen)
	case name == "." || name == "..":
		return fmt.Errorf("topic name %q is reserved", name)
	}
	for i := 0; i < len(name); i++ {
		if !legal(name[i]) {
			return fmt.Errorf("topic name %q has %q at byte %d: only a-z, A-Z, 0-9, '.', '_' and '-' are allowed",
				quoteShort(name), name[i], i)
		}
	}
	return nil
}

func legal(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// quoteShort shortens s for an error message: a Route can be long and comes from a message.
func quoteShort(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// AllowList is a set of topic patterns: exact topic names, or a prefix followed by '*' ("orders.*")
// that matches every topic starting with the prefix and having at least one more character. '.' is a
// literal dot, not a regular expression. An AllowList is immutable and safe for concurrent use.
type AllowList struct {
	exact    map[string]struct{}
	prefixes []string
	patterns []string
}

// ValidatePattern reports why p is not an allow-list pattern (see [AllowList]).
func ValidatePattern(p string) error {
	prefix, wildcard := strings.CutSuffix(p, "*")
	switch {
	case p == "":
		return fmt.Errorf("empty pattern")
	case p == "*":
		return fmt.Errorf(`"*" would allow every topic: leave the allow-list out instead, or list topics and prefixes such as "orders.*"`)
	case strings.Contains(prefix, "*"):
		return fmt.Errorf("pattern %q: '*' may only end a pattern (a prefix such as \"orders.*\")", quoteShort(p))
	case !wildcard:
		if err := Validate(p); err != nil {
			return fmt.Errorf("pattern %q is neither a topic name nor a prefix ending in '*': %w", quoteShort(p), err)
		}
		return nil
	case strings.Trim(prefix, ".") == "":
		return fmt.Errorf("pattern %q looks like a regular expression: write a topic prefix followed by '*', such as \"orders.*\"", p)
	case len(prefix) >= MaxLen:
		return fmt.Errorf("pattern %q: a prefix of %d bytes leaves no room in a topic name (limit %d)", quoteShort(p), len(prefix), MaxLen)
	}
	for i := 0; i < len(prefix); i++ {
		if !legal(prefix[i]) {
			return fmt.Errorf("pattern %q has %q at byte %d: a prefix may only hold a-z, A-Z, 0-9, '.', '_' and '-' before the final '*'",
				quoteShort(p), prefix[i], i)
		}
	}
	return nil
}

// NewAllowList parses patterns (see [AllowList]). An error names the first bad pattern by its index;
// an empty list is an error too, since it would reject every topic.
func NewAllowList(patterns []string) (*AllowList, error) {
	if len(patterns) == 0 {
		return nil, fmt.Errorf("empty allow-list: it would reject every topic (leave it out to allow any)")
	}
	a := &AllowList{exact: map[string]struct{}{}, patterns: append([]string(nil), patterns...)}
	for i, p := range patterns {
		if err := ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			a.prefixes = append(a.prefixes, prefix)
		} else {
			a.exact[p] = struct{}{}
		}
	}
	return a, nil
}

// Allows reports whether topic matches one of the patterns.
func (a *AllowList) Allows(topic string) bool {
	if _, ok := a.exact[topic]; ok {
		return true
	}
	for _, p := range a.prefixes {
		if len(topic) > len(p) && strings.HasPrefix(topic, p) {
			return true
		}
	}
	return false
}

// Patterns returns the patterns as given.
func (a *AllowList) Patterns() []string { return append([]string(nil), a.patterns...) }

// String lists the patterns, comma-separated.
func (a *AllowList) String() string { return strings.Join(a.patterns, ", ") }
