package replication_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/replication"
)

// nextData returns the next non-keepalive event, decoded when it is XLogData.
func payloadOf(t *testing.T, m *pglogrepl.InsertMessage) string {
	t.Helper()
	// Columns: seq, id, destination, route, key, type, payload (binary mode: bytea's raw bytes), ...
	col := m.Tuple.Columns[6]
	return string(col.Data)
}

func TestStreamWalsenderTerminatedResumesFromConfirmed(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	r := start(t, db, testConfig(slot, "term"))
	r.waitState(t, replication.Streaming, 30*time.Second)

	insert(t, db, 1, "one")
	c1 := r.nextCommit(t, 10*time.Second)
	r.s.SetFlushed(c1.TransactionEndLSN, c1.CommitTime)
	eventually(t, 10*time.Second, func() error {
		if got := slotConfirmed(t, db, slot); got < c1.TransactionEndLSN {
			return fmt.Errorf("confirmed_flush_lsn %s < %s", got, c1.TransactionEndLSN)
		}
		return nil
	})
	insert(t, db, 1, "two")
	c2 := r.nextCommit(t, 10*time.Second) // received, never confirmed

	pid := activePID(t, db, slot)
	db.Exec(t, `SELECT pg_terminate_backend($1)`, pid)

	if ev, _ := r.nextMessage(t, 30*time.Second); ev.Kind != replication.Disconnected {
		t.Fatalf("first event after the walsender died: %v, want Disconnected", ev.Kind)
	}
	// The unconfirmed transaction is sent again, and nothing before it.
	_, msg := r.nextMessage(t, 30*time.Second)
	begin, ok := msg.(*pglogrepl.BeginMessage)
	if !ok || begin.FinalLSN != c2.CommitLSN {
		t.Fatalf("after reconnect got %T %+v, want Begin of the unconfirmed transaction (commit %s)", msg, msg, c2.CommitLSN)
	}
	for {
		_, msg := r.nextMessage(t, 10*time.Second)
		if ins, ok := msg.(*pglogrepl.InsertMessage); ok {
			if p := payloadOf(t, ins); p != "two" {
				t.Fatalf("re-sent insert has payload %q, want two", p)
			}
			break
		}
	}
	if got := r.nextCommit(t, 10*time.Second); got.TransactionEndLSN != c2.TransactionEndLSN {
		t.Fatalf("re-sent commit ends at %s, want %s", got.TransactionEndLSN, c2.TransactionEndLSN)
	}
	if st := r.s.Stats(); st.Reconnects < 1 {
		t.Fatalf("stats %+v: no reconnect counted", st)
	}
	if newPID := activePID(t, db, slot); newPID == pid || newPID == 0 {
		t.Fatalf("walsender pid %d after reconnect (was %d)", newPID, pid)
	}
}

func TestStreamStandbyTakesOver(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	a := start(t, db, testConfig(slot, "first"))
	a.waitState(t, replication.Streaming, 30*time.Second)
	b := start(t, db, testConfig(slot, "second"))
	b.waitState(t, replication.Standby, 10*time.Second)

	insert(t, db, 1, "for a")
	a.nextCommit(t, 10*time.Second)
	select {
	case batch := <-b.out:
		t.Fatalf("standby received %d events", len(batch))
	case <-time.After(300 * time.Millisecond):
	}
	if b.s.State() != replication.Standby {
		t.Fatalf("second instance is %s, want standby", b.s.State())
	}

	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	b.waitState(t, replication.Streaming, 10*time.Second)
	insert(t, db, 1, "for b")
	for {
		_, msg := b.nextMessage(t, 10*time.Second)
		if ins, ok := msg.(*pglogrepl.InsertMessage); ok && payloadOf(t, ins) == "for b" {
			break
		}
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_relay WHERE slot_name = $1 AND active_instance = 'second'`, slot); n != 1 {
		t.Fatal("relay record does not name the new active instance")
	}
}

// A walsender of our own application_name (a network cut left it behind) is terminated, not waited for.
func TestStreamTerminatesStaleOwnWalsender(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	// A slot created by hand (no relay record): the stream adopts it.
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stale, err := pgconn.Connect(ctx, db.ReplicationConnString()+"&application_name=pgoutbox-stale")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stale.Close(context.Background()) })
	if err := pglogrepl.StartReplication(ctx, stale, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'pgoutbox_app'"},
	}); err != nil {
		t.Fatal(err)
	}
	stalePID := activePID(t, db, slot)
	if stalePID == 0 {
		t.Fatal("stale walsender not active")
	}

	began := time.Now()
	r := start(t, db, testConfig(slot, "stale"))
	r.waitState(t, replication.Streaming, 10*time.Second)
	// wal_sender_timeout (5s) would end the stale walsender too: the takeover must be faster.
	if took := time.Since(began); took > 4*time.Second {
		t.Fatalf("takeover took %s: the stale walsender was waited for, not terminated", took)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, stalePID); n != 0 {
		t.Fatal("stale walsender still running")
	}
	if pid := activePID(t, db, slot); pid == stalePID || pid == 0 {
		t.Fatalf("slot active pid %d", pid)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_relay WHERE slot_name = $1`, slot); n != 1 {
		t.Fatal("adopted slot not recorded")
	}
}

func TestStreamSlowConsumerKeepsConnection(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	r := startBuffered(t, db, 0, testConfig(slot, "slow"))
	r.waitState(t, replication.Streaming, 30*time.Second)
	pid := activePID(t, db, slot)

	// Enough to fill the socket buffers: the walsender blocks writing, the stream blocks on out.
	insert(t, db, 20000, "a payload long enough to fill the socket buffers quickly, repeated many times over")
	time.Sleep(8 * time.Second) // > wal_sender_timeout (5s) without reading out

	if got := activePID(t, db, slot); got != pid {
		t.Fatalf("walsender changed from %d to %d: the connection was lost", pid, got)
	}
	if st := r.s.Stats(); st.Reconnects != 0 || time.Since(st.LastStatusTime) > 2*time.Second {
		t.Fatalf("stats %+v: reconnected or status updates stopped while blocked", st)
	}
	inserts := 0
	for {
		ev, msg := r.nextMessage(t, 60*time.Second)
		if ev.Kind == replication.Disconnected {
			t.Fatal("Disconnected while the consumer was slow")
		}
		switch msg.(type) {
		case *pglogrepl.InsertMessage:
			inserts++
		case *pglogrepl.CommitMessage:
			if inserts != 20000 {
				t.Fatalf("%d inserts before the commit, want 20000", inserts)
			}
			return
		}
	}
}

func TestStreamWrongPlugin(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot)
	r := start(t, db, testConfig(slot, "plugin"))
	err := r.wait(t, 30*time.Second)
	if !errors.Is(err, replication.ErrSlotMismatch) {
		t.Fatalf("Run returned %v, want ErrSlotMismatch", err)
	}
	t.Log(err)
}

func TestStreamSlotOfAnotherDatabase(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	other := newDB(t)
	slot := newSlot()
	other.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	r := start(t, db, testConfig(slot, "otherdb"))
	err := r.wait(t, 30*time.Second)
	if !errors.Is(err, replication.ErrSlotMismatch) {
		t.Fatalf("Run returned %v, want ErrSlotMismatch", err)
	}
	t.Log(err)
}

func TestStreamCloseConfirmsAndStops(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	cfg := testConfig(slot, "close")
	cfg.StatusInterval = 10 * time.Second // the timer must not be what confirms
	r := start(t, db, cfg)
	r.waitState(t, replication.Streaming, 30*time.Second)
	insert(t, db, 1, "x")
	c := r.nextCommit(t, 10*time.Second)
	r.s.SetFlushed(c.TransactionEndLSN, c.CommitTime)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.wait(t, time.Second); err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
	if got := slotConfirmed(t, db, slot); got != c.TransactionEndLSN {
		t.Fatalf("confirmed_flush_lsn %s after Close, want %s", got, c.TransactionEndLSN)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_relay WHERE slot_name = $1
		AND confirmed_lsn = $2::pg_lsn AND active_instance IS NULL`, slot, c.TransactionEndLSN.String()); n != 1 {
		t.Fatal("relay record not updated by Close")
	}
	if err := r.s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := r.s.Run(ctx, make(chan []replication.Event)); !errors.Is(err, replication.ErrClosed) {
		t.Fatalf("Run after Close returned %v, want ErrClosed", err)
	}
}
