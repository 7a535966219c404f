// Package outbox is a transactional outbox for PostgreSQL: the library an application calls inside its
// own transactions, and the in-process relay that delivers committed messages from the WAL.
//
// # Writing messages
//
// Put the schema in your migrations with [GetSchemaSQL] (or run [Migrate]), then call [Enqueue] inside
// the transaction that changes your business rows:
//
//	err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{}, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, "UPDATE orders SET status = 'placed' WHERE id = $1", id); err != nil {
//			return err
//		}
//		return outbox.Enqueue(ctx, "app", tx, outbox.Message{Destination: outbox.EventBus, Key: "order-42", Payload: body})
//	})
//
// The message commits or rolls back with the transaction; nothing is sent from the application.
//
// # Delivering messages
//
// [Start] runs a [Relay]: it streams the outbox table's INSERTs from a pgoutput replication slot,
// delivers each message to the [Handler] or [Sink] of its destination — in commit order per Key, in
// parallel across keys — and moves the slot only past messages that were acked. A message that keeps
// failing is retried with capped exponential backoff and then written to the dead-letter table;
// a sink that reports itself unavailable ([ErrUnavailable]) blocks its messages without dead-lettering
// anything. See the guarantees I1–I5 in the project's DESIGN.md: no loss, no phantom, order per key,
// ack means delivered, duplicates only after faults (with the same message id).
//
// [Replay], [RequeueDeadLetters], [PurgeDeadLetters] and [Prune] manage retained rows and dead letters.
//
// Everything in this package is safe for concurrent use unless its documentation says otherwise. The
// package never imports a Kafka client, an HTTP server or a CLI framework: sinks live in sink/...
package outbox
