// Package oracle judges a relay run against the guarantees I1–I5 (docs/design.md). The outbox,
// sink/kafka and faults test suites share it, so the guarantees are checked by one piece of code.
//
// A [Ledger] records what the test committed, rolled back, or lost track of (a transaction whose
// COMMIT result never came back); [Ledger.Commit] and the random traffic of [Ledger.Generate] (workers
// owning their keys, rollbacks, rolled-back savepoints, pauses) record their outcomes in it.
//
// What a sink delivered is a list of [Delivery] values in the sink's order per key: the in-process
// [Sink] collects them, the [github.com/pgoutbox/pgoutbox/internal/oracle/topic] package reads them
// from a Kafka topic, and a test can parse them from anywhere else (stdout, a webhook receiver).
// [Ledger.Check] judges them and returns a [Verdict]: lost (I1), phantom (I2), order violations (I3)
// and duplicates (I5), plus deliveries of ids never enqueued and of altered keys or payloads.
// [Ledger.Verify] waits until every committed message was delivered or dead-lettered, then checks.
//
// [Ledger.WatchI4] polls the slot's confirmed_flush_lsn while the relay runs and reports every committed
// message at or below it that its sink had not acked (I4), given a function that says whether an id
// was delivered. While the slot's initial snapshot is pending, the confirmed position must stay at the
// slot's creation instead.
//
// Everything here is safe for concurrent use unless a type says otherwise. The package is for tests:
// it reports through [T] (which [testing.TB] satisfies) and never needs a database for the judging
// itself.
package oracle
