package replication_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgoutbox/pgoutbox/replication"
)

func TestStreamCreatesRecordsAndReusesSlot(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()

	r := start(t, db, testConfig(slot, "a"))
	r.waitState(t, replication.Streaming, 30*time.Second)
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND plugin = 'pgoutput'
		AND slot_type = 'logical' AND NOT temporary AND database = current_database()`, slot); n != 1 {
		t.Fatalf("pgoutput slot %s: found %d", slot, n)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_relay WHERE slot_name = $1
		AND publication_name = 'pgoutbox_app' AND created_lsn > '0/0' AND active_instance = 'a'`, slot); n != 1 {
		t.Fatalf("relay record of %s: found %d", slot, n)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgoutbox-a'`); n != 1 {
		t.Fatalf("walsender with application_name pgoutbox-a: found %d", n)
	}
	var created time.Time
	if err := db.Pool.QueryRow(context.Background(), `SELECT created_at FROM app.pkg_outbox_relay WHERE slot_name = $1`, slot).Scan(&created); err != nil {
		t.Fatal(err)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if st := r.s.State(); st != replication.Stopped {
		t.Fatalf("state after Run: %s", st)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_relay WHERE slot_name = $1 AND active_instance IS NULL`, slot); n != 1 {
		t.Fatal("active_instance not cleared on shutdown")
	}

	// A restart reuses the slot and its record.
	r2 := start(t, db, testConfig(slot, "a"))
	r2.waitState(t, replication.Streaming, 30*time.Second)
	insert(t, db, 1, "after restart")
	r2.nextCommit(t, 10*time.Second)
	var created2 time.Time
	if err := db.Pool.QueryRow(context.Background(), `SELECT created_at FROM app.pkg_outbox_relay WHERE slot_name = $1`, slot).Scan(&created2); err != nil {
		t.Fatal(err)
	}
	if !created2.Equal(created) {
		t.Fatalf("record recreated: created_at %s, then %s", created, created2)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != 1 {
		t.Fatalf("%d slots in the database, want 1", n)
	}
}

func TestStreamEventsAndSetFlushed(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	r := start(t, db, testConfig(slot, "events"))
	r.waitState(t, replication.Streaming, 30*time.Second)

	insert(t, db, 3, "hello")
	var kinds []string
	var commit *pglogrepl.CommitMessage
	for commit == nil {
		ev, msg := r.nextMessage(t, 10*time.Second)
		if ev.Kind != replication.XLogData {
			t.Fatalf("unexpected event %+v", ev)
		}
		if _, rel := msg.(*pglogrepl.RelationMessage); !rel && ev.WALStart == 0 { // pgoutput sends Relation at 0/0
			t.Fatalf("event without WALStart: %+v", ev)
		}
		switch m := msg.(type) {
		case *pglogrepl.BeginMessage:
			kinds = append(kinds, "B")
		case *pglogrepl.RelationMessage:
			kinds = append(kinds, "R")
			if m.Namespace != schema || m.RelationName != "pkg_outbox" {
				t.Fatalf("relation %s.%s", m.Namespace, m.RelationName)
			}
		case *pglogrepl.InsertMessage:
			kinds = append(kinds, "I")
		case *pglogrepl.CommitMessage:
			kinds = append(kinds, "C")
			commit = m
		default:
			t.Fatalf("unexpected message %T", m)
		}
	}
	if got := strings.Join(kinds, ""); got != "BRIIIC" {
		t.Fatalf("messages %s, want BRIIIC", got)
	}

	r.s.SetFlushed(commit.TransactionEndLSN, commit.CommitTime)
	eventually(t, 10*time.Second, func() error {
		if got := slotConfirmed(t, db, slot); got < commit.TransactionEndLSN {
			return fmt.Errorf("confirmed_flush_lsn %s, want %s", got, commit.TransactionEndLSN)
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		var lsn string
		var ct time.Time
		if err := db.Pool.QueryRow(context.Background(), `SELECT confirmed_lsn::text, confirmed_commit_time
			FROM app.pkg_outbox_relay WHERE slot_name = $1 AND confirmed_lsn IS NOT NULL`, slot).Scan(&lsn, &ct); err != nil {
			return err
		}
		if lsn != commit.TransactionEndLSN.String() || !ct.Equal(commit.CommitTime) {
			return fmt.Errorf("record has %s at %s, want %s at %s", lsn, ct, commit.TransactionEndLSN, commit.CommitTime)
		}
		return nil
	})
	if st := r.s.Stats(); st.LastStatusLSN != commit.TransactionEndLSN || st.FlushedLSN != commit.TransactionEndLSN || st.LastServerWALEnd == 0 {
		t.Fatalf("stats %+v", st)
	}
	// Monotonic: going back is ignored.
	r.s.SetFlushed(commit.TransactionEndLSN-1, time.Now())
	if st := r.s.Stats(); st.FlushedLSN != commit.TransactionEndLSN {
		t.Fatalf("SetFlushed went backwards: %s", st.FlushedLSN)
	}
}

func TestStreamKeepalives(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	r := start(t, db, testConfig(slot, "ka"))
	r.waitState(t, replication.Streaming, 30*time.Second)
	began := time.Now()
	ev := r.next(t, 10*time.Second, func(ev replication.Event) bool { return ev.Kind == replication.Keepalive })
	t.Logf("first keepalive after %s: WAL end %s", time.Since(began), ev.ServerWALEnd)
	if ev.ServerWALEnd == 0 {
		t.Fatal("keepalive without a WAL end")
	}
}

func TestStreamSlotLost(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	r := start(t, db, testConfig(slot, "lost"))
	r.waitState(t, replication.Streaming, 30*time.Second)
	insert(t, db, 1, "x")
	commit := r.nextCommit(t, 10*time.Second)
	r.s.SetFlushed(commit.TransactionEndLSN, commit.CommitTime)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `SELECT pg_drop_replication_slot($1)`, slot)

	r2 := start(t, db, testConfig(slot, "lost"))
	err := r2.wait(t, 30*time.Second)
	var lost *replication.SlotLostError
	if !errors.As(err, &lost) || !errors.Is(err, replication.ErrSlotLost) {
		t.Fatalf("Run returned %v, want a SlotLostError", err)
	}
	if lost.Slot != slot || lost.LastConfirmedLSN != commit.TransactionEndLSN || !lost.LastCommitTime.Equal(commit.CommitTime) {
		t.Fatalf("SlotLostError %+v, want LSN %s time %s", lost, commit.TransactionEndLSN, commit.CommitTime)
	}
	ts := commit.CommitTime.UTC().Format(time.RFC3339Nano)
	if msg := err.Error(); !strings.Contains(msg, ts) || !strings.Contains(msg, "pgoutbox replay --since "+ts) {
		t.Fatalf("error does not name the commit time %s and the replay command: %s", ts, msg)
	}
	for _, want := range []string{"track_commit_timestamp", "--margin", "consumers dedupe on the message id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say how replay matches rows (%q): %s", want, err)
		}
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot); n != 0 {
		t.Fatal("a lost slot was recreated")
	}
}

func TestStreamNoCreateSlot(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	r := start(t, db, testConfig(slot, "nc"), replication.WithCreateSlot(false))
	if err := r.wait(t, 30*time.Second); !errors.Is(err, replication.ErrSlotMissing) {
		t.Fatalf("Run returned %v, want ErrSlotMissing", err)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot); n != 0 {
		t.Fatal("slot created although CreateSlot is off")
	}
}

func TestStreamPublicationMissingAtStart(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	db.Exec(t, `DROP PUBLICATION pgoutbox_app`)
	r := start(t, db, testConfig(newSlot(), "pub"))
	err := r.wait(t, 30*time.Second)
	if !errors.Is(err, replication.ErrPublicationMissing) || !strings.Contains(err.Error(), "pgoutbox_app") ||
		!strings.Contains(err.Error(), `"app"."pkg_outbox"`) {
		t.Fatalf("Run returned %v, want ErrPublicationMissing naming the publication and the table", err)
	}
}

func TestStreamPublicationNotCoveringOutbox(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	db.Exec(t, `ALTER PUBLICATION pgoutbox_app DROP TABLE app.pkg_outbox`)
	r := start(t, db, testConfig(newSlot(), "pub"))
	if err := r.wait(t, 30*time.Second); !errors.Is(err, replication.ErrPublicationMissing) {
		t.Fatalf("Run returned %v, want ErrPublicationMissing", err)
	}
}

func TestStreamPublicationDroppedWhileStreaming(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	cfg := testConfig(newSlot(), "pub")
	cfg.PublicationCheckInterval = 300 * time.Millisecond
	r := start(t, db, cfg)
	r.waitState(t, replication.Streaming, 30*time.Second)
	db.Exec(t, `DROP PUBLICATION pgoutbox_app`)
	if err := r.wait(t, 30*time.Second); !errors.Is(err, replication.ErrPublicationMissing) {
		t.Fatalf("Run returned %v, want ErrPublicationMissing", err)
	}
}
