package decoder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/internal/envelope"
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

// checker is a Handler that checks the Row and LogicalMessage invariants.
type checker struct {
	t    *testing.T
	inTx bool
}

func (c *checker) Begin(TxInfo) error {
	if c.inTx {
		c.t.Fatal("Begin inside a transaction")
	}
	c.inTx = true
	return nil
}

func (c *checker) Commit(CommitInfo) error {
	if !c.inTx {
		c.t.Fatal("Commit outside a transaction")
	}
	c.inTx = false
	return nil
}

// Message: transactional messages only inside a transaction; only they may be marked as maybe
// rolled back.
func (c *checker) Message(m LogicalMessage) error {
	if m.Transactional && !c.inTx {
		c.t.Fatal("transactional message outside a transaction")
	}
	if m.MaybeRolledBack && !m.Transactional {
		c.t.Fatal("a non-transactional message marked maybe rolled back")
	}
	// The relay decodes the content of its own prefix as an envelope: never a panic, and what is
	// accepted is canonical.
	if strings.HasPrefix(m.Prefix, "pgoutbox:") {
		e, err := envelope.Decode(m.Content)
		if err != nil && !errors.Is(err, envelope.ErrMalformed) {
			c.t.Fatalf("envelope error %v does not wrap ErrMalformed", err)
		}
		if err == nil && !bytes.Equal(envelope.Append(nil, &e), m.Content) {
			c.t.Fatal("envelope accepted but not canonical")
		}
	}
	return nil
}

func (c *checker) Insert(row Row) error {
	if !c.inTx {
		c.t.Fatal("Insert outside a transaction")
	}
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
		// Logical messages: in a transaction, outside one, streamed, in a rolled-back subtransaction.
		env := envelope.Append(nil, &envelope.Envelope{Destination: "d", Key: "k", Headers: map[string]string{"h": "v"}, Payload: []byte("p")})
		msg := encMessageAt(true, 0x10, "pgoutbox:app", string(env))
		f.Add(frame(flags,
			encMessageAt(false, 0x01, "other", "x"),
			encBegin(1, 2), msg, rel, ins, msg, encCommit(1, 2),
			encStreamStart(5, true), streamed(5, msg), streamed(6, rel), streamed(6, ins), streamed(5, encMessageAt(false, 2, "p", "")), encStreamStop(),
			encStreamAbort(5, 6),
			encStreamStart(5, false), streamed(5, msg), streamed(5, ins), encStreamStop(),
			encStreamCommit(5, 0x500, 0x508)))
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
		h := &checker{t: t}
		for rest := in[1:]; len(rest) >= 2; {
			n := int(binary.BigEndian.Uint16(rest))
			rest = rest[2:]
			n = min(n, len(rest))
			msg := rest[:n:n]
			rest = rest[n:]
			if err := d.Decode(msg, h); err != nil {
				// What a caller does after an error.
				d.Reset()
				h.inTx = false
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
