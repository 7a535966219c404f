package replication

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

var (
	// ErrInvalidConfig wraps every Config validation error.
	ErrInvalidConfig = errors.New("replication: invalid config")
	// ErrSlotLost is matched (errors.Is) by every *SlotLostError.
	ErrSlotLost = errors.New("replication: slot lost")
	// ErrSlotMissing is returned when the slot does not exist, nothing records it and CreateSlot is off.
	ErrSlotMissing = errors.New("replication: slot does not exist")
	// ErrPublicationMissing is returned when the publication does not exist or does not cover the outbox table.
	ErrPublicationMissing = errors.New("replication: publication missing")
	// ErrSlotMismatch is returned for a slot that is not a pgoutput logical slot of this database.
	ErrSlotMismatch = errors.New("replication: slot is not usable")
	// ErrBehindConfirmed is returned when asked to move a slot to a position behind its confirmed_flush_lsn.
	ErrBehindConfirmed = errors.New("replication: position is behind the slot's confirmed_flush_lsn")
	// ErrRelayTableMissing is returned when <schema>.pkg_outbox_relay does not exist.
	ErrRelayTableMissing = errors.New("replication: relay table missing")
	// ErrUnsupportedServer is returned when the server lacks what the Config asks for (Messages needs
	// PostgreSQL 14 or later).
	ErrUnsupportedServer = errors.New("replication: unsupported server")
	// ErrClosed is returned by Run after Close, or when Run is called twice.
	ErrClosed = errors.New("replication: stream already running or closed")
)

// SlotLostError reports a slot that pkg_outbox_relay records but that no longer exists, or that
// PostgreSQL invalidated (wal_status = 'lost'). The stream never recreates it: messages committed
// after LastCommitTime must be replayed from the outbox table (rows committed after the confirmed
// position are never pruned). Replay selects by commit time with track_commit_timestamp on, else by
// created_at widened by a margin; either way it re-delivers some messages twice, with their ids.
type SlotLostError struct {
	Slot string
	// LastConfirmedLSN is the last position confirmed for the slot (0 when none was).
	LastConfirmedLSN pglogrepl.LSN
	// LastCommitTime is the commit time of the last confirmed transaction; when none was confirmed,
	// the time the slot was recorded.
	LastCommitTime time.Time
	// Reason says what happened ("slot dropped", "wal_status lost").
	Reason string
	// Messages says the stream read logical decoding messages too (Config.Messages): those committed
	// after LastCommitTime lived in the WAL alone and cannot be replayed.
	Messages bool
}

func (e *SlotLostError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "replication: slot %q lost (%s): it is never recreated automatically", e.Slot, e.Reason)
	if e.LastConfirmedLSN != 0 {
		fmt.Fprintf(&b, "; last confirmed LSN %s", e.LastConfirmedLSN)
	}
	if e.LastCommitTime.IsZero() {
		b.WriteString("; no confirmed commit time is known: replay the retained outbox rows with `pgoutbox replay --since <RFC3339 time>`")
	} else {
		ts := e.LastCommitTime.UTC().Format(time.RFC3339Nano)
		fmt.Fprintf(&b, "; last confirmed commit time %s: replay from it with `pgoutbox replay --since %s`", ts, ts)
	}
	b.WriteString(" once a new slot streams (drop the slot's row from pkg_outbox_relay to let one be created)." +
		" Replay matches commit times when track_commit_timestamp is on; otherwise it matches created_at (the" +
		" transaction's start) widened by --margin (1h by default; raise it if transactions run longer)." +
		" It re-delivers some messages twice with their ids: consumers dedupe on the message id")
	if e.Messages {
		b.WriteString(". Messages written as logical decoding messages (the LogicalMessage transport) after that time lived in the WAL alone: they are gone and no replay can find them")
	}
	return b.String()
}

// Is makes errors.Is(err, ErrSlotLost) true.
func (e *SlotLostError) Is(target error) bool { return target == ErrSlotLost }

// isFatal is the one place that classifies errors: fatal ones end Run, the rest cause a reconnect.
func isFatal(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrSlotLost), errors.Is(err, ErrSlotMissing), errors.Is(err, ErrPublicationMissing),
		errors.Is(err, ErrInvalidConfig), errors.Is(err, ErrSlotMismatch), errors.Is(err, ErrBehindConfirmed),
		errors.Is(err, ErrRelayTableMissing), errors.Is(err, ErrDiverged), errors.Is(err, ErrUnsupportedServer):
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgerrcode.IsInvalidAuthorizationSpecification(pgErr.Code): // class 28: invalid authorization / password
			return true
		case pgErr.Code == pgerrcode.InvalidCatalogName: // database does not exist
			return true
		case pgErr.Code == pgerrcode.InsufficientPrivilege: // e.g. no REPLICATION attribute
			return true
		}
	}
	return false
}

// classifyServerError maps a streaming ErrorResponse to our sentinels where one applies.
func classifyServerError(pgErr *pgconn.PgError, publication string) error {
	if pgErr.Code == pgerrcode.UndefinedObject && strings.Contains(pgErr.Message, "publication") {
		return fmt.Errorf("%w: %q: %w", ErrPublicationMissing, publication, pgErr)
	}
	return fmt.Errorf("replication stream: %w", pgErr)
}

func pgCode(err error) string { return names.SQLState(err) }
