package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
)

func sample() Envelope {
	return Envelope{
		ID:          [16]byte{0x01, 0x8f, 0x3c, 0x4a, 0x5b, 0x6c, 0x7d, 0x8e, 0x9f, 0xa0, 0xb1, 0xc2, 0xd3, 0xe4, 0xf5, 0x06},
		CreatedAt:   time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC),
		Destination: "event_bus",
		Route:       "orders.v1",
		Key:         "order-42",
		Type:        "OrderPlaced",
		Headers:     map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x-n": "7", "A": ""},
		Payload:     []byte(`{"total":12.5}` + "\x00\xff binary"),
	}
}

func equal(t *testing.T, got, want Envelope) {
	t.Helper()
	if got.ID != want.ID || !got.CreatedAt.Equal(want.CreatedAt) || got.Destination != want.Destination ||
		got.Route != want.Route || got.Key != want.Key || got.Type != want.Type ||
		!maps.Equal(got.Headers, want.Headers) || !bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	big := sample()
	big.Key = strings.Repeat("k", 1024)
	big.Payload = bytes.Repeat([]byte{0xab}, 1<<20)
	for name, e := range map[string]Envelope{
		"full":    sample(),
		"minimal": {Destination: "d", CreatedAt: time.UnixMicro(0)},
		"limits":  big,
		"empty payload and one header": {Destination: "d", Headers: map[string]string{"h": "v"}, Payload: []byte{},
			CreatedAt: time.UnixMicro(-1)},
		"unicode": {Destination: "düsseldorf", Route: "päth/ü", Key: "ключ", Type: "タイプ", CreatedAt: time.UnixMicro(1 << 50)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := Append(nil, &e)
			if len(b) != Size(&e) {
				t.Errorf("Size %d, Append wrote %d bytes", Size(&e), len(b))
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, got, e)
			if again := Append([]byte("prefix"), &got); !bytes.Equal(again[6:], b) {
				t.Fatal("encoding the decoded envelope gives other bytes")
			}
		})
	}
}

// The created_at resolution is the microsecond, as PostgreSQL's timestamptz.
func TestCreatedAtMicroseconds(t *testing.T) {
	t.Parallel()
	e := sample()
	e.CreatedAt = time.Date(2025, 1, 1, 0, 0, 0, 999_999_999, time.UTC)
	got, err := Decode(Append(nil, &e))
	if err != nil {
		t.Fatal(err)
	}
	if want := e.CreatedAt.Truncate(time.Microsecond); !got.CreatedAt.Equal(want) {
		t.Fatalf("created_at %v, want %v", got.CreatedAt, want)
	}
}

// Decoding aliases the input: no copy of the payload.
func TestDecodeAliases(t *testing.T) {
	t.Parallel()
	e := sample()
	b := Append(nil, &e)
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if &got.Payload[0] != &b[len(b)-len(e.Payload)] {
		t.Fatal("the payload was copied")
	}
}

// part is one field of an envelope built by hand (build), so that each test can break one part.
type part struct {
	name string
	b    []byte
}

func text(s string) []byte { return append(binary.AppendUvarint(nil, uint64(len(s))), s...) }

func parts() []part {
	return []part{
		{"version", []byte{Version}},
		{"id", bytes.Repeat([]byte{7}, 16)},
		{"created_at", binary.BigEndian.AppendUint64(nil, 1)},
		{"destination", text("dest")},
		{"route", text("r")},
		{"key", text("k")},
		{"type", text("t")},
		{"headers", append(append([]byte{2}, append(text("a"), text("1")...)...), append(text("b"), text("2")...)...)},
		{"payload", text("payload")},
	}
}

func build(replace map[string][]byte) []byte {
	var b []byte
	for _, p := range parts() {
		if r, ok := replace[p.name]; ok {
			b = append(b, r...)
		} else {
			b = append(b, p.b...)
		}
	}
	return b
}

func TestDecodeMalformed(t *testing.T) {
	t.Parallel()
	if _, err := Decode(build(nil)); err != nil {
		t.Fatalf("the hand-built envelope: %v", err)
	}
	long := func(n int) []byte { return text(strings.Repeat("x", n)) }
	full := build(nil)
	for _, tc := range []struct {
		name string
		in   []byte
		want string // in the error
		dest string // recovered destination
	}{
		{"empty", nil, "version the envelope is empty", ""},
		{"wrong version", build(map[string][]byte{"version": {2}}), "version is 2, this relay reads version 1", ""},
		{"version 0", build(map[string][]byte{"version": {0}}), "version is 0", ""},
		{"truncated id", full[:10], "id truncated", ""},
		{"no destination", full[:FixedLen], "destination length truncated", ""},
		{"empty destination", build(map[string][]byte{"destination": text("")}), "destination is empty", ""},
		{"destination too long", build(map[string][]byte{"destination": long(256)}), "destination is 256 bytes, the limit is 255", ""},
		{"destination past the end", append(full[:FixedLen:FixedLen], 9, 'a'), "destination is 9 bytes but only 1 remain", ""},
		{"destination not UTF-8", build(map[string][]byte{"destination": text("\xff")}), "destination is not valid UTF-8", ""},
		{"destination NUL", build(map[string][]byte{"destination": text("a\x00")}), "destination contains a NUL byte", ""},
		{"route control character", build(map[string][]byte{"route": text("a\nb")}), "route \"a\\nb\" has a control character", "dest"},
		{"route too long", build(map[string][]byte{"route": long(256)}), "route is 256 bytes, the limit is 255", "dest"},
		{"key too long", build(map[string][]byte{"key": long(1025)}), "key is 1025 bytes, the limit is 1024", "dest"},
		{"type too long", build(map[string][]byte{"type": long(256)}), "type is 256 bytes, the limit is 255", "dest"},
		{"overlong varint", build(map[string][]byte{"type": {0x81, 0x00, 'x'}}), "type length is not in its shortest form", "dest"},
		{"varint overflow", build(map[string][]byte{"type": bytes.Repeat([]byte{0xff}, 11)}), "type length overflows 64 bits", "dest"},
		{"header count too large", build(map[string][]byte{"headers": {0xff, 0xff, 0x03}}), "headers count 65535 needs at least", "dest"},
		{"header name not a token", build(map[string][]byte{"headers": append([]byte{1}, append(text("a b"), text("v")...)...)}), "headers[0] name \"a b\" has ' '", "dest"},
		{"header names unsorted", build(map[string][]byte{"headers": append(append([]byte{2}, append(text("b"), text("1")...)...), append(text("a"), text("2")...)...)}), "headers[1] name \"a\" is not after \"b\"", "dest"},
		{"header names repeated", build(map[string][]byte{"headers": append(append([]byte{2}, append(text("a"), text("1")...)...), append(text("a"), text("2")...)...)}), "names must be unique", "dest"},
		{"header value NUL", build(map[string][]byte{"headers": append([]byte{1}, append(text("a"), text("\x00")...)...)}), "headers[0] value contains a NUL byte", "dest"},
		{"payload truncated", full[:len(full)-1], "payload is 7 bytes but only 6 remain", "dest"},
		{"trailing bytes", append(build(nil), 'x'), "payload is 7 bytes but 8 remain: trailing bytes", "dest"},
		{"no payload", build(map[string][]byte{"payload": {}}), "payload length truncated", "dest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode(tc.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %q, want it to contain %q", err, tc.want)
			}
			if got.Destination != tc.dest {
				t.Errorf("recovered destination %q, want %q", got.Destination, tc.dest)
			}
		})
	}
}

func BenchmarkAppend(b *testing.B) {
	e := sample()
	e.Payload = bytes.Repeat([]byte("p"), 256)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], &e)
	}
}

func BenchmarkDecode(b *testing.B) {
	e := sample()
	e.Payload = bytes.Repeat([]byte("p"), 256)
	enc := Append(nil, &e)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}
