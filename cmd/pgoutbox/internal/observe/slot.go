package observe

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// ErrNoDeadLetterTable is returned (with the rest of SlotStatus filled) when the schema is not migrated.
var ErrNoDeadLetterTable = errors.New("observe: dead-letter table missing (schema not migrated)")

// SlotStatus is what `pgoutbox status` prints and the poller exports.
type SlotStatus struct {
	Slot          string        `json:"slot"`
	Exists        bool          `json:"exists"`
	Active        bool          `json:"active"`
	ActivePID     int32         `json:"active_pid,omitempty"`
	ActiveApp     string        `json:"active_application_name,omitempty"`
	WALStatus     string        `json:"wal_status,omitempty"`
	ConfirmedLSN  pglogrepl.LSN `json:"-"`
	Confirmed     string        `json:"confirmed_flush_lsn,omitempty"`
	Restart       string        `json:"restart_lsn,omitempty"`
	CurrentWAL    string        `json:"current_wal_lsn,omitempty"`
	LagBytes      int64         `json:"lag_bytes"`
	RetainedBytes int64         `json:"retained_wal_bytes"`
	Record        *RelayRecord  `json:"relay_record"`
	DeadLetters   int64         `json:"dead_letters"`
}

// RelayRecord is the slot's row in <schema>.pkg_outbox_relay.
type RelayRecord struct {
	Publication         string     `json:"publication"`
	CreatedAt           time.Time  `json:"created_at"`
	CreatedLSN          string     `json:"created_lsn"`
	ConfirmedLSN        string     `json:"confirmed_lsn,omitempty"`
	ConfirmedCommitTime *time.Time `json:"confirmed_commit_time,omitempty"`
	UpdatedAt           time.Time  `json:"updated_at"`
	ActiveInstance      string     `json:"active_instance,omitempty"`
	// SnapshotPending: the initial snapshot of the slot is not yet acked (see initial_snapshot).
	SnapshotPending bool `json:"snapshot_pending"`
	// Parked is the active relay's last report of the keys it holds back behind a failed message.
	Parked Parked `json:"parked"`
}

// Parked is the active relay's last report of its parked keys: keys held back because a message of
// theirs failed and waits for its next attempt.
type Parked struct {
	Keys     int        `json:"keys"`
	Messages int        `json:"messages"`
	Since    *time.Time `json:"since,omitempty"`
	// LSN is the lowest commit LSN among the parked messages: the slot cannot be confirmed past it.
	LSN string `json:"lsn,omitempty"`
	// WALBytes is the WAL retained because of them: the current WAL position minus LSN.
	WALBytes int64 `json:"wal_bytes"`
}

// Querier is what QuerySlot needs; *pgxpool.Pool and *pgx.Conn satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// QuerySlot reads the slot from pg_replication_slots, its relay record and the dead-letter depth.
// A missing slot is not an error (Exists is false). schema must be validated by the caller.
func QuerySlot(ctx context.Context, q Querier, schema, slot string) (SlotStatus, error) {
	s := SlotStatus{Slot: slot}
	var confirmed string
	err := q.QueryRow(ctx, `SELECT s.slot_name IS NOT NULL, COALESCE(s.active, false), COALESCE(s.active_pid, 0),
		COALESCE((SELECT a.application_name FROM pg_catalog.pg_stat_activity a WHERE a.pid = s.active_pid), ''),
		COALESCE(s.wal_status, ''), COALESCE(s.confirmed_flush_lsn::text, ''), COALESCE(s.restart_lsn::text, ''),
		cur::text,
		COALESCE(pg_catalog.pg_wal_lsn_diff(cur, s.confirmed_flush_lsn), 0)::bigint,
		COALESCE(pg_catalog.pg_wal_lsn_diff(cur, s.restart_lsn), 0)::bigint
	FROM (SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
		ELSE pg_catalog.pg_current_wal_lsn() END AS cur) AS w
	LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1`, slot).
		Scan(&s.Exists, &s.Active, &s.ActivePID, &s.ActiveApp, &s.WALStatus, &confirmed, &s.Restart, &s.CurrentWAL,
			&s.LagBytes, &s.RetainedBytes)
	if err != nil {
		return s, fmt.Errorf("query slot %q: %w", slot, err)
	}
	if confirmed != "" {
		s.Confirmed = confirmed
		if s.ConfirmedLSN, err = pglogrepl.ParseLSN(confirmed); err != nil {
			return s, fmt.Errorf("parse confirmed_flush_lsn %q: %w", confirmed, err)
		}
	}
	var rec RelayRecord
	var confLSN, inst *string
	var parkedLSN *string
	err = q.QueryRow(ctx, `SELECT publication_name, created_at, created_lsn::text, confirmed_lsn::text,
		confirmed_commit_time, updated_at, active_instance, snapshot_pending,
		parked_keys, parked_messages, parked_since, parked_lsn::text,
		COALESCE(pg_catalog.pg_wal_lsn_diff($2::pg_lsn, parked_lsn), 0)::bigint
		FROM `+pgx.Identifier{schema, "pkg_outbox_relay"}.Sanitize()+` WHERE slot_name = $1`, slot, s.CurrentWAL).
		Scan(&rec.Publication, &rec.CreatedAt, &rec.CreatedLSN, &confLSN, &rec.ConfirmedCommitTime, &rec.UpdatedAt, &inst,
			&rec.SnapshotPending, &rec.Parked.Keys, &rec.Parked.Messages, &rec.Parked.Since, &parkedLSN, &rec.Parked.WALBytes)
	switch {
	case err == nil:
		if confLSN != nil {
			rec.ConfirmedLSN = *confLSN
		}
		if inst != nil {
			rec.ActiveInstance = *inst
		}
		if parkedLSN != nil {
			rec.Parked.LSN = *parkedLSN
		}
		s.Record = &rec
	case errors.Is(err, pgx.ErrNoRows):
	case undefinedTable(err):
		return s, ErrNoDeadLetterTable
	case undefinedColumn(err):
		return s, fmt.Errorf("query relay record: the schema predates this version: run `pgoutbox migrate`: %w", err)
	default:
		return s, fmt.Errorf("query relay record: %w", err)
	}
	err = q.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "pkg_outbox_dead_letter"}.Sanitize()).Scan(&s.DeadLetters)
	switch {
	case undefinedTable(err):
		return s, ErrNoDeadLetterTable
	case err != nil:
		return s, fmt.Errorf("count dead letters: %w", err)
	}
	return s, nil
}

func undefinedTable(err error) bool {
	return names.IsMissingRelation(err)
}

func undefinedColumn(err error) bool {
	return names.SQLState(err) == pgerrcode.UndefinedColumn
}
