// Package decoder turns pgoutput logical-replication messages into relations and rows.
//
// A [Decoder] takes the payload of one XLogData message at a time (see
// [Decoder.Decode]) and calls a [Handler] with transaction boundaries ([Handler.Begin],
// [Handler.Commit]) and inserted rows ([Handler.Insert]). It understands the pgoutput
// protocol version 1 and, when [Config.Streaming] is set, the version 2 streaming of
// in-progress transactions: streamed changes are buffered per top-level transaction
// (spilled to disk past [Config.MemoryLimit]) and replayed at Stream Commit, or dropped
// at Stream Abort (whole transaction or one subtransaction).
//
// Relation messages are cached by OID and replaced when re-sent, so a column added with
// ALTER TABLE mid-stream is picked up; callers should look columns up by name with
// [Relation.Index]. Update, Delete, Truncate, Type and Origin records are validated and
// ignored: the outbox only inserts.
//
// Logical decoding messages (pg_logical_emit_message, sent when START_REPLICATION asks for
// messages 'true') go to a Handler that also implements [MessageHandler]: transactional ones
// between their transaction's Begin and Commit, in WAL order with its rows (buffered and replayed
// at Stream Commit for a streamed transaction), non-transactional ones as they come. A streamed
// message that may belong to a rolled-back subtransaction is marked
// ([LogicalMessage.MaybeRolledBack]): pgoutput tags it with the top-level xid only. Other Handlers
// never see messages.
//
// Every message is parsed by hand from bytes with bounds checks; malformed input yields
// an error wrapping [ErrMalformed] (or [ErrProtocol] for messages out of order), never a
// panic. Tuple data is decoded into slices the decoder reuses, so decoding a
// non-streamed insert does not allocate.
//
// The message formats are described in
// [Logical Replication Message Formats].
//
// # Concurrency
//
// A Decoder is NOT safe for concurrent use: one goroutine (the one owning the
// replication stream) calls Decode, Reset and Close. After Decode returns an error, the
// decoder's position in the stream is unknown: reconnect, call [Decoder.Reset], and
// resume from the last confirmed position.
//
// [Logical Replication Message Formats]: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
package decoder
