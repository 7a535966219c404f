// Package envelope is the binary form of an outbox message carried in the WAL alone: the content of a
// pg_logical_emit_message written by Enqueue's logical transport and decoded by the relay.
//
// Version 1, every integer big-endian, every length an unsigned varint (encoding/binary's Uvarint):
//
//	byte     version (1)
//	[16]byte id (the message's UUID)
//	int64    created_at, microseconds since the Unix epoch
//	len+text destination   (1..255 bytes)
//	len+text route         (0..255 bytes, no control characters)
//	len+text key           (0..1024 bytes)
//	len+text type          (0..255 bytes)
//	uvarint  header count, then per header len+name, len+value, names in strictly increasing byte order
//	len+data payload, which ends the envelope exactly
//
// Text is valid UTF-8 without NUL bytes, header names are HTTP tokens: [Decode] accepts exactly what
// Enqueue writes (the limits of internal/names) and rejects anything else as [ErrMalformed], naming the
// field and the reason. The encoding is canonical: one message has one envelope, so decoding and
// encoding again gives the same bytes.
//
// Every function is pure and safe for concurrent use.
package envelope

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// Version is the envelope version Append writes and Decode reads.
const Version = 1

// ErrMalformed is wrapped by every Decode error.
var ErrMalformed = errors.New("envelope: malformed")

// FixedLen is the size of the version, id and created_at that start every envelope.
const FixedLen = 1 + 16 + 8

// Envelope is one message.
type Envelope struct {
	ID          [16]byte
	CreatedAt   time.Time
	Destination string
	Route       string
	Key         string
	Type        string
	Headers     map[string]string
	Payload     []byte
}

// Size returns the length of e's encoding.
func Size(e *Envelope) int {
	n := FixedLen + lenSize(e.Destination) + lenSize(e.Route) + lenSize(e.Key) + lenSize(e.Type)
	n += uvarintLen(uint64(len(e.Headers)))
	for k, v := range e.Headers {
		n += lenSize(k) + lenSize(v)
	}
	return n + uvarintLen(uint64(len(e.Payload))) + len(e.Payload)
}

// Append appends e's encoding to dst. It does not validate e: Enqueue validated the message before.
func Append(dst []byte, e *Envelope) []byte {
	dst = slices.Grow(dst, Size(e))
	dst = append(dst, Version)
	dst = append(dst, e.ID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.CreatedAt.UnixMicro()))
	dst = appendText(dst, e.Destination)
	dst = appendText(dst, e.Route)
	dst = appendText(dst, e.Key)
	dst = appendText(dst, e.Type)
	dst = binary.AppendUvarint(dst, uint64(len(e.Headers)))
	if len(e.Headers) > 0 {
		var one [1]string
		keys := one[:0]
		if len(e.Headers) > 1 {
			keys = make([]string, 0, len(e.Headers))
		}
		for k := range e.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			dst = appendText(dst, k)
			dst = appendText(dst, e.Headers[k])
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.Payload)))
	return append(dst, e.Payload...)
}

func appendText(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func lenSize(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// Decode decodes b. The strings and the payload of the result alias b, which the caller must not
// modify afterwards. On error the result holds the fields decoded before the fault (what a dead
// letter can keep), and the error wraps ErrMalformed and names the field and the reason.
func Decode(b []byte) (Envelope, error) {
	var e Envelope
	d := decoder{b: b}
	if len(b) == 0 {
		return e, malformed(plain("version"), "the envelope is empty")
	}
	if b[0] != Version {
		return e, malformed(plain("version"), "is %d, this relay reads version %d", b[0], Version)
	}
	if len(b) < FixedLen {
		return e, malformed(plain("id"), "truncated: the envelope is %d bytes, the fixed part alone is %d", len(b), FixedLen)
	}
	copy(e.ID[:], b[1:17])
	e.CreatedAt = time.UnixMicro(int64(binary.BigEndian.Uint64(b[17:25])))
	d.off = FixedLen
	var err error
	if e.Destination, err = d.text(plain("destination"), names.MaxDestinationLen); err != nil {
		return e, err
	}
	if e.Destination == "" {
		return e, malformed(plain("destination"), "is empty")
	}
	if e.Route, err = d.text(plain("route"), names.MaxRouteLen); err != nil {
		return e, err
	}
	if err := names.ValidateRoute(e.Route); err != nil {
		r := e.Route
		e.Route = ""
		return e, malformed(plain("route"), "%q %v", names.Truncate(r, 64), err)
	}
	if e.Key, err = d.text(plain("key"), names.MaxKeyLen); err != nil {
		return e, err
	}
	if e.Type, err = d.text(plain("type"), names.MaxTypeLen); err != nil {
		return e, err
	}
	if e.Headers, err = d.headers(); err != nil {
		return e, err
	}
	n, err := d.length(plain("payload"), len(b))
	if err != nil {
		return e, err
	}
	if rest := len(b) - d.off; n != rest {
		return e, malformed(plain("payload"), "is %d bytes but %d remain: trailing bytes", n, rest)
	}
	e.Payload = b[d.off:len(b):len(b)]
	return e, nil
}

// decoder reads b from off.
type decoder struct {
	b   []byte
	off int
}

// field names a field in errors; a header's name is built only when an error needs it.
type field struct {
	name   string
	header int    // >= 0: the header at this index
	part   string // "name" or "value" of the header
}

func (f field) String() string {
	if f.header < 0 {
		return f.name
	}
	return fmt.Sprintf("headers[%d] %s", f.header, f.part)
}

func plain(name string) field { return field{name: name, header: -1} }

// length reads a varint length of f and checks it against max and the bytes that remain.
func (d *decoder) length(f field, max int) (int, error) {
	v, err := d.uvarint(f, "length")
	if err != nil {
		return 0, err
	}
	if v > uint64(max) {
		return 0, malformed(f, "is %d bytes, the limit is %d", v, max)
	}
	if rest := len(d.b) - d.off; v > uint64(rest) {
		return 0, malformed(f, "is %d bytes but only %d remain: truncated", v, rest)
	}
	return int(v), nil
}

// uvarint reads a varint in its shortest form (so that an envelope has one encoding).
func (d *decoder) uvarint(f field, what string) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		return 0, malformed(f, what+" truncated at byte %d", d.off)
	case n < 0:
		return 0, malformed(f, what+" overflows 64 bits at byte %d", d.off)
	case n != uvarintLen(v):
		return 0, malformed(f, what+" is not in its shortest form at byte %d", d.off)
	}
	d.off += n
	return v, nil
}

// text reads a length-prefixed text field of at most max bytes: valid UTF-8 without NUL.
func (d *decoder) text(f field, max int) (string, error) {
	n, err := d.length(f, max)
	if err != nil {
		return "", err
	}
	s := bytesToString(d.b[d.off : d.off+n])
	if !utf8.ValidString(s) {
		return "", malformed(f, "is not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", malformed(f, "contains a NUL byte")
	}
	d.off += n
	return s, nil
}

// headers reads the header count and the headers.
func (d *decoder) headers() (map[string]string, error) {
	v, err := d.uvarint(plain("headers"), "count")
	if err != nil {
		return nil, err
	}
	// Each header takes at least three bytes: two lengths and a name of one byte.
	if rest := len(d.b) - d.off; v > uint64(rest/3) {
		return nil, malformed(plain("headers"), "count %d needs at least %d bytes, %d remain", v, v*3, rest)
	}
	if v == 0 {
		return nil, nil
	}
	h := make(map[string]string, int(v))
	prev := ""
	for i := range int(v) {
		nf := field{header: i, part: "name"}
		name, err := d.text(nf, len(d.b))
		if err != nil {
			return h, err
		}
		if err := names.ValidateHeaderName(name); err != nil {
			return h, malformed(nf, "%q %v", names.Truncate(name, 64), err)
		}
		if i > 0 && name <= prev {
			return h, malformed(nf, "%q is not after %q: names must be unique and sorted",
				names.Truncate(name, 64), names.Truncate(prev, 64))
		}
		value, err := d.text(field{header: i, part: "value"}, len(d.b))
		if err != nil {
			return h, err
		}
		h[name] = value
		prev = name
	}
	return h, nil
}

func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func malformed(f fmt.Stringer, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s", ErrMalformed, f, fmt.Sprintf(format, args...))
}
