package replication_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/replication"
)

// On the test cluster (PostgreSQL 15 or 17, whichever the matrix runs) Failover either creates a
// failover slot (17+) or stops the stream with ErrFailoverUnsupported before creating anything.
func TestFailoverSlotCreatedOrRefused(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	version := db.QueryInt(t, "SELECT current_setting('server_version_num')::int")
	slot := newSlot()
	cfg := testConfig(slot, "failover")
	cfg.Failover = true
	r := start(t, db, cfg)
	if version < 170000 {
		err := r.wait(t, 30*time.Second)
		if !errors.Is(err, replication.ErrFailoverUnsupported) || !errors.Is(err, replication.ErrInvalidConfig) {
			t.Fatalf("Run on server_version_num %d = %v, want ErrFailoverUnsupported (an ErrInvalidConfig)", version, err)
		}
		if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot); n != 0 {
			t.Fatalf("%d slots %q created on a server without failover slots", n, slot)
		}
		t.Logf("server_version_num %d: %v", version, err)
		return
	}
	r.waitState(t, replication.Streaming, 30*time.Second)
	if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND failover", slot); n != 1 {
		t.Fatalf("server_version_num %d: slot %q is not a failover slot", version, slot)
	}
}

// A slot created without failover gets it when a stream with Failover starts on it.
func TestFailoverTurnedOnForAnExistingSlot(t *testing.T) {
	t.Parallel()
	db := migrated(t, pgtest.NewCluster17(t).NewDB(t))
	slot := newSlot()
	r := start(t, db, testConfig(slot, "plain"))
	r.waitState(t, replication.Streaming, 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND NOT failover", slot); n != 1 {
		t.Fatalf("slot %q should exist without failover first", slot)
	}
	cfg := testConfig(slot, "plain")
	cfg.Failover = true
	r = start(t, db, cfg)
	r.waitState(t, replication.Streaming, 30*time.Second)
	if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND failover", slot); n != 1 {
		t.Fatalf("slot %q has no failover after a start with Failover", slot)
	}
}

// PostgreSQL 17, a primary and a synchronous standby synchronizing the failover slot. The stream
// connects through a URL that lists the standby first (target_session_attrs=read-write skips it). The
// primary is stopped with -m immediate and the standby promoted: the stream reconnects to it, streams
// the synchronized slot again from its position — the transaction it had received but not confirmed
// comes again — and then what commits on the new primary. A second stream, given only the standby's
// address, waits (reconnecting) while it is a standby and streams once it is promoted.
func TestStreamFollowsPromotedStandby(t *testing.T) {
	t.Parallel()
	primary := pgtest.NewCluster17(t)
	standby := primary.Standby(t, true)
	db := migrated(t, pgtest.NewFailoverDB(t, primary, standby))
	onStandby(t, standby, db) // a host without the database would end the connection attempt (pgconn tries no further host)
	slot := newSlot()
	cfg := testConfig(slot, "follow")
	cfg.Failover = true
	s, err := replication.New(pgtest.MultiHostURL(db.Name, standby, primary), cfg, replication.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, s, 16)
	r.waitState(t, replication.Streaming, 60*time.Second)
	sbURL, err := pgtest.WithDatabase(standby.URL, db.Name)
	if err != nil {
		t.Fatal(err)
	}
	singleSlot := newSlot()
	single := start(t, &pgtest.DB{ConnString: sbURL}, testConfig(singleSlot, "single"))
	confirmed := waitSynced(t, r, db, standby, slot)
	if st := single.s.State(); st == replication.Streaming || single.s.Stats().Reconnects == 0 {
		t.Fatalf("stream on the standby alone: state %s, %d reconnects; want it reconnecting, not streaming", st, single.s.Stats().Reconnects)
	}
	var created int64
	if err := onStandby(t, standby, db).QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
		singleSlot).Scan(&created); err != nil || created != 0 {
		t.Fatalf("the stream on the standby alone created %d slots there (%v): it must wait for a primary", created, err)
	}

	insert(t, db, 1, "unconfirmed") // on the standby too once the commit returns (synchronous)
	c2 := r.nextCommit(t, 10*time.Second)
	primary.StopServer(t, "immediate")
	standby.Promote(t)

	if ev := r.next(t, 60*time.Second, func(ev replication.Event) bool { return ev.Kind != replication.Keepalive }); ev.Kind != replication.Disconnected {
		t.Fatalf("first event after the primary stopped: %v, want Disconnected", ev.Kind)
	}
	_, msg := r.nextMessage(t, 60*time.Second)
	begin, ok := msg.(*pglogrepl.BeginMessage)
	if !ok || begin.FinalLSN <= confirmed || begin.FinalLSN > c2.CommitLSN {
		t.Fatalf("first message from the promoted standby: %T %+v, want the Begin of a transaction after the synchronized position %s, at most the unconfirmed one (%s)",
			msg, msg, confirmed, c2.CommitLSN)
	}
	for got := r.nextCommit(t, 30*time.Second); got.TransactionEndLSN != c2.TransactionEndLSN; got = r.nextCommit(t, 30*time.Second) {
		if got.TransactionEndLSN > c2.TransactionEndLSN {
			t.Fatalf("commit at %s after the promotion skipped the unconfirmed transaction ending at %s", got.TransactionEndLSN, c2.TransactionEndLSN)
		}
	}
	// On the promoted standby: db's pool follows the primary (a connection to the old one fails first).
	eventually(t, 30*time.Second, func() error {
		_, err := db.Pool.Exec(context.Background(), `INSERT INTO app.pkg_outbox (id, destination, payload)
			VALUES (gen_random_uuid(), 'dest', convert_to('after', 'UTF8'))`)
		return err
	})
	c3 := r.nextCommit(t, 30*time.Second)
	r.s.SetFlushed(c3.TransactionEndLSN, c3.CommitTime)
	eventually(t, 30*time.Second, func() error {
		if got := slotConfirmed(t, db, slot); got < c3.TransactionEndLSN {
			return fmt.Errorf("confirmed_flush_lsn on the new primary %s < %s", got, c3.TransactionEndLSN)
		}
		return nil
	})
	if st := r.s.Stats(); st.Reconnects < 1 {
		t.Fatalf("stats %+v: no reconnect counted", st)
	}
	single.waitState(t, replication.Streaming, 30*time.Second)
}

// PostgreSQL 17, a primary and an asynchronous standby whose WAL receiver is stopped after the slot
// was synchronized, and synchronized_standby_slots reset: the stream receives a transaction the
// standby never gets. After the primary stops and the standby is promoted, the stream must stop with
// ErrDiverged rather than carry on (it would skip the new primary's transactions at the same positions).
func TestStreamStopsWhenPromotedStandbyLacksReceivedWAL(t *testing.T) {
	t.Parallel()
	primary := pgtest.NewCluster17(t)
	standby := primary.Standby(t, false)
	db := migrated(t, pgtest.NewFailoverDB(t, primary, standby))
	slot := newSlot()
	cfg := testConfig(slot, "diverged")
	cfg.Failover = true
	s, err := replication.New(db.ConnString, cfg, replication.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, s, 16)
	r.waitState(t, replication.Streaming, 60*time.Second)
	waitSynced(t, r, db, standby, slot)

	sb := connect(t, standby.URL)
	for _, q := range []string{"ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()"} {
		if _, err := sb.Exec(context.Background(), q); err != nil {
			t.Fatalf("standby: %s: %v", q, err)
		}
	}
	eventually(t, 30*time.Second, func() error {
		var n int64
		if err := sb.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_wal_receiver").Scan(&n); err != nil || n != 0 {
			return fmt.Errorf("WAL receiver still running (%d, %v)", n, err)
		}
		return nil
	})
	db.Exec(t, "ALTER SYSTEM RESET synchronized_standby_slots")
	db.Exec(t, "SELECT pg_reload_conf()")
	insert(t, db, 1, "never on the standby")
	r.nextCommit(t, 30*time.Second)

	primary.StopServer(t, "immediate")
	standby.Promote(t)
	err = r.wait(t, 90*time.Second)
	if !errors.Is(err, replication.ErrDiverged) {
		t.Fatalf("Run after the promotion of a standby lacking received WAL = %v, want ErrDiverged", err)
	}
	t.Logf("Run: %v", err)
}

// migrated migrates the outbox schema into db.
func migrated(t *testing.T, db *pgtest.DB) *pgtest.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := outbox.Migrate(ctx, db.Pool, schema); err != nil {
		t.Fatal(err)
	}
	return db
}

// connect opens a connection to url (a cluster's postgres database), closed at cleanup.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// onStandby connects to db's database on standby, once the standby has replayed its creation (a
// standby replays after it confirmed, even a synchronous one). Closed at cleanup.
func onStandby(t *testing.T, standby *pgtest.Cluster, db *pgtest.DB) *pgx.Conn {
	t.Helper()
	u, err := pgtest.WithDatabase(standby.URL, db.Name)
	if err != nil {
		t.Fatal(err)
	}
	var conn *pgx.Conn
	eventually(t, 30*time.Second, func() error {
		conn, err = pgx.Connect(context.Background(), u)
		return err
	})
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// waitSynced commits and confirms transactions on r (checkpointing, which moves the slot's catalog
// horizon) until the standby's synchronized copy of slot is persistent (sync-ready), then waits until
// that copy reaches the position confirmed last, and returns it.
func waitSynced(t *testing.T, r *runner, db *pgtest.DB, standby *pgtest.Cluster, slot string) pglogrepl.LSN {
	t.Helper()
	sb := onStandby(t, standby, db)
	read := func() (persistent bool, confirmed string) {
		_ = sb.QueryRow(context.Background(), `SELECT NOT temporary, COALESCE(confirmed_flush_lsn::text, '') FROM pg_replication_slots
			WHERE slot_name = $1 AND synced AND invalidation_reason IS NULL`, slot).Scan(&persistent, &confirmed)
		return persistent, confirmed
	}
	var last pglogrepl.LSN
	deadline := time.Now().Add(90 * time.Second)
	for i := 1; ; i++ {
		insert(t, db, 1, fmt.Sprintf("sync %d", i))
		c := r.nextCommit(t, 10*time.Second)
		r.s.SetFlushed(c.TransactionEndLSN, c.CommitTime)
		last = c.TransactionEndLSN
		db.Exec(t, "CHECKPOINT")
		time.Sleep(300 * time.Millisecond)
		if persistent, _ := read(); persistent {
			t.Logf("slot %s sync-ready on the standby after %d transactions", slot, i)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s not synchronized to the standby within 90 s", slot)
		}
	}
	eventually(t, 60*time.Second, func() error {
		if _, got := read(); got != last.String() {
			return fmt.Errorf("synchronized slot at %q, want %s", got, last)
		}
		return nil
	})
	return last
}
