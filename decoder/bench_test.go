package decoder

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Column type OIDs of the outbox table.
const (
	oidInt8        = 20
	oidUUID        = 2950
	oidText        = 25
	oidBytea       = 17
	oidJSONB       = 3802
	oidTimestamptz = 1184
)

var benchCols = []col{
	{"seq", oidInt8, 1}, {"id", oidUUID, 0}, {"destination", oidText, 0}, {"route", oidText, 0},
	{"key", oidText, 0}, {"type", oidText, 0}, {"payload", oidBytea, 0}, {"headers", oidJSONB, 0},
	{"created_at", oidTimestamptz, 0},
}

// benchInsert is a realistic outbox row in binary format.
func benchInsert() []byte {
	return encInsert(16384,
		bin(binary.BigEndian.AppendUint64(nil, 123456789)...),
		bin(0x01, 0x93, 0x8f, 0x4e, 0x2a, 0x7b, 0x7c, 0x11, 0x9a, 0x3e, 0x55, 0x20, 0x41, 0x42, 0x43, 0x44),
		txt("event_bus"), txt("orders.created"), txt("order-1234567"), txt("OrderCreated"),
		binv(bytes.Repeat([]byte{'x'}, 200)),
		binv(append([]byte{1}, `{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "tenant": "acme"}`...)),
		bin(binary.BigEndian.AppendUint64(nil, ts2000)...),
	)
}

type nopHandler struct{}

func (nopHandler) Begin(TxInfo) error      { return nil }
func (nopHandler) Insert(Row) error        { return nil }
func (nopHandler) Commit(CommitInfo) error { return nil }

func BenchmarkDecodeInsert(b *testing.B) {
	d, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	var h nopHandler
	for _, m := range [][]byte{encBegin(1, 2), encRelation(16384, "public", "pkg_outbox", benchCols...)} {
		if err := d.Decode(m, h); err != nil {
			b.Fatal(err)
		}
	}
	msg := benchInsert()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(msg, h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeStreamed measures a 1000-row streamed transaction: buffering at
// receipt plus replay at Stream Commit, in memory.
func BenchmarkDecodeStreamed(b *testing.B) {
	d, err := New(Config{Streaming: true, SpillDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	var h nopHandler
	rel := streamed(5, encRelation(16384, "public", "pkg_outbox", benchCols...))
	ins := streamed(5, benchInsert())
	b.SetBytes(int64(1000 * len(ins)))
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range [][]byte{encStreamStart(5, true), rel} {
			if err := d.Decode(m, h); err != nil {
				b.Fatal(err)
			}
		}
		for range 1000 {
			if err := d.Decode(ins, h); err != nil {
				b.Fatal(err)
			}
		}
		for _, m := range [][]byte{encStreamStop(), encStreamCommit(5, 1, 2)} {
			if err := d.Decode(m, h); err != nil {
				b.Fatal(err)
			}
		}
	}
}
