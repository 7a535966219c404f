package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/internal/envelope"
)

// WithLogicalMessages makes the relay deliver the messages Enqueue writes with the LogicalMessage
// transport (default off): START_REPLICATION asks pgoutput for logical decoding messages, which needs
// PostgreSQL 14 or later (Start fails on an older server). The relay delivers the transactional
// messages of its schema's prefix ("pgoutbox:<schema>") through the same lanes, order per key,
// retries, dead letters and confirmed position as the table's rows, interleaved with them in commit
// order; it ignores and counts messages with other prefixes and non-transactional ones
// (Stats.IgnoredMessages). A message whose envelope it cannot read is dead-lettered with the reason.
func WithLogicalMessages() Option { return func(c *relayConfig) { c.logicalMessages = true } }

// IgnoredMessages counts the logical decoding messages a relay with WithLogicalMessages received
// and did not deliver because they are not pgoutbox's (after a reconnect, PostgreSQL sends again what
// was not confirmed, so a message may be counted twice).
type IgnoredMessages struct {
	// OtherPrefix: transactional messages whose prefix is not the schema's "pgoutbox:<schema>".
	OtherPrefix int64
	// NonTransactional: messages written with pg_logical_emit_message(false, ...), which PostgreSQL
	// sends even when their transaction rolls back.
	NonTransactional int64
}

// malformedDestination is the destination of a dead letter whose envelope did not say one.
const malformedDestination Destination = "pgoutbox.malformed-envelope"

// errMaybeRolledBack is the dead-letter reason of a message that may belong to a rolled-back
// savepoint (see decoder.LogicalMessage.MaybeRolledBack).
var errMaybeRolledBack = errors.New("outbox: logical message of a streamed transaction received before one of its " +
	"savepoints rolled back: PostgreSQL's pgoutput does not say whether it belonged to that savepoint, so it is " +
	"not delivered; requeue it if its transaction meant to keep it")

// Message is the router's decoder.MessageHandler: a transactional message with the schema's prefix
// becomes a record of the open transaction.
func (rt router) Message(m decoder.LogicalMessage) error {
	r := rt.r
	switch {
	case !m.Transactional:
		r.ignoredNonTx.Add(1)
		return nil
	case m.Prefix != r.msgPrefix:
		r.ignoredPrefix.Add(1)
		return nil
	case r.skipping:
		return nil
	case r.cur == nil:
		return errors.New("outbox: logical message outside a transaction")
	}
	it := &item{tx: r.cur}
	it.rec.Seq = int64(m.LSN)
	it.rec.CommitLSN, it.rec.CommitTime = r.curLSN, r.curCommit
	env, err := envelope.Decode(m.Content)
	fillRecord(&it.rec, &env, m, len(m.Content) >= envelope.FixedLen && m.Content[0] == envelope.Version)
	if r.skipDelivered(&it.rec) {
		return nil
	}
	r.cur.Add(1)
	switch {
	case err != nil:
		it.rec.Payload = m.Content // all of it: a newer pgoutbox may read it
		return rt.deadLetterNow(it, fmt.Errorf("outbox: logical message at %s with prefix %s: %w", m.LSN, m.Prefix, err))
	case m.MaybeRolledBack:
		return rt.deadLetterNow(it, errMaybeRolledBack)
	}
	return r.batch.add(rt.ctx, it)
}

// fillRecord copies what env holds into rec; an envelope that failed to decode holds what came
// before the fault. Without its fixed part (id, created_at), the id is derived from the message's
// position (the same after a restart, so its dead letter is written once).
func fillRecord(rec *Record, env *envelope.Envelope, m decoder.LogicalMessage, fixed bool) {
	if fixed {
		rec.ID = uuid.UUID(env.ID).String()
		rec.CreatedAt = env.CreatedAt
	} else {
		rec.ID = uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%s@%s", m.Prefix, m.LSN)).String()
	}
	rec.Destination = Destination(env.Destination)
	if rec.Destination == "" {
		rec.Destination = malformedDestination
	}
	rec.Route, rec.Key, rec.Type = env.Route, env.Key, env.Type
	rec.Headers, rec.Payload = env.Headers, env.Payload
	if rec.Payload == nil {
		rec.Payload = []byte{}
	}
}

// deadLetterNow writes it to the dead letters at once, with err as the reason: it is never
// delivered. The decode goroutine waits for the write (such messages are rare).
func (rt router) deadLetterNow(it *item, err error) error {
	r := rt.r
	it.lastErr = err
	it.firstFail = time.Now()
	if !r.writeDeadLetter(rt.ctx, it) {
		return rt.ctx.Err()
	}
	return nil
}
