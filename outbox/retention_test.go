package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/internal/retention"
	"github.com/pgoutbox/pgoutbox/outbox"
)

func prune(t *testing.T, db *pgtest.DB, slot string) int64 {
	t.Helper()
	n, err := retention.Prune(context.Background(), db.Pool, retention.Options{Schema: "app", Slot: slot, Retention: 24 * time.Hour, Batch: 1000})
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	return n
}

// Nothing is pruned without a relay record, without the slot (a lost slot's rows are needed for
// replay) or while the initial snapshot is pending; then rows committed before the slot go in batches,
// rows younger than the retention stay.
func TestPruneNeedsAConfirmedSlot(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	slot := slotName()
	db.Exec(t, `INSERT INTO app.pkg_outbox (id, destination, payload, created_at)
		SELECT gen_random_uuid(), 'event_bus', '', now() - interval '3 days' FROM generate_series(1, 2500)`)
	fresh := insertRow(t, db, time.Time{})
	if n := prune(t, db, slot); n != 0 {
		t.Fatalf("pruned %d rows without a relay record", n)
	}
	db.Exec(t, `INSERT INTO app.pkg_outbox_relay (slot_name, publication_name, created_lsn, confirmed_lsn, confirmed_commit_time, snapshot_pending)
		VALUES ($1, 'pgoutbox_app', '0/0', '0/0', now(), true)`, slot)
	if n := prune(t, db, slot); n != 0 {
		t.Fatalf("pruned %d rows while the recorded slot does not exist", n)
	}
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	consumeSlot(t, db, slot)
	if n := prune(t, db, slot); n != 0 {
		t.Fatalf("pruned %d rows while the initial snapshot is pending", n)
	}
	db.Exec(t, `UPDATE app.pkg_outbox_relay SET snapshot_pending = false WHERE slot_name = $1`, slot)
	if n := prune(t, db, slot); n != 2500 {
		t.Fatalf("pruned %d rows, want the 2500 older than the retention", n)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox WHERE id = $1`, fresh); n != 1 {
		t.Fatal("the row younger than the retention was pruned")
	}
}

// A row created long before the retention cut-off whose transaction commits after the slot's confirmed
// position (here: the relay is stopped, so it is behind) is never pruned, whatever its created_at; it is
// pruned once the relay delivered it and confirmed past it.
func TestPruneKeepsRowsCommittedAfterConfirmed(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	slot := slotName()
	ctx := context.Background()
	o := newOracle(db)
	opts := []outbox.Option{outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o), outbox.WithRetention(0)}
	r := startRelay(t, db, nil, opts...)
	threeDays := time.Now().Add(-72 * time.Hour)
	delivered := insertRow(t, db, threeDays)
	o.waitDelivered(t, 20*time.Second) // the initial snapshot is complete
	// The relay confirms past it: the delivered three-day-old row is pruned.
	waitPruned(t, db, slot, delivered)
	if !o.Has(delivered) {
		t.Fatal("a row was pruned before it was delivered")
	}

	// A long transaction: its row says it was created three days ago; it commits later.
	long, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = long.Rollback(ctx) }()
	late := newID()
	if _, err := long.Exec(ctx, `INSERT INTO app.pkg_outbox (id, destination, payload, created_at) VALUES ($1, 'event_bus', '', $2)`,
		late, threeDays); err != nil {
		t.Fatal(err)
	}
	o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus}})
	o.waitDelivered(t, 20*time.Second)

	// The relay falls behind (stopped), then the long transaction commits.
	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := r.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if err := long.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `CHECKPOINT`)
	if n := prune(t, db, slot); n != 0 || db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox WHERE id = $1`, late) != 1 {
		t.Fatalf("pruned %d rows: the row committed after the confirmed position (created three days ago) must stay", n)
	}

	// The relay catches up: the row is delivered, then pruned.
	startRelay(t, db, nil, opts...)
	waitPruned(t, db, slot, late)
	if !o.Has(late) {
		t.Fatal("the late row was pruned before it was delivered")
	}
}

// waitPruned prunes until id is gone; CHECKPOINT makes PostgreSQL log the running transactions, which
// lets the slot's catalog_xmin move once the relay confirms past them. On the shared test server a
// transaction another test holds open holds catalog_xmin back (it is the oldest running one cluster-wide).
func waitPruned(t *testing.T, db *pgtest.DB, slot, id string) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		db.Exec(t, `CHECKPOINT`)
		prune(t, db, slot)
		if db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox WHERE id = $1`, id) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("row %s was never pruned", id)
		}
	}
}

// consumeSlot reads slot (not in use) through SQL until its catalog_xmin passes every outbox row: the
// slot has then confirmed them all.
func consumeSlot(t *testing.T, db *pgtest.DB, slot string) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		db.Exec(t, `CHECKPOINT`)
		db.Exec(t, `SELECT count(*) FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
			'proto_version', '1', 'publication_names', 'pgoutbox_app')`, slot)
		if db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox WHERE xmin::text::bigint >=
			(SELECT catalog_xmin::text::bigint FROM pg_replication_slots WHERE slot_name = $1)`, slot) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s never confirmed the outbox rows", slot)
		}
	}
}
