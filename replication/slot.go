package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// slotInfo is a slot's row in pg_replication_slots, as seen from the current database.
type slotInfo struct {
	currentDB string
	exists    bool
	slotType  string
	plugin    string
	database  string
	walStatus string
	confirmed pglogrepl.LSN
	activePID int32
	activeApp string // application_name of the active walsender, if any
	// Columns of newer servers, read through to_jsonb so that one query serves every version.
	conflicting  bool   // PostgreSQL 16+: invalidated by a conflict with recovery
	invalidation string // PostgreSQL 17+: invalidation_reason ("" when valid)
	failover     bool   // PostgreSQL 17+: a failover slot
	synced       bool   // PostgreSQL 17+: synchronized from a primary (it stays true after a promotion)
}

const slotQuery = `SELECT current_database(), s.slot_name IS NOT NULL,
	COALESCE(s.slot_type, ''), COALESCE(s.plugin::text, ''), COALESCE(s.database::text, ''),
	COALESCE(s.wal_status, ''), COALESCE(s.confirmed_flush_lsn::text, ''), COALESCE(s.active_pid, 0),
	COALESCE((SELECT a.application_name FROM pg_catalog.pg_stat_activity a WHERE a.pid = s.active_pid), ''),
	COALESCE((to_jsonb(s)->>'conflicting')::bool, false), COALESCE(to_jsonb(s)->>'invalidation_reason', ''),
	COALESCE((to_jsonb(s)->>'failover')::bool, false), COALESCE((to_jsonb(s)->>'synced')::bool, false)
FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1`

// execer runs a statement (pgx.Conn, pgx.Tx and pgxpool.Pool have it).
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// querier is what the slot helpers need of a regular connection (pgx.Conn, pgx.Tx and pgxpool.Pool have it).
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func lookupSlot(ctx context.Context, q querier, slot string) (slotInfo, error) {
	var si slotInfo
	var confirmed string
	err := q.QueryRow(ctx, slotQuery, slot).Scan(&si.currentDB, &si.exists, &si.slotType, &si.plugin,
		&si.database, &si.walStatus, &confirmed, &si.activePID, &si.activeApp,
		&si.conflicting, &si.invalidation, &si.failover, &si.synced)
	if err != nil {
		return si, fmt.Errorf("look up slot %q: %w", slot, err)
	}
	if confirmed != "" {
		if si.confirmed, err = pglogrepl.ParseLSN(confirmed); err != nil {
			return si, fmt.Errorf("look up slot %q: confirmed_flush_lsn: %w", slot, err)
		}
	}
	return si, nil
}

// check reports a slot that cannot serve this stream.
func (si slotInfo) check(slot string) error {
	switch {
	case si.slotType != "logical" || si.plugin != "pgoutput":
		return fmt.Errorf("%w: slot %q is a %s slot with plugin %q, pgoutbox needs a logical pgoutput slot: pick another slot name",
			ErrSlotMismatch, slot, si.slotType, si.plugin)
	case si.database != si.currentDB:
		return fmt.Errorf("%w: slot %q belongs to database %q, not %q: pick another slot name",
			ErrSlotMismatch, slot, si.database, si.currentDB)
	}
	return nil
}

// relayRecord is a row of <schema>.pkg_outbox_relay.
type relayRecord struct {
	exists         bool
	publication    string
	createdAt      time.Time
	createdLSN     pglogrepl.LSN
	confirmedLSN   pglogrepl.LSN
	commitTime     time.Time
	activeInstance string
	// snapshotPending: the rows committed before the slot's creation are not all acked yet.
	snapshotPending bool
}

func relayTable(schema string) string { return names.Table(schema, names.RelayTable) }

func lookupRecord(ctx context.Context, q querier, schema, slot string) (relayRecord, error) {
	var (
		r                  relayRecord
		createdLSN         string
		confirmedLSN, inst *string
		commitTime         *time.Time
	)
	err := q.QueryRow(ctx, `SELECT publication_name, created_at, created_lsn::text, confirmed_lsn::text,
		confirmed_commit_time, active_instance, snapshot_pending FROM `+relayTable(schema)+` WHERE slot_name = $1`, slot).
		Scan(&r.publication, &r.createdAt, &createdLSN, &confirmedLSN, &commitTime, &inst, &r.snapshotPending)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return r, nil
	case names.IsMissingRelation(err):
		return r, fmt.Errorf("%w: %s does not exist: run the pgoutbox migration (outbox.Migrate) for schema %q first: %w",
			ErrRelayTableMissing, relayTable(schema), schema, err)
	case pgCode(err) == pgerrcode.UndefinedColumn: // a schema migrated by an older pgoutbox
		return r, fmt.Errorf("%w: %s lacks a column this version needs: re-run the pgoutbox migration (outbox.Migrate or `pgoutbox migrate`) for schema %q: %w",
			ErrRelayTableMissing, relayTable(schema), schema, err)
	case err != nil:
		return r, fmt.Errorf("look up %s record of slot %q: %w", relayTable(schema), slot, err)
	}
	r.exists = true
	if r.createdLSN, err = pglogrepl.ParseLSN(createdLSN); err != nil {
		return r, fmt.Errorf("parse created_lsn: %w", err)
	}
	if confirmedLSN != nil {
		if r.confirmedLSN, err = pglogrepl.ParseLSN(*confirmedLSN); err != nil {
			return r, fmt.Errorf("parse confirmed_lsn: %w", err)
		}
	}
	if commitTime != nil {
		r.commitTime = *commitTime
	}
	if inst != nil {
		r.activeInstance = *inst
	}
	return r, nil
}

func insertRecord(ctx context.Context, conn *pgx.Conn, schema, slot, publication string, created pglogrepl.LSN, instance string, snapshotPending bool) error {
	_, err := conn.Exec(ctx, `INSERT INTO `+relayTable(schema)+` (slot_name, publication_name, created_lsn, active_instance, snapshot_pending)
		VALUES ($1, $2, $3::pg_lsn, $4, $5) ON CONFLICT (slot_name) DO NOTHING`, slot, publication, created.String(), instance, snapshotPending)
	if err != nil {
		return fmt.Errorf("record slot %q in %s: %w", slot, relayTable(schema), err)
	}
	return nil
}

func setRecordCreated(ctx context.Context, conn *pgx.Conn, schema, slot string, created pglogrepl.LSN) error {
	_, err := conn.Exec(ctx, `UPDATE `+relayTable(schema)+` SET created_lsn = $2::pg_lsn, created_at = now(), updated_at = now()
		WHERE slot_name = $1`, slot, created.String())
	if err != nil {
		return fmt.Errorf("record creation of slot %q in %s: %w", slot, relayTable(schema), err)
	}
	return nil
}

func deleteRecord(ctx context.Context, conn *pgx.Conn, schema, slot string) error {
	if _, err := conn.Exec(ctx, `DELETE FROM `+relayTable(schema)+` WHERE slot_name = $1`, slot); err != nil {
		return fmt.Errorf("delete record of slot %q from %s: %w", slot, relayTable(schema), err)
	}
	return nil
}

// completeSnapshot clears snapshot_pending of the slot created at created; false when the record is
// gone or belongs to another creation of the slot.
func completeSnapshot(ctx context.Context, q execer, schema, slot string, created pglogrepl.LSN) (bool, error) {
	tag, err := q.Exec(ctx, `UPDATE `+relayTable(schema)+` SET snapshot_pending = false, updated_at = now()
		WHERE slot_name = $1 AND created_lsn = $2::pg_lsn AND snapshot_pending`, slot, created.String())
	if err != nil {
		return false, fmt.Errorf("record the completed snapshot of slot %q in %s: %w", slot, relayTable(schema), err)
	}
	return tag.RowsAffected() == 1, nil
}

// persistConfirmed writes the confirmed position; it never moves the record backwards. A zero
// commitTime keeps the recorded one. An empty instance clears active_instance.
func persistConfirmed(ctx context.Context, conn *pgx.Conn, schema, slot string, lsn pglogrepl.LSN, commitTime time.Time, instance string) error {
	var ct *time.Time
	if !commitTime.IsZero() {
		ct = &commitTime
	}
	var inst *string
	if instance != "" {
		inst = &instance
	}
	_, err := conn.Exec(ctx, `UPDATE `+relayTable(schema)+` SET
		confirmed_lsn = GREATEST(confirmed_lsn, $2::pg_lsn),
		confirmed_commit_time = CASE WHEN confirmed_lsn IS NULL OR confirmed_lsn < $2::pg_lsn
			THEN COALESCE($3, confirmed_commit_time) ELSE confirmed_commit_time END,
		updated_at = now(), active_instance = $4
		WHERE slot_name = $1`, slot, lsn.String(), ct, inst)
	if err != nil {
		return fmt.Errorf("persist confirmed position of slot %q: %w", slot, err)
	}
	return nil
}

// checkPublication returns ErrPublicationMissing unless publication exists and covers <schema>.pkg_outbox.
func checkPublication(ctx context.Context, q querier, publication, schema string) error {
	var exists, covers bool
	err := q.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1),
		EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = 'pkg_outbox')`,
		publication, schema).Scan(&exists, &covers)
	switch {
	case err != nil:
		return fmt.Errorf("check publication %q: %w", publication, err)
	case !exists:
		return fmt.Errorf("%w: publication %q does not exist in this database (it must cover %s): run the pgoutbox migration",
			ErrPublicationMissing, publication, names.Table(schema, names.OutboxTable))
	case !covers:
		return fmt.Errorf("%w: publication %q does not cover %s: ALTER PUBLICATION %s ADD TABLE %s",
			ErrPublicationMissing, publication, names.Table(schema, names.OutboxTable),
			pgx.Identifier{publication}.Sanitize(), names.Table(schema, names.OutboxTable))
	}
	return nil
}

// AdvanceSlot moves slot forward to position to with pg_replication_slot_advance, skipping what lies
// in between (it is never delivered). It refuses a position behind the slot's confirmed_flush_lsn
// (ErrBehindConfirmed): a slot cannot go back. Moving to the confirmed position is a no-op. The slot
// must not be in use (stop the relay first). PostgreSQL stops at its current flush position when to
// lies beyond it.
func AdvanceSlot(ctx context.Context, conn *pgx.Conn, slot string, to pglogrepl.LSN) error {
	_, err := advanceSlot(ctx, conn, slot, to)
	return err
}

func advanceSlot(ctx context.Context, conn *pgx.Conn, slot string, to pglogrepl.LSN) (pglogrepl.LSN, error) {
	if err := ValidateSlotName(slot); err != nil {
		return 0, err
	}
	si, err := lookupSlot(ctx, conn, slot)
	if err != nil {
		return 0, err
	}
	switch {
	case !si.exists:
		return 0, fmt.Errorf("%w: advance slot %q", ErrSlotMissing, slot)
	case si.slotType != "logical":
		return 0, fmt.Errorf("%w: advance slot %q: not a logical slot", ErrSlotMismatch, slot)
	case si.database != si.currentDB:
		return 0, fmt.Errorf("%w: advance slot %q: it belongs to database %q, connect to it", ErrSlotMismatch, slot, si.database)
	case to < si.confirmed:
		return 0, fmt.Errorf("%w: cannot move slot %q to %s, its confirmed_flush_lsn is %s (replay older messages from the outbox table instead)",
			ErrBehindConfirmed, slot, to, si.confirmed)
	case to == si.confirmed:
		return to, nil
	case si.activePID != 0:
		return 0, fmt.Errorf("advance slot %q: it is in use by pid %d (%q): stop that relay first", slot, si.activePID, si.activeApp)
	}
	var end string
	if err := conn.QueryRow(ctx, `SELECT end_lsn::text FROM pg_catalog.pg_replication_slot_advance($1, $2::pg_lsn)`,
		slot, to.String()).Scan(&end); err != nil {
		return 0, fmt.Errorf("advance slot %q to %s: %w", slot, to, err)
	}
	lsn, err := pglogrepl.ParseLSN(end)
	if err != nil {
		return 0, fmt.Errorf("advance slot %q: parse end_lsn: %w", slot, err)
	}
	return lsn, nil
}
