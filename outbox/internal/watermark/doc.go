// Package watermark computes the flush LSN that the relay may report to
// PostgreSQL, so that guarantee I4 holds: whatever lies at or below the slot's
// confirmed_flush_lsn was already acked by its sink.
//
// The relay receives transactions from the logical replication stream in
// order, routes each transaction's rows to parallel lanes, and the lanes ack
// rows in any order. A [Tracker] keeps one ordered queue of received items:
//
//   - a transaction ([Tx]), opened by [Tracker.Begin] (one open at a time), grown by [Tx.Add],
//     acked row by row by [Tx.Ack] and sealed by [Tracker.Commit] (with its
//     TransactionEndLSN) or [Tracker.Abandon] (stream broke before Commit:
//     sealed without an LSN);
//   - a keepalive, added by [Tracker.Keepalive]: a zero-row, already sealed
//     item carrying the server's WAL end. Consecutive keepalives coalesce.
//
// [Tracker.Flushed] pops the longest prefix of sealed, fully acked items and
// returns the largest LSN they carried (never less than any value returned
// before, nor than the start position). So the flush LSN is the end LSN of the
// last item T such that T and every item received before it are fully acked:
// a fully acked transaction behind an unacked one does not count, and a
// keepalive's WAL end is confirmed only once everything received before it is
// acked: confirming it while messages are in flight would lose them after a
// crash. docs/design.md in the repository describes the watermark's place in
// the relay.
//
// While an item waits (a parked key, a slow sink), the transactions acked
// behind it cannot be popped; Flushed then compacts each run of sealed, fully
// acked items into one keepalive-like item carrying the run's largest LSN, so
// the queue grows by one item per run, not per transaction.
//
// Acks are lock-free: each [Tx] holds an atomic counter of rows routed but not
// yet acked, so lanes never contend on a tracker-wide lock. Everything else
// (Begin, Commit, Abandon, Keepalive, Flushed, Pending, Idle) happens once per
// transaction or per status tick and takes the tracker's mutex.
//
// Misuse that would silently break I4 — acking more rows than were added (for
// example adding rows after routing them), adding rows to or sealing a
// transaction that is already sealed, beginning a transaction while another
// is open (the queue order must be the commit order) — panics, like a
// negative [sync.WaitGroup] counter.
package watermark
