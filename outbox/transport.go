package outbox

import (
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/envelope"
	"github.com/pgoutbox/pgoutbox/internal/names"
)

// Transport is how Enqueue writes messages. Both commit or roll back with the caller's transaction
// (and its savepoints), take the same Message with the same validation and limits, and reach the
// relay in commit order, interleaved with each other as they were written.
type Transport uint8

const (
	// Table writes each message as a row of <schema>.pkg_outbox (the default). The row stays until
	// the relay's retention prunes it: Replay can deliver it again, and the initial snapshot of a new
	// slot delivers the rows committed before the slot existed. The table needs vacuuming.
	Table Transport = iota
	// LogicalMessage writes each message into the WAL alone, as a transactional logical decoding
	// message (pg_logical_emit_message(true, 'pgoutbox:<schema>', envelope)): no table row, no index
	// entries, no vacuum, nothing to prune. The relay must be started with WithLogicalMessages
	// (PostgreSQL 14 or later). Nothing is retained once the relay confirmed it: such messages cannot
	// be replayed, and a slot created later never sees those committed before it. The message's
	// CreatedAt is the application's clock when Enqueue ran (the table's is the transaction's start by
	// the database's clock), and the relay hands it on with Seq set to the LSN of its WAL record.
	LogicalMessage
)

// String returns "table" or "logical".
func (t Transport) String() string {
	switch t {
	case Table:
		return "table"
	case LogicalMessage:
		return "logical"
	}
	return fmt.Sprintf("Transport(%d)", uint8(t))
}

func (t Transport) validate() error {
	if t > LogicalMessage {
		return fmt.Errorf("%w: Enqueuer.Transport is %d, want Table or LogicalMessage", ErrInvalidMessage, uint8(t))
	}
	return nil
}

// logical holds the statements of the LogicalMessage transport for one schema.
type logical struct {
	prefix   string // the messages' prefix: "pgoutbox:<schema>"
	emitOne  string // one message: its envelope is $1
	emitMany string // several: $1 is the array of their envelopes, emitted in array order
}

func logicalStatements(schema string) logical {
	prefix := names.MessagePrefix(schema)
	call := "pg_catalog.pg_logical_emit_message(true, " + quoteLiteral(prefix) + ", "
	return logical{
		prefix:  prefix,
		emitOne: "SELECT " + call + "$1::bytea)",
		// count() makes it one result row whatever the batch; unnest yields the elements in order.
		emitMany: "SELECT count(" + call + "m)) FROM unnest($1::bytea[]) AS m",
	}
}

// emitStatement returns the statement that writes validated rows as logical messages: with one
// parameter (the envelope) when single is set, else with the array form (tests force it for one
// message).
func emitStatement(st *statements, rows []outboxRow, single bool) (string, []any) {
	now := time.Now()
	if single {
		env := rows[0].envelope(now)
		return st.emitOne, []any{envelope.Append(nil, &env)}
	}
	return st.emitMany, []any{envelopes(rows, now)}
}

func (r *outboxRow) envelope(now time.Time) envelope.Envelope {
	return envelope.Envelope{ID: r.uid, CreatedAt: now, Destination: r.destination, Route: r.route, Key: r.key,
		Type: r.typ, Headers: r.hdr, Payload: r.payload}
}

// envelopes encodes rows into one buffer and returns a slice per message.
func envelopes(rows []outboxRow, now time.Time) [][]byte {
	envs := make([]envelope.Envelope, len(rows))
	size := 0
	for i := range rows {
		envs[i] = rows[i].envelope(now)
		size += envelope.Size(&envs[i])
	}
	buf := make([]byte, 0, size)
	out := make([][]byte, len(rows))
	for i := range envs {
		start := len(buf)
		buf = envelope.Append(buf, &envs[i])
		out[i] = buf[start:len(buf):len(buf)]
	}
	return out
}
