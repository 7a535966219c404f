// Package subject validates NATS subjects that the NATS sink publishes to and the allow-lists that
// restrict which subjects a message's Route may name. It does not depend on a NATS client, so
// configuration loaders can check names and patterns without pulling one in.
//
// A publish subject is one or more tokens separated by '.', each non-empty and made of printable
// ASCII other than the wildcards '*' and '>' (and no spaces). Subjects whose first token starts with
// '$' ($JS, $SYS, $KV, …) or is "_INBOX" are reserved for the server's APIs and replies: publishing a
// message there could call the JetStream API (delete a stream, purge it), so they are refused.
package subject

import (
	"fmt"
	"strings"
)

// MaxLen is the longest subject this sink accepts (the NATS server has no hard limit; long subjects
// cost memory in every stream index).
const MaxLen = 255

// Validate reports why s is not a subject the sink may publish to (see the package documentation).
func Validate(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty subject")
	case len(s) > MaxLen:
		return fmt.Errorf("subject of %d bytes is over the limit of %d", len(s), MaxLen)
	}
	first, _, _ := strings.Cut(s, ".")
	if strings.HasPrefix(first, "$") || first == "_INBOX" {
		return fmt.Errorf("subject %q is reserved for the server's APIs and replies (first token %q)", quoteShort(s), first)
	}
	return validTokens(s, false)
}

// validTokens checks the tokens of s; wild allows a token that is exactly '*', and '>' as the last token.
func validTokens(s string, wild bool) error {
	tokens := strings.Split(s, ".")
	for i, tok := range tokens {
		if tok == "" {
			return fmt.Errorf("subject %q has an empty token (at token %d): tokens are separated by single dots", quoteShort(s), i+1)
		}
		if wild && (tok == "*" || tok == ">" && i == len(tokens)-1) {
			continue
		}
		for j := 0; j < len(tok); j++ {
			c := tok[j]
			switch {
			case c == '*' || c == '>':
				if wild {
					return fmt.Errorf("pattern %q: %q must be a whole token ('>' only the last one)", quoteShort(s), c)
				}
				return fmt.Errorf("subject %q has the wildcard %q: a message is published to one literal subject", quoteShort(s), c)
			case c <= ' ' || c >= 0x7f:
				return fmt.Errorf("subject %q has %q in token %d: only printable ASCII without spaces is allowed", quoteShort(s), c, i+1)
			}
		}
	}
	return nil
}

// quoteShort shortens s for an error message: a Route can be long and comes from a message.
func quoteShort(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// AllowList is a set of subject patterns with NATS wildcard semantics: a literal subject, '*' matching
// exactly one token ("orders.*" matches "orders.created" but not "orders" nor "orders.eu.created") and a
// final '>' matching one or more tokens ("orders.>" matches both of those but not "orders"). It is
// immutable and safe for concurrent use.
type AllowList struct {
	exact    map[string]struct{}
	patterns [][]string // tokenized wildcard patterns
	raw      []string
}

// ValidatePattern reports why p is not an allow-list pattern (see [AllowList]).
func ValidatePattern(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty pattern")
	case p == ">" || p == "*":
		return fmt.Errorf("%q would allow (almost) every subject: leave the allow-list out instead, or list subjects and patterns such as \"orders.>\"", p)
	case len(p) > MaxLen:
		return fmt.Errorf("pattern of %d bytes is over the limit of %d", len(p), MaxLen)
	}
	first, _, _ := strings.Cut(p, ".")
	if strings.HasPrefix(first, "$") || first == "_INBOX" || first == "*" || first == ">" {
		return fmt.Errorf("pattern %q could match subjects reserved for the server's APIs and replies ($…, _INBOX): start it with a literal token", quoteShort(p))
	}
	return validTokens(p, true)
}

// NewAllowList parses patterns (see [AllowList]). An error names the first bad pattern by its index;
// an empty list is an error too, since it would reject every subject.
func NewAllowList(patterns []string) (*AllowList, error) {
	if len(patterns) == 0 {
		return nil, fmt.Errorf("empty allow-list: it would reject every subject (leave it out to allow any)")
	}
	a := &AllowList{exact: map[string]struct{}{}, raw: append([]string(nil), patterns...)}
	for i, p := range patterns {
		if err := ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		if !strings.ContainsAny(p, "*>") {
			a.exact[p] = struct{}{}
			continue
		}
		a.patterns = append(a.patterns, strings.Split(p, "."))
	}
	return a, nil
}

// Allows reports whether the literal subject s matches one of the patterns.
func (a *AllowList) Allows(s string) bool {
	if _, ok := a.exact[s]; ok {
		return true
	}
	if len(a.patterns) == 0 {
		return false
	}
	tokens := strings.Split(s, ".")
	for _, p := range a.patterns {
		if match(p, tokens) {
			return true
		}
	}
	return false
}

func match(pattern, tokens []string) bool {
	for i, pt := range pattern {
		if pt == ">" {
			return len(tokens) > i
		}
		if i >= len(tokens) || pt != "*" && pt != tokens[i] {
			return false
		}
	}
	return len(tokens) == len(pattern)
}

// Patterns returns the patterns as given.
func (a *AllowList) Patterns() []string { return append([]string(nil), a.raw...) }

// String lists the patterns, comma-separated.
func (a *AllowList) String() string { return strings.Join(a.raw, ", ") }
