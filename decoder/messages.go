package decoder

import (
	"github.com/jackc/pglogrepl"
)

func lsn(v uint64) pglogrepl.LSN { return pglogrepl.LSN(v) }

// parseRelation parses a Relation body (after the type byte and any streaming xid):
// Int32 OID, String namespace, String name, Int8 replica identity, Int16 column count,
// then per column Int8 flags, String name, Int32 type OID, Int32 type modifier.
func parseRelation(body []byte) (*Relation, error) {
	r := reader{b: body}
	oid, ok := r.u32()
	if !ok {
		return nil, malformed("Relation", "truncated before relation OID")
	}
	ns, ok := r.cstring()
	if !ok {
		return nil, malformed("Relation", "namespace of OID %d is not NUL-terminated", oid)
	}
	name, ok := r.cstring()
	if !ok {
		return nil, malformed("Relation", "name of OID %d is not NUL-terminated", oid)
	}
	ident, ok := r.u8()
	if !ok {
		return nil, malformed("Relation", "truncated before replica identity of OID %d", oid)
	}
	ncols, ok := r.u16()
	if !ok {
		return nil, malformed("Relation", "truncated before column count of OID %d", oid)
	}
	// Each column takes at least 10 bytes: flags, empty name's NUL, type OID, type modifier.
	if int(ncols)*10 > r.remaining() {
		return nil, malformed("Relation", "column count %d of OID %d needs at least %d bytes, %d remain",
			ncols, oid, int(ncols)*10, r.remaining())
	}
	rel := &Relation{
		ID:              oid,
		Namespace:       string(ns),
		Name:            string(name),
		ReplicaIdentity: ident,
		Columns:         make([]Column, ncols),
	}
	for i := range rel.Columns {
		c := &rel.Columns[i]
		flags, ok := r.u8()
		if !ok {
			return nil, malformed("Relation", "truncated before flags of column %d of OID %d", i, oid)
		}
		cname, ok := r.cstring()
		if !ok {
			return nil, malformed("Relation", "name of column %d of OID %d is not NUL-terminated", i, oid)
		}
		typ, ok := r.u32()
		if !ok {
			return nil, malformed("Relation", "truncated before type OID of column %d of OID %d", i, oid)
		}
		mod, ok := r.u32()
		if !ok {
			return nil, malformed("Relation", "truncated before type modifier of column %d of OID %d", i, oid)
		}
		c.Flags, c.Name, c.TypeOID, c.TypeMod = flags, string(cname), typ, int32(mod)
	}
	if r.remaining() != 0 {
		return nil, malformed("Relation", "%d trailing bytes after OID %d", r.remaining(), oid)
	}
	return rel, nil
}

// tuple parses TupleData (Int16 column count, then per column a kind byte and, for
// 't' and 'b', an Int32 length and that many bytes) into d.values and d.kinds and
// returns the column count. Values alias r.b.
func (d *Decoder) tuple(r *reader, msg string) (int, error) {
	n16, ok := r.u16()
	if !ok {
		return 0, malformed(msg, "truncated before tuple column count")
	}
	n := int(n16)
	// Each column takes at least its kind byte.
	if n > r.remaining() {
		return 0, malformed(msg, "tuple column count %d exceeds the %d remaining bytes", n, r.remaining())
	}
	if cap(d.values) < n {
		d.values = make([][]byte, n)
		d.kinds = make([]byte, n)
	}
	values, kinds := d.values[:n], d.kinds[:n]
	for i := range n {
		k, ok := r.u8()
		if !ok {
			return 0, malformed(msg, "truncated before kind of column %d", i)
		}
		kinds[i] = k
		switch k {
		case KindNull, KindUnchanged:
			values[i] = nil
		case KindText, KindBinary:
			l, ok := r.u32()
			if !ok {
				return 0, malformed(msg, "truncated before length of column %d", i)
			}
			v, ok := r.bytes(l)
			if !ok {
				return 0, malformed(msg, "column %d length %d exceeds the %d remaining bytes", i, l, r.remaining())
			}
			values[i] = v
		default:
			return 0, malformed(msg, "column %d has unknown kind %q", i, k)
		}
	}
	return n, nil
}

// validateUpdate checks an Update body: Int32 OID, optional 'K' or 'O' old tuple, 'N' new tuple.
func (d *Decoder) validateUpdate(body []byte) error {
	r := reader{b: body}
	if _, ok := r.u32(); !ok {
		return malformed("Update", "truncated before relation OID")
	}
	tag, ok := r.u8()
	if !ok {
		return malformed("Update", "truncated before tuple tag")
	}
	if tag == 'K' || tag == 'O' {
		if _, err := d.tuple(&r, "Update"); err != nil {
			return err
		}
		if tag, ok = r.u8(); !ok {
			return malformed("Update", "truncated before new tuple tag")
		}
	}
	if tag != 'N' {
		return malformed("Update", "tuple tag is %q, want 'K', 'O' or 'N'", tag)
	}
	if _, err := d.tuple(&r, "Update"); err != nil {
		return err
	}
	if r.remaining() != 0 {
		return malformed("Update", "%d trailing bytes", r.remaining())
	}
	return nil
}

// validateDelete checks a Delete body: Int32 OID, 'K' or 'O', old tuple.
func (d *Decoder) validateDelete(body []byte) error {
	r := reader{b: body}
	if _, ok := r.u32(); !ok {
		return malformed("Delete", "truncated before relation OID")
	}
	tag, ok := r.u8()
	if !ok {
		return malformed("Delete", "truncated before tuple tag")
	}
	if tag != 'K' && tag != 'O' {
		return malformed("Delete", "tuple tag is %q, want 'K' or 'O'", tag)
	}
	if _, err := d.tuple(&r, "Delete"); err != nil {
		return err
	}
	if r.remaining() != 0 {
		return malformed("Delete", "%d trailing bytes", r.remaining())
	}
	return nil
}

// validateTruncate checks a Truncate body: Int32 relation count, Int8 options, Int32 OIDs.
func validateTruncate(body []byte) error {
	r := reader{b: body}
	n, ok := r.u32()
	if !ok {
		return malformed("Truncate", "truncated before relation count")
	}
	if _, ok := r.u8(); !ok {
		return malformed("Truncate", "truncated before options")
	}
	if uint64(n)*4 != uint64(r.remaining()) {
		return malformed("Truncate", "relation count %d needs %d bytes, %d remain", n, uint64(n)*4, r.remaining())
	}
	return nil
}

// validateType checks a Type body: Int32 OID, String namespace, String name.
func validateType(body []byte) error {
	r := reader{b: body}
	if _, ok := r.u32(); !ok {
		return malformed("Type", "truncated before type OID")
	}
	if _, ok := r.cstring(); !ok {
		return malformed("Type", "namespace is not NUL-terminated")
	}
	if _, ok := r.cstring(); !ok {
		return malformed("Type", "name is not NUL-terminated")
	}
	if r.remaining() != 0 {
		return malformed("Type", "%d trailing bytes", r.remaining())
	}
	return nil
}

// validateOrigin checks an Origin body: Int64 commit LSN, String name.
func validateOrigin(body []byte) error {
	r := reader{b: body}
	if _, ok := r.u64(); !ok {
		return malformed("Origin", "truncated before commit LSN")
	}
	if _, ok := r.cstring(); !ok {
		return malformed("Origin", "name is not NUL-terminated")
	}
	if r.remaining() != 0 {
		return malformed("Origin", "%d trailing bytes", r.remaining())
	}
	return nil
}
