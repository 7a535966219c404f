// Package routes checks the part of a sink's configuration that every sink with named targets has: a
// map from destination to the target the operator configured (a Kafka topic, a NATS subject), and a map
// from destination to the allow-list a message's Route must match when no target is configured.
package routes

import (
	"fmt"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Spec names one sink's fields and checks its names.
type Spec struct {
	Prefix  string // of every error, e.g. "kafka: config: "
	Field   string // the configured targets' field, e.g. "Topics"
	Allowed string // the allow-lists' field, e.g. "AllowedTopics"
	Noun    string // one target, e.g. "topic"
	// Valid checks a configured target.
	Valid func(string) error
	// Allow checks one allow-list; each error's text follows "<Allowed>[<destination>]" directly.
	Allow func([]string) []error
}

// Check returns an error for each bad entry of targets and allowed, in destination order so that the
// errors are stable. A destination with a configured target must not have an allow-list too: the
// target always wins.
func (s Spec) Check(targets map[string]string, allowed map[string][]string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(s.Prefix+format, args...)) }
	for _, dest := range slices.Sorted(maps.Keys(targets)) {
		t := targets[dest]
		if dest == "" || t == "" {
			bad("%s: empty destination or %s in %q → %q", s.Field, s.Noun, dest, t)
			continue
		}
		if err := s.Valid(t); err != nil {
			bad("%s[%q]: %v", s.Field, dest, err)
		}
	}
	for _, dest := range slices.Sorted(maps.Keys(allowed)) {
		if dest == "" {
			bad("%s: empty destination", s.Allowed)
			continue
		}
		if t := targets[dest]; t != "" {
			bad("%s[%q] is set but %s[%q] is %q, which always wins: remove one of them", s.Allowed, dest, s.Field, dest, t)
			continue
		}
		for _, err := range s.Allow(allowed[dest]) {
			bad("%s[%q]%v", s.Allowed, dest, err)
		}
	}
	return errs
}

// AllowList is a compiled allow-list of one destination.
type AllowList interface {
	Allows(route string) bool
	String() string
}

// Target returns where r goes and whether that came from its Route: its destination's configured target
// always wins; otherwise its Route, when it is a valid target inside the destination's allow-list
// (counted in notAllowed when it is not). Any other case fails permanently. sink names the sink in
// errors ("kafka").
func Target[A AllowList](s Spec, sink string, targets map[string]string, allowed map[string]A, notAllowed *atomic.Uint64, r *outbox.Record) (string, bool, error) {
	if t := targets[string(r.Destination)]; t != "" {
		return t, false, nil
	}
	if r.Route == "" {
		return "", false, outbox.Permanent(fmt.Errorf("%s: message %s has no Route and destination %q has no %s in Config.%s", sink, r.ID, r.Destination, s.Noun, s.Field))
	}
	if err := s.Valid(r.Route); err != nil {
		notAllowed.Add(1)
		return "", true, outbox.Permanent(fmt.Errorf("%s: message %s of destination %q: its Route cannot be a %s: %w", sink, r.ID, r.Destination, s.Noun, err))
	}
	if a, ok := allowed[string(r.Destination)]; ok && !a.Allows(r.Route) {
		notAllowed.Add(1)
		return "", true, outbox.Permanent(fmt.Errorf("%s: message %s of destination %q: Route %q is not an allowed %s (allowed %ss: %s)",
			sink, r.ID, r.Destination, r.Route, s.Noun, s.Noun, a))
	}
	return r.Route, true, nil
}
