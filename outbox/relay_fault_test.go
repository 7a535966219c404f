package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/replication"
)

var errRollback = errors.New("rollback on purpose")

// One 100k-row transaction and one aborted 20k-row transaction; with streaming on, the server streams
// them in chunks (logical_decoding_work_mem=64kB) and the aborted one must never be delivered.
func TestRelayHugeTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("large transaction")
	}
	t.Parallel()
	forEachMode(t, func(t *testing.T, streaming bool) {
		db := relayDB(t, streaming)
		o := newOracle(db)
		slot := slotName()
		startRelay(t, db, nil, withStreaming(t, streaming, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o),
			outbox.WithMaxInFlight(5000))...)
		i4 := o.watchI4(t, slot)
		aborted := make([]outbox.Message, 20_000)
		for i := range aborted {
			aborted[i] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprint(i % 50), Payload: make([]byte, 64)}
		}
		err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
			if err := outbox.Enqueue(context.Background(), "app", tx, aborted...); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatal(err)
		}
		o.RecordRolledBack(aborted...)
		huge := make([]outbox.Message, 100_000)
		for i := range huge {
			huge[i] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprint(i % 100), Payload: make([]byte, 64)}
		}
		o.commitBatch(t, huge)
		o.waitDelivered(t, 3*time.Minute)
		i4.Stop()
		if i4.Polls() == 0 {
			t.Error("I4 watcher never saw a confirmed_flush_lsn")
		}
		o.check(t, false)
	})
}

// Traffic only in another database must not pin WAL: keepalives move the slot while nothing is in flight.
func TestRelayOtherDatabaseTrafficKeepsWALBounded(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	other := pgtest.New(t)
	slot := slotName()
	startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, oracle.NewSink()))
	other.Exec(t, "CREATE TABLE noise (id int, pad text)")
	retained := func() int64 {
		return db.QueryInt(t, `SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1`, slot)
	}
	for round := range 3 {
		other.Exec(t, "INSERT INTO noise SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
		_ = round
	}
	// Enough WAL was written elsewhere (~10 MB); after keepalives are confirmed and a checkpoint,
	// restart_lsn must have caught up.
	deadline := time.Now().Add(20 * time.Second)
	for {
		other.Exec(t, "INSERT INTO noise VALUES (0, 'tick')")
		db.Exec(t, "CHECKPOINT")
		r := retained()
		if r < 2<<20 {
			t.Logf("retained WAL after checkpoint: %d bytes", r)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot still retains %d bytes of WAL written only by another database", r)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Two relays on one slot: the second waits as a standby and takes over when the first goes away.
func TestRelayStandbyTakesOver(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	slot := slotName()
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	r1, err := outbox.Start(ctx1, db.Pool, "app", nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o), outbox.WithInstanceID("active"))
	if err != nil {
		t.Fatal(err)
	}
	r2 := startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o), outbox.WithInstanceID("standby"))
	if r1.State() != outbox.StateStreaming || r2.State() != outbox.StateStandby {
		t.Fatalf("states: first %s, second %s; want streaming and standby", r1.State(), r2.State())
	}
	o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: "a"}})
	o.waitDelivered(t, 20*time.Second)
	cancel1() // the active instance dies without draining
	_ = r1.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for r2.State() != outbox.StateStreaming {
		if time.Now().After(deadline) {
			t.Fatalf("standby did not take over: %s", r2.State())
		}
		time.Sleep(50 * time.Millisecond)
	}
	o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: "a"}, {ID: newID(), Destination: outbox.EventBus, Key: "b"}})
	o.waitDelivered(t, 20*time.Second)
	o.check(t, true)
}

// PostgreSQL restarted mid-stream (fast and immediate): the relay reconnects and nothing is lost.
// Runs on a private cluster so other tests keep their server.
func TestRelayPostgresRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a private cluster")
	}
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	db := cluster.NewDB(t)
	if err := outbox.Migrate(context.Background(), db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	o := newOracle(db)
	startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, o))
	for _, mode := range []string{"fast", "immediate"} {
		genErr := make(chan error, 1)
		go func() { genErr <- o.gen(2, 10, 300, 10) }()
		time.Sleep(300 * time.Millisecond)
		cluster.Restart(t, mode)
		<-genErr // the generator may fail on the restart; what it committed is recorded
		db.Pool.Reset()
	}
	// After the restarts, one more committed batch proves the stream is live again.
	var err error
	for i := 0; i < 50; i++ {
		after := []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: "after"}}
		if err = o.Commit(context.Background(), after, nil, false); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	o.waitDelivered(t, 90*time.Second)
	// Every message the generator saw committed must still be in the table (durable commits).
	var inTable int64
	ids := o.CommittedIDs()
	_ = db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM app.pkg_outbox WHERE id = ANY($1::uuid[])", ids).Scan(&inTable)
	if inTable != int64(len(ids)) {
		t.Fatalf("only %d of %d acknowledged commits survived the restart: the test cluster must run with synchronous_commit=on", inTable, len(ids))
	}
	o.check(t, true)
}

// A fatal replication error while streaming (here: the publication is dropped) ends the relay with
// that error; it must not hang with the decoder waiting for events.
func TestRelayFatalErrorMidStreamEndsRelay(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	r, err := outbox.Start(context.Background(), db.Pool, "app", nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, o))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus}})
	o.waitDelivered(t, 20*time.Second)
	db.Exec(t, "DROP PUBLICATION pgoutbox_app")
	_ = outbox.Enqueue(context.Background(), "app", db.Pool, outbox.Message{Destination: outbox.EventBus})
	done := make(chan error, 1)
	go func() { done <- r.Wait() }()
	select {
	case err := <-done:
		if !errors.Is(err, replication.ErrPublicationMissing) {
			t.Fatalf("Wait() = %v, want ErrPublicationMissing", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the relay did not end after a fatal replication error")
	}
}

// fatalSink delivers to the harness, except that a batch holding the record failID fails with
// outbox.Fatal(errSinkGone): the sink itself can deliver nothing more.
type fatalSink struct {
	*harness
	failID string
}

var errSinkGone = errors.New("test: the sink's producer was fenced")

func (s *fatalSink) Send(ctx context.Context, batch []outbox.Record) error {
	for _, r := range batch {
		if r.ID == s.failID {
			return outbox.Fatal(errSinkGone)
		}
	}
	return s.harness.Send(ctx, batch)
}

// A sink that fails for good (outbox.Fatal) stops the relay with its error: the failed record is
// neither dead-lettered nor counted as an attempt, the slot stays below it, and the next relay on the
// slot delivers it. A handler returning outbox.Fatal stops the relay the same way.
func TestFatalSinkErrorStopsRelay(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"sink", "handler"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			db := migrated(t)
			o := newOracle(db)
			slot := slotName()
			bad := newID()
			opts := []outbox.Option{outbox.WithSlotName(slot), outbox.WithStatusInterval(50 * time.Millisecond)}
			var handlers map[outbox.Destination]outbox.Handler
			if via == "sink" {
				opts = append(opts, outbox.WithSink(outbox.EventBus, &fatalSink{harness: o, failID: bad}))
			} else {
				handlers = map[outbox.Destination]outbox.Handler{outbox.EventBus: func(ctx context.Context, m outbox.Message) error {
					if m.ID == bad {
						return outbox.Fatal(errSinkGone)
					}
					return o.Handle(ctx, m)
				}}
			}
			r1, err := outbox.Start(context.Background(), db.Pool, "app", handlers, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { // bounded: a relay that never stopped holds its record in flight
				stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = r1.Stop(stopCtx)
			}()
			o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: "a"}})
			o.commitBatch(t, []outbox.Message{{ID: bad, Destination: outbox.EventBus, Key: "b"}})
			done := make(chan error, 1)
			go func() { done <- r1.Wait() }()
			select {
			case err := <-done:
				if !outbox.IsFatal(err) || !errors.Is(err, errSinkGone) {
					t.Fatalf("Wait() = %v, want the sink's fatal error", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the relay did not stop after the sink failed for good")
			}
			if st := r1.Stats(); st.DeadLettered != 0 || o.Has(bad) {
				t.Fatalf("the failed record: dead-lettered %d, delivered %v; want neither", st.DeadLettered, o.Has(bad))
			}
			// The next relay on the slot (the restart) delivers it.
			startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o))
			o.waitDelivered(t, 60*time.Second)
			o.check(t, true)
		})
	}
}
