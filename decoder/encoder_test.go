package decoder

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// A tiny pgoutput encoder for tests, following
// https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html.

type col struct {
	name  string
	typ   uint32
	flags uint8
}

// val is one TupleData column: kind plus data for 't' and 'b'.
type val struct {
	kind byte
	data []byte
}

func txt(s string) val               { return val{KindText, []byte(s)} }
func bin(b ...byte) val              { return val{KindBinary, b} }
func binv(b []byte) val              { return val{KindBinary, b} }
func null() val                      { return val{KindNull, nil} }
func unchanged() val                 { return val{KindUnchanged, nil} }
func be16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func be32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func be64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func cstr(b []byte, s string) []byte { return append(append(b, s...), 0) }

// ts2000 is 2024-01-02T03:04:05.000006Z in microseconds since 2000-01-01.
const ts2000 = uint64(757479845000006)

func encBegin(final uint64, xid uint32) []byte {
	b := []byte{'B'}
	b = be64(b, final)
	b = be64(b, ts2000)
	return be32(b, xid)
}

func encCommit(commit, end uint64) []byte {
	b := []byte{'C', 0}
	b = be64(b, commit)
	b = be64(b, end)
	return be64(b, ts2000)
}

func encRelation(oid uint32, ns, name string, cols ...col) []byte {
	b := []byte{'R'}
	b = be32(b, oid)
	b = cstr(b, ns)
	b = cstr(b, name)
	b = append(b, 'd')
	b = be16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.flags)
		b = cstr(b, c.name)
		b = be32(b, c.typ)
		b = be32(b, 0xffffffff)
	}
	return b
}

func appendTuple(b []byte, vals []val) []byte {
	b = be16(b, uint16(len(vals)))
	for _, v := range vals {
		b = append(b, v.kind)
		if v.kind == KindText || v.kind == KindBinary {
			b = be32(b, uint32(len(v.data)))
			b = append(b, v.data...)
		}
	}
	return b
}

func encInsert(oid uint32, vals ...val) []byte {
	b := []byte{'I'}
	b = be32(b, oid)
	b = append(b, 'N')
	return appendTuple(b, vals)
}

func encUpdate(oid uint32, old []val, vals ...val) []byte {
	b := []byte{'U'}
	b = be32(b, oid)
	if old != nil {
		b = append(b, 'O')
		b = appendTuple(b, old)
	}
	b = append(b, 'N')
	return appendTuple(b, vals)
}

func encDelete(oid uint32, key ...val) []byte {
	b := []byte{'D'}
	b = be32(b, oid)
	b = append(b, 'K')
	return appendTuple(b, key)
}

func encTruncate(oids ...uint32) []byte {
	b := []byte{'T'}
	b = be32(b, uint32(len(oids)))
	b = append(b, 0)
	for _, o := range oids {
		b = be32(b, o)
	}
	return b
}

func encType(oid uint32, ns, name string) []byte {
	return cstr(cstr(be32([]byte{'Y'}, oid), ns), name)
}

func encOrigin(name string) []byte { return cstr(be64([]byte{'O'}, 42), name) }

// encMessage encodes a transactional logical decoding message at LSN 99.
func encMessage(prefix string, content string) []byte { return encMessageAt(true, 99, prefix, content) }

func encMessageAt(transactional bool, at uint64, prefix string, content string) []byte {
	b := []byte{'M', 0}
	if transactional {
		b[1] = 1
	}
	b = be64(b, at)
	b = cstr(b, prefix)
	b = be32(b, uint32(len(content)))
	return append(b, content...)
}

// streamed inserts the (sub)transaction xid after the type byte, as pgoutput does for
// changes inside a stream block.
func streamed(xid uint32, msg []byte) []byte {
	b := append([]byte{msg[0]}, be32(nil, xid)...)
	return append(b, msg[1:]...)
}

func encStreamStart(xid uint32, first bool) []byte {
	b := be32([]byte{'S'}, xid)
	if first {
		return append(b, 1)
	}
	return append(b, 0)
}

func encStreamStop() []byte { return []byte{'E'} }

func encStreamCommit(xid uint32, commit, end uint64) []byte {
	b := be32([]byte{'c'}, xid)
	b = append(b, 0)
	b = be64(b, commit)
	b = be64(b, end)
	return be64(b, ts2000)
}

func encStreamAbort(xid, subxid uint32) []byte {
	return be32(be32([]byte{'A'}, xid), subxid)
}

// recorder is a Handler that records events as strings.
type recorder struct {
	events []string
	rows   []Row // retained rows: Values copied as a slice header, elements aliased
	fail   func(event string) error
}

func (r *recorder) add(e string) error {
	r.events = append(r.events, e)
	if r.fail != nil {
		return r.fail(e)
	}
	return nil
}

func (r *recorder) Begin(tx TxInfo) error {
	return r.add(fmt.Sprintf("B xid=%d final=%s t=%s", tx.Xid, tx.FinalLSN, tx.CommitTime.Format("2006-01-02T15:04:05.000000Z")))
}

func (r *recorder) Insert(row Row) error {
	if len(row.Values) != len(row.Relation.Columns) || len(row.Kinds) != len(row.Values) {
		return fmt.Errorf("row has %d values, %d kinds, relation %d columns", len(row.Values), len(row.Kinds), len(row.Relation.Columns))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "I %s.%s", row.Relation.Namespace, row.Relation.Name)
	for i, c := range row.Relation.Columns {
		fmt.Fprintf(&sb, " %s=%s", c.Name, fmtVal(row.Kinds[i], row.Values[i]))
	}
	// Retain the elements (allowed), not the slices.
	r.rows = append(r.rows, Row{Relation: row.Relation, Values: append([][]byte(nil), row.Values...), Kinds: append([]byte(nil), row.Kinds...)})
	return r.add(sb.String())
}

func fmtVal(kind byte, v []byte) string {
	switch kind {
	case KindNull:
		if v != nil {
			return "BAD-null-with-value"
		}
		return "NULL"
	case KindUnchanged:
		return "TOAST"
	case KindBinary:
		return fmt.Sprintf("b%x", v)
	default:
		return fmt.Sprintf("%q", v)
	}
}

func (r *recorder) Commit(c CommitInfo) error {
	return r.add(fmt.Sprintf("C xid=%d commit=%s end=%s", c.Xid, c.CommitLSN, c.EndLSN))
}

func TestEncoderSanity(t *testing.T) {
	t.Parallel()
	if got := pgTime(ts2000).Format("2006-01-02T15:04:05.000000Z"); got != "2024-01-02T03:04:05.000006Z" {
		t.Fatalf("pgTime = %s", got)
	}
}
