package names

import (
	"fmt"
	"unicode/utf8"
)

// Limits on the fields of an outbox message, enforced by Enqueue before anything is written.
const (
	// MaxDestinationLen bounds Message.Destination (it names a handler or sink and labels metrics).
	MaxDestinationLen = 255
	// MaxRouteLen bounds Message.Route (a Kafka topic is at most 249 bytes; a webhook path segment).
	MaxRouteLen = 255
	// MaxTypeLen bounds Message.Type.
	MaxTypeLen = 255
	// MaxKeyLen bounds Message.Key (the ordering key; Kafka's record key).
	MaxKeyLen = 1024
	// DefaultMaxHeaderBytes bounds the headers of one message: the sum of the lengths of every name
	// and value, trace context included.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxPayloadBytes bounds the payload of one message (outbox.Enqueuer.MaxPayloadBytes 0).
	DefaultMaxPayloadBytes = 8 << 20
)

// ValidateRoute checks a message route: at most MaxRouteLen bytes of valid UTF-8 without control
// characters (C0, DEL, C1), which no destination accepts in a topic or a URL path.
func ValidateRoute(route string) error {
	if len(route) > MaxRouteLen {
		return fmt.Errorf("is %d bytes, the limit is %d", len(route), MaxRouteLen)
	}
	for i, r := range route {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return fmt.Errorf("has a control character %U at byte %d (control characters are not allowed)", r, i)
		}
	}
	if !utf8.ValidString(route) {
		return fmt.Errorf("is not valid UTF-8")
	}
	return nil
}

// ValidateLen checks that a field of n bytes is within limit.
func ValidateLen(n, limit int) error {
	if n > limit {
		return fmt.Errorf("is %d bytes, the limit is %d", n, limit)
	}
	return nil
}

// ValidateHeaderName checks a header name: 1 or more HTTP token characters (RFC 9110 §5.6.2:
// letters, digits and !#$%&'*+-.^_`|~), so that every sink can send it as is.
func ValidateHeaderName(name string) error {
	if name == "" {
		return fmt.Errorf("is empty")
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("has %q at byte %d: header names are HTTP tokens (letters, digits and !#$%%&'*+-.^_`|~)", name[i], i)
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
