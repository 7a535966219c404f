package decoder

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/jackc/pglogrepl"
)

// LogicalMessage is a logical decoding message: what pg_logical_emit_message(transactional, prefix,
// content) wrote, as pgoutput sends it when START_REPLICATION asks for messages 'true' (PostgreSQL 14+).
type LogicalMessage struct {
	// LSN is the position of the message's WAL record: unique, and increasing in WAL order.
	LSN pglogrepl.LSN
	// Transactional says the message commits or rolls back with its transaction. A transactional
	// message arrives between its transaction's Begin and Commit (at Stream Commit for a streamed
	// one) and only if the transaction committed; a non-transactional one arrives as soon as it is
	// decoded, outside any transaction, even if the transaction that wrote it rolled back.
	Transactional bool
	// MaybeRolledBack marks a transactional message of a streamed transaction that was received
	// before one of the transaction's subtransactions rolled back. pgoutput tags streamed rows with
	// their subtransaction's xid, so the rows of a rolled-back savepoint are dropped at Stream Abort,
	// but it tags streamed messages with the top-level xid only: whether such a message belonged to
	// the rolled-back savepoint cannot be told. Messages received after the rollback never are.
	MaybeRolledBack bool
	// Prefix and Content alias the bytes passed to Decode (or a buffer of the decoder for streamed
	// transactions) and stay valid as long as the caller keeps them.
	Prefix  string
	Content []byte
}

// MessageHandler is implemented by a Handler that wants logical decoding messages. Transactional
// messages are passed between the Begin and the Commit of their transaction, in WAL order with its
// rows; non-transactional ones as they come (pgoutput sends them outside any transaction). A Handler
// without this method never sees messages: they are validated and ignored.
type MessageHandler interface {
	Message(m LogicalMessage) error
}

// parseLogicalMessage parses a Message body (after the type byte and any streaming xid):
// Int8 flags, Int64 LSN, String prefix, Int32 length, content.
func parseLogicalMessage(body []byte) (LogicalMessage, error) {
	r := reader{b: body}
	flags, ok := r.u8()
	if !ok {
		return LogicalMessage{}, malformed("Message", "truncated before flags")
	}
	at, ok := r.u64()
	if !ok {
		return LogicalMessage{}, malformed("Message", "truncated before LSN")
	}
	prefix, ok := r.cstring()
	if !ok {
		return LogicalMessage{}, malformed("Message", "prefix is not NUL-terminated")
	}
	n, ok := r.u32()
	if !ok {
		return LogicalMessage{}, malformed("Message", "truncated before content length")
	}
	if uint64(n) != uint64(r.remaining()) {
		return LogicalMessage{}, malformed("Message", "content length %d, but %d bytes remain", n, r.remaining())
	}
	content := body[r.off:len(body):len(body)]
	return LogicalMessage{LSN: lsn(at), Transactional: flags&1 != 0, Prefix: aliasString(prefix), Content: content}, nil
}

// message parses a Message body and passes it to h when h wants messages.
func (d *Decoder) message(body []byte, h Handler, maybeRolledBack bool) error {
	m, err := parseLogicalMessage(body)
	if err != nil {
		return err
	}
	m.MaybeRolledBack = maybeRolledBack && m.Transactional
	return emit(m, h)
}

func emit(m LogicalMessage, h Handler) error {
	mh, ok := h.(MessageHandler)
	if !ok {
		return nil
	}
	if err := mh.Message(m); err != nil {
		return fmt.Errorf("decoder: handle logical message at %s: %w", m.LSN, err)
	}
	return nil
}

// idleMessage handles a Message outside a transaction: only non-transactional ones come there.
func (d *Decoder) idleMessage(body []byte, h Handler) error {
	m, err := parseLogicalMessage(body)
	if err != nil {
		return err
	}
	if m.Transactional {
		return protocolError("transactional Message at %s outside a transaction", m.LSN)
	}
	return emit(m, h)
}

// streamMessage handles a Message inside a stream block (body after the xid): a transactional one is
// buffered with the stream's changes, after its index among the stream's messages; a
// non-transactional one (which pgoutput never sends there) is passed on at once.
func (d *Decoder) streamMessage(subxid uint32, msg []byte, h Handler) error {
	m, err := parseLogicalMessage(msg)
	if err != nil {
		return err
	}
	if !m.Transactional {
		return emit(m, h)
	}
	tx := d.streams[d.streamXid]
	rec := make([]byte, 4, 4+len(msg))
	binary.BigEndian.PutUint32(rec, uint32(tx.messages))
	if err := d.buffer(subxid, 'M', append(rec, msg...)); err != nil {
		return err
	}
	tx.messages++
	return nil
}

// replayMessage replays a buffered Message of tx (its index, then the body).
func (d *Decoder) replayMessage(tx *streamTxn, rec []byte, h Handler) error {
	if len(rec) < 4 {
		return malformed("Message", "buffered record of %d bytes", len(rec))
	}
	return d.message(rec[4:], h, tx.maybeRolledBack(int(binary.BigEndian.Uint32(rec))))
}

// xidRun is a run of consecutive streamed changes (not messages) of one (sub)transaction, with the
// number of messages buffered before its last change.
type xidRun struct {
	xid  uint32
	msgs int
}

// noteChange records a streamed change of subxid (not a message).
func (tx *streamTxn) noteChange(subxid uint32) {
	if n := len(tx.runs); n > 0 && tx.runs[n-1].xid == subxid {
		tx.runs[n-1].msgs = tx.messages
		return
	}
	tx.runs = append(tx.runs, xidRun{xid: subxid, msgs: tx.messages})
}

// subAborted records the Stream Abort of subtransaction subxid. pgoutput tags a streamed row with
// its subtransaction's xid but a streamed message with the top-level xid only, so the messages the
// subtransaction wrote cannot be told apart directly. One backend writes a subtransaction's WAL in
// one stretch, ended by its abort, and everything in that stretch belongs to it or to its
// subtransactions, which were aborted before it (their Stream Aborts come first). So a change of a
// transaction not aborted, received after a message, proves that the message is not the
// subtransaction's; the messages after the last such change may be.
func (tx *streamTxn) subAborted(subxid uint32) {
	if tx.aborted == nil {
		tx.aborted = make(map[uint32]struct{})
	}
	tx.aborted[subxid] = struct{}{} // its spilled records are skipped at replay
	for len(tx.runs) > 0 {
		if _, gone := tx.aborted[tx.runs[len(tx.runs)-1].xid]; !gone {
			break
		}
		tx.runs = tx.runs[:len(tx.runs)-1]
	}
	from := 0
	if n := len(tx.runs); n > 0 {
		from = tx.runs[n-1].msgs
	}
	if from < tx.messages {
		tx.maybe = append(tx.maybe, [2]int{from, tx.messages})
	}
}

// maybeRolledBack reports whether message i of tx may belong to a rolled-back subtransaction.
func (tx *streamTxn) maybeRolledBack(i int) bool {
	for _, r := range tx.maybe {
		if i >= r[0] && i < r[1] {
			return true
		}
	}
	return false
}

// aliasString returns b as a string without copying; b must never be modified afterwards.
func aliasString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
