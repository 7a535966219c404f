package replication_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/replication"
)

// TestSnapshotAfterACrashBeforeTheSlot: a relay that died after writing its record (snapshot
// pending) but before creating the slot is not taken for a lost slot: the next start creates the
// slot and takes the snapshot. While the snapshot is pending no status update confirms past the
// slot's creation, whatever SetFlushed says; after CompleteSnapshot they do.
func TestSnapshotAfterACrashBeforeTheSlot(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	db.Exec(t, `INSERT INTO app.pkg_outbox_relay (slot_name, publication_name, created_lsn, snapshot_pending)
		VALUES ($1, 'pgoutbox_app', '0/0', true)`, slot)
	insert(t, db, 3, "before")

	var calls atomic.Int32
	var rows atomic.Int64
	snap := func(ctx context.Context, tx pgx.Tx, at pglogrepl.LSN) error {
		calls.Add(1)
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM app.pkg_outbox`).Scan(&n); err != nil {
			return err
		}
		rows.Store(n)
		return nil
	}
	r := start(t, db, testConfig(slot, "snap"), replication.WithSnapshot(snap))
	r.waitState(t, replication.Streaming, 30*time.Second)
	if calls.Load() != 1 || rows.Load() != 3 {
		t.Fatalf("snapshot called %d times and saw %d rows, want once and 3", calls.Load(), rows.Load())
	}
	var pending bool
	var created string
	if err := db.Pool.QueryRow(t.Context(), `SELECT snapshot_pending, created_lsn::text FROM app.pkg_outbox_relay WHERE slot_name = $1`, slot).
		Scan(&pending, &created); err != nil {
		t.Fatal(err)
	}
	createdLSN, _ := pglogrepl.ParseLSN(created)
	if !pending || createdLSN == 0 {
		t.Fatalf("record: pending %v created %s, want pending and the slot's consistent point", pending, created)
	}

	insert(t, db, 1, "after")
	c := r.nextCommit(t, 10*time.Second)
	r.s.SetFlushed(c.TransactionEndLSN, c.CommitTime)
	time.Sleep(time.Second) // five status intervals
	if got := slotConfirmed(t, db, slot); got != createdLSN {
		t.Fatalf("confirmed_flush_lsn %s while the snapshot is pending, want the creation point %s", got, createdLSN)
	}
	if err := r.s.CompleteSnapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if got := slotConfirmed(t, db, slot); got < c.TransactionEndLSN {
			return fmt.Errorf("confirmed_flush_lsn %s < %s after CompleteSnapshot", got, c.TransactionEndLSN)
		}
		return nil
	})
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_relay WHERE slot_name = $1 AND NOT snapshot_pending`, slot); n != 1 {
		t.Fatal("snapshot_pending still set after CompleteSnapshot")
	}
}

// TestOlderSchemaNamesTheMigration: a relay record table of schema v1 (no snapshot_pending) stops the
// stream with an error that says to run the migration.
func TestOlderSchemaNamesTheMigration(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	db.Exec(t, `ALTER TABLE app.pkg_outbox_relay DROP COLUMN snapshot_pending`)
	r := start(t, db, testConfig(newSlot(), "old"))
	err := r.wait(t, 30*time.Second)
	if !errors.Is(err, replication.ErrRelayTableMissing) || !strings.Contains(err.Error(), "migrat") {
		t.Fatalf("Run = %v, want ErrRelayTableMissing naming the migration", err)
	}
}

// TestCompleteSnapshotRightAfterTheFunc: a receiver that acks every snapshot row at once calls
// CompleteSnapshot as soon as the SnapshotFunc returns, before the stream has even started
// replication; that must record the snapshot as complete (it once returned nil and did nothing,
// leaving the slot stuck at its creation).
func TestCompleteSnapshotRightAfterTheFunc(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	stream := make(chan *replication.Stream, 1)
	completed := make(chan error, 1)
	snap := func(ctx context.Context, tx pgx.Tx, at pglogrepl.LSN) error {
		s := <-stream
		returned := make(chan struct{})
		go func() { <-returned; completed <- s.CompleteSnapshot(context.Background()) }()
		close(returned)
		return nil
	}
	r := start(t, db, testConfig(slot, "quick"), replication.WithSnapshot(snap))
	stream <- r.s
	if err := <-completed; err != nil {
		t.Fatalf("CompleteSnapshot right after the SnapshotFunc: %v", err)
	}
	r.waitState(t, replication.Streaming, 30*time.Second)
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_relay WHERE slot_name = $1 AND NOT snapshot_pending`, slot); n != 1 {
		t.Fatal("snapshot_pending still set after CompleteSnapshot returned nil")
	}
}

// TestSlotDroppedWhileSnapshotPendingIsLost: a slot dropped (by hand) before its initial snapshot
// completed is not silently recreated: the stream stops with a SlotLostError that says how to retake
// the snapshot. Only a record without a slot position (a crash before the creation) is recreated.
func TestSlotDroppedWhileSnapshotPendingIsLost(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	db.Exec(t, `INSERT INTO app.pkg_outbox_relay (slot_name, publication_name, created_lsn, snapshot_pending)
		VALUES ($1, 'pgoutbox_app', '0/1234', true)`, slot)
	r := start(t, db, testConfig(slot, "dropped"), replication.WithSnapshot(func(context.Context, pgx.Tx, pglogrepl.LSN) error { return nil }))
	err := r.wait(t, 30*time.Second)
	if !errors.Is(err, replication.ErrSlotLost) || !strings.Contains(err.Error(), "initial snapshot") {
		t.Fatalf("Run = %v, want a SlotLostError about the initial snapshot", err)
	}
	if db.QueryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot) != 0 {
		t.Fatal("the slot was recreated")
	}
}

// completeOnRecordRead calls CompleteSnapshot right after the stream's regular connection has read
// the slot's record (the first read once armed): the receiver acking the last snapshot row while the
// stream inspects the slot it has just created.
type completeOnRecordRead struct {
	stream    atomic.Pointer[replication.Stream]
	armed     atomic.Bool
	completed chan error
}

type recordReadKey struct{}

func (c *completeOnRecordRead) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(d.SQL, "SELECT publication_name, created_at") && c.armed.Load() {
		return context.WithValue(ctx, recordReadKey{}, true)
	}
	return ctx
}

func (c *completeOnRecordRead) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if ctx.Value(recordReadKey{}) != nil && c.armed.CompareAndSwap(true, false) {
		c.completed <- c.stream.Load().CompleteSnapshot(context.Background())
	}
}

// TestSnapshotCompletedWhileTheSlotIsInspected: a snapshot completed (every row acked) while the
// stream looks at its new slot once more before starting replication is complete: the stream must not
// take its own slot for one whose snapshot another relay left incomplete, drop it and take the
// snapshot again (which delivered the snapshot's rows twice, without any fault).
func TestSnapshotCompletedWhileTheSlotIsInspected(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	insert(t, db, 3, "before")
	tracer := &completeOnRecordRead{completed: make(chan error, 1)}
	var calls atomic.Int32
	snap := func(ctx context.Context, tx pgx.Tx, at pglogrepl.LSN) error {
		if calls.Add(1) == 1 {
			tracer.armed.Store(true) // the rows are handed on: the receiver may complete at any time now
		}
		return nil
	}
	connCfg, err := pgx.ParseConfig(db.ConnString)
	if err != nil {
		t.Fatal(err)
	}
	connCfg.Tracer = tracer
	s, err := replication.NewFromConfig(connCfg, testConfig(slot, "inspect"), replication.WithSnapshot(snap),
		replication.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	tracer.stream.Store(s)
	r := run(t, s, 16)
	r.waitState(t, replication.Streaming, 30*time.Second)
	select {
	case err := <-tracer.completed:
		if err != nil {
			t.Fatalf("CompleteSnapshot while the slot was inspected: %v", err)
		}
	default:
		t.Fatal("the stream never read the slot's record after the snapshot: the test proves nothing")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("snapshot taken %d times, want once: the stream dropped its own completed slot", n)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_relay WHERE slot_name = $1 AND NOT snapshot_pending`, slot); n != 1 {
		t.Error("snapshot_pending set again: the completed snapshot was thrown away")
	}
}
