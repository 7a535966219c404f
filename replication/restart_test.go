package replication_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/replication"
)

// TestStreamRestartPostgres restarts PostgreSQL (pg_ctl restart -m fast) mid-stream, on a private
// cluster so that other tests keep their server.
func TestStreamRestartPostgres(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	db := cluster.NewDB(t)
	if err := outbox.Migrate(t.Context(), db.Pool, schema); err != nil {
		t.Fatal(err)
	}
	slot := newSlot()
	r := start(t, db, testConfig(slot, "restart"))
	r.waitState(t, replication.Streaming, 30*time.Second)

	insert(t, db, 1, "before")
	c1 := r.nextCommit(t, 10*time.Second)
	r.s.SetFlushed(c1.TransactionEndLSN, c1.CommitTime)
	eventually(t, 10*time.Second, func() error {
		if got := slotConfirmed(t, db, slot); got < c1.TransactionEndLSN {
			return fmt.Errorf("confirmed_flush_lsn %s < %s", got, c1.TransactionEndLSN)
		}
		return nil
	})

	began := time.Now()
	cluster.Restart(t, "fast")
	t.Logf("restart took %s", time.Since(began))
	if ev, _ := r.nextMessage(t, 60*time.Second); ev.Kind != replication.Disconnected {
		t.Fatalf("first event after the restart: %v, want Disconnected", ev.Kind)
	}
	r.waitState(t, replication.Streaming, 60*time.Second)
	if st := r.s.Stats(); st.Reconnects < 1 {
		t.Fatalf("stats %+v: no reconnect counted", st)
	}

	eventually(t, 30*time.Second, func() error { // the pool reconnects too
		_, err := db.Pool.Exec(t.Context(), `INSERT INTO app.pkg_outbox (id, destination, payload)
			VALUES (gen_random_uuid(), 'dest', convert_to('after', 'UTF8'))`)
		return err
	})
	// PostgreSQL < 17 does not write a logical slot's confirmed_flush at the shutdown checkpoint unless
	// the slot is dirty, so "before" may come again (a duplicate after a fault, never a loss).
	pg17 := db.QueryInt(t, `SELECT current_setting('server_version_num')::int`) >= 170000
	for {
		_, msg := r.nextMessage(t, 30*time.Second)
		ins, ok := msg.(*pglogrepl.InsertMessage)
		if !ok {
			continue
		}
		switch p := payloadOf(t, ins); {
		case p == "after":
			return
		case p == "before" && !pg17:
			t.Log("confirmed transaction re-sent after the restart (PostgreSQL < 17)")
		default:
			t.Fatalf("insert %q after the restart, want after", p)
		}
	}
}
