package replication

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// SnapshotFunc reads the rows committed before a new slot's creation. tx is a read-only REPEATABLE
// READ transaction on the slot's exported snapshot: it sees exactly the transactions committed before
// consistentPoint, and the slot streams exactly the ones committed after it, so together they cover
// every committed row once. The function hands the rows on (it may block, for backpressure) and
// returns; the stream starts replication after it. Once every row it handed on is acked, the
// receiver calls Stream.CompleteSnapshot: until then no status update confirms past consistentPoint,
// and a relay that stops or dies first drops the slot at its next start and takes a new snapshot
// (re-delivering the snapshot, never losing a row).
type SnapshotFunc func(ctx context.Context, tx pgx.Tx, consistentPoint pglogrepl.LSN) error

// WithSnapshot makes slot creation export a snapshot and pass it to fn before streaming starts: the
// initial snapshot, so that rows committed before the slot existed are delivered too. Without it a
// new slot streams only what commits after its creation.
func WithSnapshot(fn SnapshotFunc) Option { return func(s *Stream) { s.snapshotFn = fn } }

// ErrSnapshotTaken is returned by CompleteSnapshot when the slot's record no longer belongs to the
// snapshot this stream took (another instance dropped and re-created the slot meanwhile).
var ErrSnapshotTaken = errors.New("replication: the slot was re-created by another instance since this stream's snapshot")

// snapshotNameRE matches the names pg_export_snapshot and CREATE_REPLICATION_SLOT return.
var snapshotNameRE = regexp.MustCompile(`^[0-9A-Fa-f-]{1,64}$`)

// ownSnapshot is the consistent point of the snapshot this stream took and whose rows are not all
// acked yet (zero: none). Guarded by flushMu.
func (s *Stream) pendingSnapshot() pglogrepl.LSN {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	return s.snapshotAt
}

func (s *Stream) setPendingSnapshot(at pglogrepl.LSN) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.snapshotAt = at
	s.flushVer++
}

// CompleteSnapshot records that every row handed to the SnapshotFunc was acked: it clears
// snapshot_pending in pkg_outbox_relay, and status updates may then confirm past the slot's
// creation. It returns ErrSnapshotTaken when this stream has no pending snapshot (the slot was
// re-created by another instance meanwhile, which voids this one).
func (s *Stream) CompleteSnapshot(ctx context.Context) error {
	at := s.pendingSnapshot()
	if at == 0 {
		return fmt.Errorf("%w (slot %q: no snapshot of this stream is pending)", ErrSnapshotTaken, s.cfg.Slot)
	}
	conn, err := s.conns.connectSQL(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	ok, err := completeSnapshot(ctx, conn, s.cfg.Schema, s.cfg.Slot, at)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w (slot %q, snapshot at %s)", ErrSnapshotTaken, s.cfg.Slot, at)
	}
	s.setPendingSnapshot(0)
	s.log.Info("initial snapshot complete: every row committed before the slot's creation was acked", zap.String("consistent_point", at.String()))
	return nil
}

// snapshotLockSQL and snapshotUnlockSQL take and give back the session advisory lock that serialises
// creating a slot with its snapshot and dropping a slot whose snapshot never completed, across instances.
const (
	snapshotLockSQL   = `SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended('pgoutbox_slot:' || $1, 0))`
	snapshotUnlockSQL = `SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtextextended('pgoutbox_slot:' || $1, 0))`
)

func (s *Stream) tryLock(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var got bool
	err := s.withTimeout(ctx, func(ctx context.Context) error {
		return conn.QueryRow(ctx, snapshotLockSQL, s.cfg.Slot).Scan(&got)
	})
	if err != nil {
		return false, fmt.Errorf("lock slot %q for its snapshot: %w", s.cfg.Slot, err)
	}
	return got, nil
}

func (s *Stream) unlock(ctx context.Context, conn *pgx.Conn) {
	if conn.IsClosed() {
		return // the lock went with the session
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sqlTimeout)
	defer cancel()
	if _, err := conn.Exec(uctx, snapshotUnlockSQL, s.cfg.Slot); err != nil {
		s.log.Warn("release the slot's snapshot lock (it goes with the connection)", zap.Error(err))
	}
}

// dropIncomplete drops a slot whose initial snapshot never completed (its relay stopped or died
// before every snapshot row was acked) and its record, so that the next round creates the slot and
// takes the snapshot again. The slot confirmed nothing past its creation, so nothing is lost; the
// rows of the old snapshot that were delivered come again. Called with the snapshot lock held.
func (s *Stream) dropIncomplete(ctx context.Context, conn *pgx.Conn, si slotInfo, rec relayRecord) error {
	s.log.Warn("the initial snapshot of this slot never completed (its relay stopped first): dropping the slot to take the snapshot again; rows of the old snapshot may be delivered twice",
		zap.String("created_lsn", rec.createdLSN.String()), zap.Time("created_at", rec.createdAt))
	return s.withTimeout(ctx, func(ctx context.Context) error {
		if si.exists {
			if _, err := conn.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, s.cfg.Slot); err != nil && pgCode(err) != pgerrcode.UndefinedObject {
				return fmt.Errorf("drop slot %q (incomplete snapshot): %w", s.cfg.Slot, err)
			}
		}
		return deleteRecord(ctx, conn, s.cfg.Schema, s.cfg.Slot)
	})
}

// createWithSnapshot creates the slot exporting a snapshot, and runs the SnapshotFunc in it. The
// record is written first (snapshot pending, position unknown), so that a crash right after the
// creation cannot leave a slot that a restart adopts without a snapshot. Called with the snapshot
// lock held.
func (s *Stream) createWithSnapshot(ctx context.Context, sqlConn *pgx.Conn, repl *pgconn.PgConn) error {
	if err := s.withTimeout(ctx, func(ctx context.Context) error {
		if err := deleteRecord(ctx, sqlConn, s.cfg.Schema, s.cfg.Slot); err != nil { // a pending leftover
			return err
		}
		return insertRecord(ctx, sqlConn, s.cfg.Schema, s.cfg.Slot, s.cfg.Publication, 0, s.cfg.InstanceID, true)
	}); err != nil {
		return err
	}
	s.log.Info("creating replication slot with an initial snapshot (waits for open transactions to finish)")
	res, err := s.createReplicationSlot(ctx, repl, "export")
	if err != nil {
		return fmt.Errorf("create replication slot %q: %w", s.cfg.Slot, err)
	}
	created, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return fmt.Errorf("create replication slot %q: parse consistent point: %w", s.cfg.Slot, err)
	}
	if !snapshotNameRE.MatchString(res.SnapshotName) {
		return fmt.Errorf("create replication slot %q: unexpected snapshot name %q", s.cfg.Slot, res.SnapshotName)
	}
	if err := s.withTimeout(ctx, func(ctx context.Context) error {
		return setRecordCreated(ctx, sqlConn, s.cfg.Schema, s.cfg.Slot, created)
	}); err != nil {
		return err
	}
	s.log.Info("created replication slot", zap.String("consistent_point", created.String()), zap.String("snapshot", res.SnapshotName))

	s.setState(Snapshot)
	began := time.Now()
	// The exported snapshot lives while the replication connection stays idle: import it first.
	tx, err := sqlConn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("initial snapshot: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+res.SnapshotName+"'"); err != nil {
		return fmt.Errorf("initial snapshot: import %s: %w", res.SnapshotName, err)
	}
	// Pending from before the SnapshotFunc runs: the receiver may ack its rows (and call
	// CompleteSnapshot) as soon as it returns. On failure it is void: the next round drops the slot.
	s.setPendingSnapshot(created)
	if err := s.snapshotFn(ctx, tx, created); err != nil {
		s.setPendingSnapshot(0)
		return fmt.Errorf("initial snapshot: %w", err)
	}
	// The rows are read and handed on: a failed COMMIT of the read-only transaction changes nothing.
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("initial snapshot: end the read-only transaction: %w", err)
	}
	s.log.Info("initial snapshot read; streaming starts", zap.Duration("took", time.Since(began)))
	return nil
}
