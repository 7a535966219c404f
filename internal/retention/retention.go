// Package retention prunes delivered rows from an outbox table: the relay runs [Prune] on a timer
// (outbox.WithRetention), and only rows the replication slot has confirmed, so already delivered or
// dead-lettered, ever go. It is safe for concurrent use.
package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// DefaultBatch is the number of rows one DELETE removes when Options.Batch is 0.
const DefaultBatch = 1000

// Execer runs a statement; pgx.Tx, *pgx.Conn and *pgxpool.Pool satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Options says what Prune deletes.
type Options struct {
	// Schema holds the outbox table (pkg_outbox) and the relay table that records the slot.
	Schema string
	// Slot is the replication slot whose confirmed position bounds what may go.
	Slot string
	// Retention is the age below which rows stay.
	Retention time.Duration
	// Batch is the number of rows one DELETE removes (0 means DefaultBatch).
	Batch int
}

// Prune deletes outbox rows that the slot o.Slot has confirmed and that are older than o.Retention, in
// batches of o.Batch rows, and returns how many it deleted.
//
// Confirmed means that the row's transaction committed at or below the slot's confirmed position, so
// the row was delivered or dead-lettered (I4). That is decided by transaction ids, not by clocks: the
// slot's catalog_xmin (pg_replication_slots) is at most the oldest transaction still running at some
// WAL position the slot has confirmed, so every older transaction had committed (or rolled back) below
// that position. A row whose transaction is catalog_xmin or newer is kept whatever its created_at: a
// long transaction that began before the cut-off and committed later, a row the relay has not reached
// (it is behind, or the row waits behind a parked key). catalog_xmin moves at the running-transactions
// records PostgreSQL writes every 15 s of activity and at checkpoints, once the slot confirmed past
// them, so pruning trails the confirmed position by about that. Nothing is pruned while the slot does
// not exist (a lost slot's rows are needed for replay), has no record in pkg_outbox_relay, or has its
// initial snapshot pending (the snapshot's rows precede catalog_xmin but are not all delivered).
//
// The age is counted from the commit time when track_commit_timestamp is on (from created_at for rows
// committed before it was turned on), from created_at, the transaction's start, otherwise; so a replay
// by commit time finds every row committed within the retention.
func Prune(ctx context.Context, conn Execer, o Options) (int64, error) {
	if err := names.ValidateSchema(o.Schema); err != nil {
		return 0, fmt.Errorf("retention: prune: %w", err)
	}
	batch := o.Batch
	if batch <= 0 {
		batch = DefaultBatch
	}
	table := names.Table(o.Schema, names.OutboxTable)
	// Transaction ids are compared as distances below the snapshot's xmax (modulo 2^32): a visible row
	// not yet confirmed lies between catalog_xmin and xmax, which are less than 2^31 apart (PostgreSQL
	// stops assigning ids before the slot's catalog_xmin would wrap around). A frozen row old enough
	// for its 32-bit xmin to wrap may land in that window and is then kept until the window moves on.
	q := `WITH h AS (
		SELECT s.catalog_xmin::text::bigint AS cat, pg_snapshot_xmax(pg_current_snapshot())::text::bigint % 4294967296 AS top
		FROM pg_catalog.pg_replication_slots s JOIN ` + names.Table(o.Schema, names.RelayTable) + ` r
		  ON r.slot_name = s.slot_name
		WHERE s.slot_name = $1 AND s.database = current_database() AND s.catalog_xmin IS NOT NULL
		  AND NOT r.snapshot_pending)
	DELETE FROM ` + table + ` WHERE seq IN (
		SELECT o.seq FROM ` + table + ` o, h
		WHERE o.created_at < now() - $2::interval
		  AND CASE WHEN current_setting('track_commit_timestamp')::bool
		      THEN COALESCE(pg_xact_commit_timestamp(o.xmin), o.created_at) < now() - $2::interval ELSE true END
		  AND (h.top - o.xmin::text::bigint + 4294967296) % 4294967296 > (h.top - h.cat + 4294967296) % 4294967296
		ORDER BY o.created_at LIMIT $3)`
	var total int64
	for {
		tag, err := conn.Exec(ctx, q, o.Slot, o.Retention.String(), batch)
		if err != nil {
			return total, fmt.Errorf("retention: prune %s: %w", table, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
	}
}
