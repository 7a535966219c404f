package decoder

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Column is one column of a Relation, as sent in a pgoutput Relation message.
type Column struct {
	// Name is the column name.
	Name string
	// TypeOID is the OID of the column's data type.
	TypeOID uint32
	// Flags is 1 when the column is part of the replica identity key, else 0.
	Flags uint8
	// TypeMod is the column's type modifier (atttypmod), -1 when none.
	TypeMod int32
}

// Relation describes a published table. A Relation is immutable once handed out: a
// re-sent Relation message replaces the cached pointer, it does not modify the old one,
// so a Relation may be shared across goroutines.
type Relation struct {
	// ID is the relation OID.
	ID uint32
	// Namespace is the schema name ("" means pg_catalog).
	Namespace string
	// Name is the table name.
	Name string
	// ReplicaIdentity is the replica identity setting ('d', 'n', 'f' or 'i').
	ReplicaIdentity uint8
	// Columns are the published columns, in tuple order.
	Columns []Column
}

// Index returns the position of the column called name, or -1 if there is none.
// Decode by column name: positions change when columns are added or dropped.
func (r *Relation) Index(name string) int {
	for i := range r.Columns {
		if r.Columns[i].Name == name {
			return i
		}
	}
	return -1
}

// TxInfo starts a transaction: from a Begin message, or synthesized at Stream Commit
// for a streamed transaction (then FinalLSN is the commit LSN).
type TxInfo struct {
	Xid        uint32
	FinalLSN   pglogrepl.LSN
	CommitTime time.Time
}

// CommitInfo ends a transaction. EndLSN is the transaction's end LSN
// (TransactionEndLSN): the position to confirm once every row of the transaction is
// acknowledged.
type CommitInfo struct {
	// Xid is the transaction id: from the preceding Begin, or the Stream Commit's xid.
	Xid        uint32
	CommitLSN  pglogrepl.LSN
	EndLSN     pglogrepl.LSN
	CommitTime time.Time
}

// Column value kinds in Row.Kinds, as in pgoutput TupleData.
const (
	KindNull      = 'n' // NULL: Values[i] is nil
	KindUnchanged = 'u' // unchanged TOASTed value (not sent): Values[i] is nil
	KindText      = 't' // text format
	KindBinary    = 'b' // binary format
)

// Row is one inserted tuple.
//
// Values[i] aliases the bytes passed to Decode (or a buffer the decoder allocated for
// replayed streamed data) and stays valid as long as the caller keeps it; callers may
// retain the elements, but NOT the Values and Kinds slices themselves, which the
// decoder reuses for the next row.
type Row struct {
	Relation *Relation
	// Values has one entry per column of Relation; nil for NULL and unchanged TOAST.
	Values [][]byte
	// Kinds has one entry per column: KindNull, KindUnchanged, KindText or KindBinary.
	Kinds []byte
}

// Handler receives decoded transactions. Its methods are called synchronously from
// Decode; an error returned by any of them stops Decode and is returned wrapped.
type Handler interface {
	Begin(tx TxInfo) error
	Insert(row Row) error
	Commit(c CommitInfo) error
}
