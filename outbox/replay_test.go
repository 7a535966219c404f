package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/internal/retention"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// insertRow commits one outbox row; a non-zero created sets created_at (else the transaction's start).
func insertRow(t *testing.T, db *pgtest.DB, created time.Time) string {
	t.Helper()
	id := newID()
	if created.IsZero() {
		db.Exec(t, `INSERT INTO app.pkg_outbox (id, destination, payload) VALUES ($1, 'event_bus', '')`, id)
	} else {
		db.Exec(t, `INSERT INTO app.pkg_outbox (id, destination, payload, created_at) VALUES ($1, 'event_bus', '', $2)`, id, created)
	}
	return id
}

// straddle enqueues a message in a transaction that begins before the time it returns (read from the
// database clock, after sleeping hold seconds inside the transaction) and commits after it.
func straddle(t *testing.T, db *pgtest.DB, hold float64) (id string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	id = newID()
	if err := outbox.Enqueue(ctx, "app", tx, outbox.Message{ID: id, Destination: outbox.EventBus}); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT clock_timestamp() FROM pg_sleep($1)`, hold).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return id, at
}

// replayedIDs returns the ids that have more than one row (the original and a replayed copy).
func replayedIDs(t *testing.T, db *pgtest.DB) map[string]int {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT id::text, count(*) - 1 FROM app.pkg_outbox GROUP BY id HAVING count(*) > 1`)
	if err != nil {
		t.Fatal(err)
	}
	m, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct {
		id string
		n  int
	}, error) {
		var v struct {
			id string
			n  int
		}
		return v, r.Scan(&v.id, &v.n)
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, v := range m {
		out[v.id] = v.n
	}
	return out
}

func replay(t *testing.T, db *pgtest.DB, f outbox.ReplayFilter, dryRun bool) outbox.ReplayResult {
	t.Helper()
	res, err := outbox.Replay(context.Background(), db.Pool, "app", f, dryRun)
	if err != nil {
		t.Fatalf("Replay(%+v, dry run %v): %v", f, dryRun, err)
	}
	return res
}

// Without commit timestamps (the shared server runs with track_commit_timestamp off) a transaction
// that began before --since and committed after it is replayed through the margin, which is reported.
func TestReplaySinceWithoutCommitTimestamps(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	if on := db.QueryInt(t, `SELECT current_setting('track_commit_timestamp')::bool::int`); on != 0 {
		t.Fatal("the test server runs with track_commit_timestamp on: this test is about off")
	}
	now := time.Now()
	old := insertRow(t, db, now.Add(-2*time.Hour))      // before since minus the margin: not replayed
	early := insertRow(t, db, now.Add(-30*time.Minute)) // committed before since, within the margin: a duplicate
	straddler, since := straddle(t, db, 0.01)
	after := insertRow(t, db, time.Time{})

	got := replay(t, db, outbox.ReplayFilter{From: since}, true)
	if want := (outbox.ReplayResult{Rows: 3, MarginRows: 2}); got != want {
		t.Fatalf("dry run since %s = %+v, want %+v (the straddling transaction and the early row through the margin)", since, got, want)
	}
	if got := replay(t, db, outbox.ReplayFilter{From: since, Margin: -1}, true); got.Rows != 1 || got.MarginRows != 0 {
		t.Errorf("no margin: %+v, want only the row created after since", got)
	}
	// --until is inclusive and, without commit times, keeps a transaction that began before it.
	if got := replay(t, db, outbox.ReplayFilter{From: now.Add(-time.Minute), To: since}, true); got.Rows != 2 || got.MarginRows != 1 {
		t.Errorf("until %s: %+v, want the early row (margin) and the straddling one", since, got)
	}

	if got := replay(t, db, outbox.ReplayFilter{From: since}, false); got.Rows != 3 || got.MarginRows != 2 {
		t.Fatalf("replay = %+v, want 3 rows, 2 through the margin", got)
	}
	copies := replayedIDs(t, db)
	if len(copies) != 3 || copies[early] != 1 || copies[straddler] != 1 || copies[after] != 1 || copies[old] != 0 {
		t.Errorf("replayed copies %v, want one each of early, straddler and after", copies)
	}
}

// Replaying by id replays each message once, even when it is in the table twice already (replayed or
// requeued before).
func TestReplayByIDOncePerMessage(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	a, b := insertRow(t, db, time.Time{}), insertRow(t, db, time.Time{})
	f := outbox.ReplayFilter{IDs: []string{a}}
	for round := 1; round <= 2; round++ {
		if got := replay(t, db, f, false); got.Rows != 1 || got.MarginRows != 0 {
			t.Fatalf("round %d: replay by id = %+v, want 1 row", round, got)
		}
	}
	if copies := replayedIDs(t, db); copies[a] != 2 || copies[b] != 0 {
		t.Errorf("copies %v, want two of %s (one per replay) and none of %s", copies, a, b)
	}
	// Invalid filters.
	for _, f := range []outbox.ReplayFilter{{}, {From: time.Now(), To: time.Now().Add(-time.Second)}} {
		if _, err := outbox.Replay(context.Background(), db.Pool, "app", f, true); !errors.Is(err, outbox.ErrInvalidMessage) {
			t.Errorf("Replay(%+v) = %v, want ErrInvalidMessage", f, err)
		}
	}
}

// With track_commit_timestamp on (a private cluster), the range applies to commit times: a transaction
// that began before since and committed after it is replayed as an exact match, a row committed before
// since is not, whatever its created_at. Rows committed before the setting was turned on have no commit
// time and fall back to created_at and the margin. Retention counts from the commit time too.
func TestReplaySinceByCommitTime(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private cluster")
	}
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	db := cluster.NewDB(t)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	legacyOld := insertRow(t, db, now.Add(-2*time.Hour)) // no commit time, before the margin
	legacy := insertRow(t, db, time.Time{})              // no commit time, within the margin
	db.Exec(t, `ALTER SYSTEM SET track_commit_timestamp = on`)
	cluster.Restart(t, "fast")
	db.Pool.Reset()
	if on := db.QueryInt(t, `SELECT current_setting('track_commit_timestamp')::bool::int`); on != 1 {
		t.Fatal("track_commit_timestamp is still off after the restart")
	}

	early := insertRow(t, db, time.Time{}) // committed over a second (the slack) before since
	straddler, since := straddle(t, db, 1.5)
	after := insertRow(t, db, now.Add(-3*24*time.Hour)) // created_at says 3 days ago, committed after since

	got := replay(t, db, outbox.ReplayFilter{From: since}, true)
	if want := (outbox.ReplayResult{Rows: 3, MarginRows: 1, ByCommitTime: true}); got != want {
		t.Fatalf("dry run since %s = %+v, want %+v (straddler and after exact, the legacy row through the margin)", since, got, want)
	}
	if got := replay(t, db, outbox.ReplayFilter{From: since}, false); got.Rows != 3 {
		t.Fatalf("replay = %+v, want 3 rows", got)
	}
	copies := replayedIDs(t, db)
	if len(copies) != 3 || copies[straddler] != 1 || copies[after] != 1 || copies[legacy] != 1 || copies[early] != 0 || copies[legacyOld] != 0 {
		t.Errorf("replayed copies %v, want one each of straddler, after and legacy", copies)
	}

	// Retention counts from the commit time: "after" (created_at 3 days ago, committed now) stays, the
	// legacy row created 2 hours ago (no commit time) goes, once the slot confirmed both.
	db.Exec(t, `SELECT pg_create_logical_replication_slot('prune_ct', 'pgoutput')`)
	db.Exec(t, `INSERT INTO app.pkg_outbox_relay (slot_name, publication_name, created_lsn) VALUES ('prune_ct', 'pgoutbox_app', '0/0')`)
	consumeSlot(t, db, "prune_ct")
	if n, err := retention.Prune(ctx, db.Pool, retention.Options{Schema: "app", Slot: "prune_ct", Retention: time.Hour, Batch: 100}); err != nil || n != 1 {
		t.Fatalf("prune by commit time = %d, %v; want 1 (the legacy row created 2 hours ago)", n, err)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox WHERE id = $1`, after); n != 2 {
		t.Errorf("%d rows of the message committed now but created 3 days ago, want 2 (original and copy)", n)
	}
}
