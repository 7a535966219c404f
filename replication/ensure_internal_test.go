package replication

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestEnsureConfirmedAdvancesALaggingSlot: when the final status update did not get through, the
// session's check after the walsender is gone confirms the position over SQL; a slot ahead is left alone.
func TestEnsureConfirmedAdvancesALaggingSlot(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	slot := "t_" + pgtest.RandomSuffix()
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	db.Exec(t, `CREATE TABLE filler (x int)`)
	db.Exec(t, `INSERT INTO filler SELECT generate_series(1, 1000)`)
	var s string
	if err := db.Pool.QueryRow(t.Context(), `SELECT pg_current_wal_flush_lsn()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	target, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.ConnString)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	cfg := DefaultConfig("app")
	cfg.Slot = slot
	st, err := New(db.ConnString, cfg)
	if err != nil {
		t.Fatal(err)
	}
	before, err := lookupSlot(ctx, conn, slot)
	if err != nil {
		t.Fatal(err)
	}
	if before.confirmed >= target {
		t.Fatalf("slot confirmed %s already at the target %s: the test proves nothing", before.confirmed, target)
	}
	st.ensureConfirmed(ctx, conn, target)
	after, err := lookupSlot(ctx, conn, slot)
	if err != nil {
		t.Fatal(err)
	}
	if after.confirmed < target {
		t.Fatalf("after ensureConfirmed the slot confirmed %s, want at least %s", after.confirmed, target)
	}
	st.ensureConfirmed(ctx, conn, before.confirmed) // behind: a no-op, no error, no move back
	if again, _ := lookupSlot(ctx, conn, slot); again.confirmed != after.confirmed {
		t.Fatalf("a position behind moved the slot from %s to %s", after.confirmed, again.confirmed)
	}
}
