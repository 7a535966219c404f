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
// An [Enqueuer] with Transport [LogicalMessage] writes the same messages into the WAL alone
// (pg_logical_emit_message): no table row, index entries, vacuum or pruning, at the price of no replay
// and no initial snapshot for them; the relay delivers them with [WithLogicalMessages]. [Table] is the
// default. docs/daemon.md in the repository says when to choose which, with measurements.
//
// # Delivering messages
//
// [Start] runs a [Relay]: it streams the outbox table's INSERTs from a pgoutput replication slot,
// delivers each message to the [Handler] or [Sink] of its destination — in commit order per Key, in
// parallel across keys — and moves the slot only past messages that were acked. A message that fails
// parks its key (its later messages wait behind it, every other key keeps flowing) and is retried with
// capped exponential backoff, then written to the dead-letter table; a sink that reports itself
// unavailable ([ErrUnavailable]) blocks its destination without dead-lettering anything. The
// guarantees — I1 no loss, I2 no phantom, I3 order per key, I4 ack means delivered, I5 duplicates only
// after faults (with the same message id) — and the tests that prove them are described in
// docs/design.md in the repository.
//
// # The API by audience
//
// An application that writes messages needs [Message], [Destination] (with the example [EventBus]),
// [Enqueue] or an [Enqueuer] (its limits and [Transport]: [Table] or [LogicalMessage]), [Execer] and
// [SQLExecer] (database/sql), and for its
// migrations [GetSchemaSQL], [GetTeardownSQL] or [Migrate]. Enqueue and Migrate fail with
// [ErrInvalidSchema], [ErrInvalidMessage], [ErrPayloadTooLarge] or [ErrNotMigrated].
//
// An application that runs the relay needs [Start], [Relay], [Handler] and the [Option] values:
// [WithSink], [WithDefaultSink], [WithMaxAttempts], [WithRetryBackoff], [WithHandlerTimeout], [WithLanes],
// [WithBatchSize], [WithMaxInFlight], [WithMaxParkedPerKey], [WithMaxParked], [WithSlotName],
// [WithCreateSlot], [WithInitialSnapshot], [WithFailover], [WithInstanceID], [WithStatusInterval],
// [WithReadTimeout], [WithRetention], [WithStreaming], [WithStreamMemoryLimit], [WithSpillDir],
// [WithLogicalMessages], [WithLogger] and [WithObserver]. It watches the relay through [Relay.State]
// ([State]: [StateConnecting], [StateSnapshot], [StateStreaming], [StateStandby], [StateBackoff],
// [StateStopped]), [Relay.Stats] ([Stats], [ParkedStats], [IgnoredMessages]), [Relay.Blocked] and an
// [Observer]. A message whose destination has neither a handler nor a sink is dead-lettered with
// [ErrUnknownDestination].
//
// A sink author implements [Sink], which receives [Record] values, and reports per-record results
// with [BatchError], classified by [ErrUnavailable], [ErrPermanent] and [ErrNotAttempted] (wrapped with
// [Unavailable], [Permanent], [NotAttempted]; tested with [IsUnavailable], [IsPermanent]) and a wait the
// destination asked for ([RetryAfter], [RetryAfterOf]).
//
// An operator (the pgoutbox command uses these) manages dead letters with [ListDeadLetters],
// [RequeueDeadLetters] and [PurgeDeadLetters] ([DeadLetter], [DeadLetterFilter]) and re-delivers retained
// rows with [Replay] ([ReplayFilter], [ReplayResult]), all on a [Querier] or [Execer].
//
// Everything in this package is safe for concurrent use unless its documentation says otherwise. The
// package never imports a Kafka client, an HTTP server or a CLI framework: sinks live in sink/...
package outbox
