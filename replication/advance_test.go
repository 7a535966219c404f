package replication_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/replication"
)

func flushLSN(t *testing.T, db *pgtest.DB) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := db.Pool.QueryRow(context.Background(), `SELECT pg_current_wal_flush_lsn()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func TestAdvanceSlot(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.ConnString)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	before := slotConfirmed(t, db, slot)
	insert(t, db, 10, "skipped")
	db.Exec(t, `SELECT pg_switch_wal()`) // makes sure the inserts are flushed
	target := flushLSN(t, db)
	if err := replication.AdvanceSlot(ctx, conn, slot, target); err != nil {
		t.Fatalf("forward: %v", err)
	}
	if got := slotConfirmed(t, db, slot); got != target {
		t.Fatalf("confirmed_flush_lsn %s after advancing to %s (from %s)", got, target, before)
	}
	if err := replication.AdvanceSlot(ctx, conn, slot, target); err != nil {
		t.Fatalf("to the confirmed position (no-op): %v", err)
	}
	err = replication.AdvanceSlot(ctx, conn, slot, before)
	if !errors.Is(err, replication.ErrBehindConfirmed) {
		t.Fatalf("backward: %v, want ErrBehindConfirmed", err)
	}
	t.Log(err)
	if err := replication.AdvanceSlot(ctx, conn, "t_missing_"+pgtest.RandomSuffix(), target); !errors.Is(err, replication.ErrSlotMissing) {
		t.Fatalf("missing slot: %v, want ErrSlotMissing", err)
	}
	if err := replication.AdvanceSlot(ctx, conn, "Bad-Name", target); !errors.Is(err, replication.ErrInvalidConfig) {
		t.Fatalf("invalid slot name: %v, want ErrInvalidConfig", err)
	}
}

func TestStreamStartLSN(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	r := start(t, db, testConfig(slot, "startlsn"))
	r.waitState(t, replication.Streaming, 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	created := slotConfirmed(t, db, slot)

	insert(t, db, 1, "skipped")
	db.Exec(t, `SELECT pg_switch_wal()`)
	skipTo := flushLSN(t, db)

	t.Run("behind confirmed is refused", func(t *testing.T) {
		cfg := testConfig(slot, "startlsn")
		cfg.StartLSN = created - 1
		err := start(t, db, cfg).wait(t, 30*time.Second)
		if !errors.Is(err, replication.ErrBehindConfirmed) {
			t.Fatalf("Run returned %v, want ErrBehindConfirmed", err)
		}
	})
	t.Run("forward skips", func(t *testing.T) {
		cfg := testConfig(slot, "startlsn")
		cfg.StartLSN = skipTo
		r := start(t, db, cfg)
		r.waitState(t, replication.Streaming, 30*time.Second)
		insert(t, db, 1, "delivered")
		for {
			_, msg := r.nextMessage(t, 10*time.Second)
			if ins, ok := msg.(*pglogrepl.InsertMessage); ok {
				if p := payloadOf(t, ins); p != "delivered" {
					t.Fatalf("first insert after StartLSN has payload %q, want delivered", p)
				}
				break
			}
		}
		if got := slotConfirmed(t, db, slot); got < skipTo {
			t.Fatalf("confirmed_flush_lsn %s, want at least %s", got, skipTo)
		}
	})
}
