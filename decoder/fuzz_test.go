package decoder

import (
	"encoding/binary"
	"os"
	"testing"
)

// frame encodes a fuzz input: a flags byte (bit 0: Config.Streaming, bit 1: a tiny
// MemoryLimit so streamed data spills), then messages as Uint16 length + bytes.
func frame(flags byte, msgs ...[]byte) []byte {
	b := []byte{flags}
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

// checker is a Handler that checks the Row invariants.
type checker struct{ t *testing.T }

func (c checker) Begin(TxInfo) error      { return nil }
func (c checker) Commit(CommitInfo) error { return nil }
func (c checker) Insert(row Row) error {
	if row.Relation == nil || len(row.Values) != len(row.Relation.Columns) || len(row.Kinds) != len(row.Values) {
		c.t.Fatalf("inconsistent row: %+v", row)
	}
	for i, k := range row.Kinds {
		switch k {
		case KindNull, KindUnchanged:
			if row.Values[i] != nil {
				c.t.Fatalf("column %d kind %q has a value", i, k)
			}
		case KindText, KindBinary:
			if row.Values[i] == nil {
				c.t.Fatalf("column %d kind %q has a nil value", i, k)
			}
		default:
			c.t.Fatalf("column %d has kind %q", i, k)
		}
	}
	return nil
}

func FuzzDecode(f *testing.F) {
	rel := encRelation(16384, "public", "pkg_outbox", outboxCols...)
	ins := encInsert(16384, bin(0, 0, 0, 0, 0, 0, 0, 1), txt("a"), null())
	f.Add(frame(0, encBegin(1, 2), rel, ins, ins, encCommit(1, 2)))
	f.Add(frame(0, encBegin(1, 2), encOrigin("o"), encType(1, "a", "b"), rel,
		encUpdate(16384, []val{txt("1"), null(), null()}, txt("1"), unchanged(), null()),
		encDelete(16384, txt("1"), null(), null()), encTruncate(16384), encMessage("p", "c"),
		encRelation(16384, "public", "pkg_outbox", addedCols...),
		encInsert(16384, txt("1"), txt("a"), null(), txt("n")), encCommit(1, 2)))
	for _, flags := range []byte{1, 3} {
		f.Add(frame(flags,
			encStreamStart(5, true), streamed(5, rel), streamed(5, ins), streamed(6, ins), streamed(7, ins), encStreamStop(),
			encBegin(1, 2), rel, ins, encCommit(1, 2),
			encStreamAbort(5, 6),
			encStreamStart(5, false), streamed(5, ins), streamed(5, encType(1, "a", "b")), encStreamStop(),
			encStreamStart(8, true), streamed(8, rel), streamed(8, ins), encStreamStop(),
			encStreamCommit(5, 0x500, 0x508),
			encStreamAbort(8, 8)))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		cfg := Config{Streaming: in[0]&1 != 0, SpillDir: dir}
		if in[0]&2 != 0 {
			cfg.MemoryLimit = 64
		}
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		h := checker{t}
		for rest := in[1:]; len(rest) >= 2; {
			n := int(binary.BigEndian.Uint16(rest))
			rest = rest[2:]
			n = min(n, len(rest))
			msg := rest[:n:n]
			rest = rest[n:]
			if err := d.Decode(msg, h); err != nil {
				// What a caller does after an error.
				d.Reset()
			}
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if es, _ := os.ReadDir(dir); len(es) != 0 {
			t.Fatalf("%d spill files left after Close", len(es))
		}
	})
}
