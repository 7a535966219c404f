package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

func forEachMode(t *testing.T, f func(t *testing.T, streaming bool)) {
	for _, streaming := range []bool{false, true} {
		t.Run(fmt.Sprintf("streaming=%v", streaming), func(t *testing.T) {
			t.Parallel()
			f(t, streaming)
		})
	}
}

// withStreaming returns opts and, with on, pgoutput streaming with a 256 KiB memory limit spilling
// into a test directory.
func withStreaming(t *testing.T, on bool, opts ...outbox.Option) []outbox.Option {
	if !on {
		return opts
	}
	return append(opts, outbox.WithStreaming(true), outbox.WithStreamMemoryLimit(256<<10), outbox.WithSpillDir(t.TempDir()))
}

// 10k messages over 100 keys in random transaction sizes, 10 % rolled back, some savepoints rolled
// back, a sink that is slow now and then; confirmed_flush_lsn is polled throughout (I4).
func TestRelayDeliversEveryCommittedMessageInOrder(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, streaming bool) {
		db := relayDB(t, streaming)
		o := newOracle(db)
		slot := slotName()
		var n atomic.Int64
		slow := sinkFunc(func(ctx context.Context, batch []outbox.Record) error {
			if n.Add(1)%50 == 0 {
				time.Sleep(20 * time.Millisecond) // lets acks lag behind the stream
			}
			return o.Send(ctx, batch)
		})
		startRelay(t, db, nil, withStreaming(t, streaming, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, slow))...)
		i4 := o.watchI4(t, slot)
		// One large transaction first: with streaming on and 64kB work mem it is streamed in chunks.
		big := make([]outbox.Message, 3000)
		for i := range big {
			big[i] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("big-%d", i%10), Payload: make([]byte, 100)}
		}
		o.commitBatch(t, big)
		if err := o.gen(4, 25, 700, 10); err != nil {
			t.Fatal(err)
		}
		o.waitDelivered(t, 90*time.Second)
		time.Sleep(300 * time.Millisecond) // a few more I4 polls after the last ack
		i4.Stop()
		if i4.Polls() == 0 {
			t.Error("I4 watcher never saw a confirmed_flush_lsn")
		}
		o.check(t, false)
	})
}

type sinkFunc func(ctx context.Context, batch []outbox.Record) error

func (f sinkFunc) Send(ctx context.Context, batch []outbox.Record) error { return f(ctx, batch) }

func TestRelayRetriesThenDeadLetters(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	poison := newID()
	var poisonCalls atomic.Int64
	handlers := map[outbox.Destination]outbox.Handler{
		outbox.EventBus: func(ctx context.Context, m outbox.Message) error {
			if m.ID == poison {
				poisonCalls.Add(1)
				return errors.New("handler says no: invalid order state")
			}
			return o.Handle(ctx, m)
		},
		commandQueue: func(ctx context.Context, m outbox.Message) error {
			if string(m.Payload) == "panic" {
				panic("handler bug")
			}
			return o.Handle(ctx, m)
		},
	}
	startRelay(t, db, handlers, outbox.WithSlotName(slotName()), outbox.WithMaxAttempts(3),
		outbox.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
	panicID, unknownID := newID(), newID()
	msgs := []outbox.Message{
		{ID: newID(), Destination: outbox.EventBus, Key: "k1"},
		{ID: poison, Destination: outbox.EventBus, Key: "k1", Payload: []byte(`{"poison":true}`), Headers: map[string]string{"h": "v"}},
		{ID: newID(), Destination: outbox.EventBus, Key: "k1"}, // same key: waits for the poison, then flows
		{ID: panicID, Destination: commandQueue, Key: "k2", Payload: []byte("panic")},
		{ID: unknownID, Destination: "nowhere", Key: "k3"},
		{ID: newID(), Destination: commandQueue, Key: "k2"},
	}
	o.commitBatch(t, msgs)
	o.waitDelivered(t, 30*time.Second)
	o.check(t, false)
	if got := poisonCalls.Load(); got != 3 {
		t.Errorf("poison message tried %d times, want MaxAttempts=3", got)
	}
	dls, err := outbox.ListDeadLetters(context.Background(), db.Pool, "app", outbox.DeadLetterFilter{All: true})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]outbox.DeadLetter{}
	for _, d := range dls {
		byID[d.ID] = d
	}
	if d := byID[poison]; d.Attempts != 3 || !strings.Contains(d.Error, "invalid order state") || string(d.Payload) != `{"poison":true}` ||
		d.Headers["h"] != "v" || d.Key != "k1" || d.CommitLSN == "" {
		t.Errorf("poison dead letter = %+v", d)
	}
	if d := byID[panicID]; !strings.Contains(d.Error, "panicked: handler bug") {
		t.Errorf("panic dead letter = %+v", d)
	}
	if d := byID[unknownID]; !strings.Contains(d.Error, `no handler or sink for destination "nowhere"`) {
		t.Errorf("unknown destination dead letter = %+v", d)
	}
	if len(dls) != 3 {
		t.Errorf("%d dead letters, want 3: %v", len(dls), sortedKeys(byID))
	}

	// Requeue the poison one: it flows again with the same id once the handler accepts it.
	poisonCalls.Store(-100) // the handler still refuses it; count proves it was retried
	n, err := outbox.RequeueDeadLetters(context.Background(), db.Pool, "app", outbox.DeadLetterFilter{IDs: []string{unknownID}})
	if err != nil || n != 1 {
		t.Fatalf("requeue: %d, %v", n, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter WHERE id = $1", unknownID) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("requeued message did not come back to the dead letters (destination still unknown)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, err := outbox.PurgeDeadLetters(context.Background(), db.Pool, "app", outbox.DeadLetterFilter{All: true}); err != nil || n != 3 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	if _, err := outbox.PurgeDeadLetters(context.Background(), db.Pool, "app", outbox.DeadLetterFilter{}); !errors.Is(err, outbox.ErrInvalidMessage) {
		t.Fatalf("empty filter purge: %v", err)
	}
}

func TestRelaySystemicFailureBlocksWithoutDeadLetters(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	slot := slotName()
	var down atomic.Bool
	down.Store(true)
	sink := sinkFunc(func(ctx context.Context, b []outbox.Record) error {
		if down.Load() {
			return outbox.Unavailable(errors.New("broker down"))
		}
		return o.Send(ctx, b)
	})
	r := startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, sink), outbox.WithMaxAttempts(2),
		outbox.WithRetryBackoff(time.Millisecond, 20*time.Millisecond))
	var beforeS string
	_ = db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&beforeS)
	before, _ := pglogrepl.ParseLSN(beforeS)
	msgs := make([]outbox.Message, 50)
	for i := range msgs {
		msgs[i] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprint(i % 5)}
	}
	o.commitBatch(t, msgs)
	time.Sleep(time.Second) // many retries at 20ms
	if b := r.Blocked(); b[outbox.EventBus] == "" {
		t.Errorf("Blocked() = %v, want event_bus reported", b)
	}
	var duringS string
	_ = db.Pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&duringS)
	during, _ := pglogrepl.ParseLSN(duringS)
	if n := db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter"); n != 0 {
		t.Fatalf("%d dead letters from a systemic failure", n)
	}
	down.Store(false)
	o.waitDelivered(t, 20*time.Second)
	o.check(t, false)
	// A slot restarted at confirmed_flush re-sends every transaction whose commit record starts at or
	// after it: the batch was protected iff the position confirmed while blocked is <= its commit LSN.
	commitLSN := o.Records()[0].CommitLSN
	if during > commitLSN {
		t.Errorf("confirmed_flush_lsn %s passed the batch's commit LSN %s while the sink was down (insert position before the batch: %s)", during, commitLSN, before)
	}
	if b := r.Blocked(); len(b) != 0 {
		t.Errorf("Blocked() = %v after recovery", b)
	}
}

func TestRelayStopAndRestartResumes(t *testing.T) {
	t.Parallel()
	for _, graceful := range []bool{true, false} {
		t.Run(fmt.Sprintf("graceful=%v", graceful), func(t *testing.T) {
			t.Parallel()
			db := migrated(t)
			o := newOracle(db)
			slot := slotName()
			start := func(ctx context.Context) *outbox.Relay {
				r, err := outbox.Start(ctx, db.Pool, "app", nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o),
					outbox.WithStatusInterval(50*time.Millisecond))
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			ctx1, cancel1 := context.WithCancel(context.Background())
			r1 := start(ctx1)
			genErr := make(chan error, 1)
			go func() { genErr <- o.gen(2, 10, 400, 10) }()
			deadline := time.Now().Add(30 * time.Second)
			for o.Count() < 500 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if graceful {
				sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
				if err := r1.Stop(sctx); err != nil {
					t.Fatalf("Stop: %v", err)
				}
				c()
			} else {
				cancel1() // hard stop: no drain
				_ = r1.Wait()
			}
			cancel1()
			r2 := start(context.Background())
			defer r2.Stop(context.Background())
			if err := <-genErr; err != nil {
				t.Fatal(err)
			}
			o.waitDelivered(t, 60*time.Second)
			dups := o.check(t, !graceful)
			t.Logf("duplicates after restart: %d", dups)
		})
	}
}

func TestRelaySlotDroppedIsNotRecreated(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	slot := slotName()
	o := newOracle(db)
	r := startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o))
	o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus}})
	o.waitDelivered(t, 20*time.Second)
	time.Sleep(300 * time.Millisecond) // let the relay record a confirmed commit time
	_ = r.Stop(context.Background())
	db.Exec(t, "SELECT pg_drop_replication_slot($1)", slot)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := outbox.Start(ctx, db.Pool, "app", nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o))
	if err == nil || !strings.Contains(err.Error(), slot) || !strings.Contains(err.Error(), "replay") {
		t.Fatalf("Start after the slot was dropped: err = %v, want a slot-lost error naming the slot and how to replay", err)
	}
	if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot); n != 0 {
		t.Fatal("the relay recreated a lost slot")
	}
}

func TestRelayAlterTableMidStream(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, o))
	o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: "a", Payload: []byte("before")}})
	o.waitDelivered(t, 20*time.Second)
	// A column added in front of the ones we read changes positions; decoding goes by name.
	db.Exec(t, "ALTER TABLE app.pkg_outbox ADD COLUMN tenant text DEFAULT 'acme'")
	o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: "a", Payload: []byte("after")}})
	o.waitDelivered(t, 20*time.Second)
	o.check(t, false)
	recs := o.Records()
	if got := string(recs[len(recs)-1].Payload); got != "after" {
		t.Errorf("payload after ALTER TABLE = %q", got)
	}
}

func TestReplayRedeliversRetainedRows(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, o))
	msgs := []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: "r"}, {ID: newID(), Destination: outbox.EventBus, Key: "r"}}
	o.commitBatch(t, msgs)
	o.waitDelivered(t, 20*time.Second)
	ctx := context.Background()
	res, err := outbox.Replay(ctx, db.Pool, "app", outbox.ReplayFilter{IDs: []string{msgs[1].ID}}, true)
	if err != nil || res.Rows != 1 {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	if c := db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox"); c != 2 {
		t.Fatalf("dry run wrote rows: %d", c)
	}
	if res, err = outbox.Replay(ctx, db.Pool, "app", outbox.ReplayFilter{From: time.Now().Add(-time.Hour)}, false); err != nil || res.Rows != 2 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := len(o.Records())
		if got == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d after replay, want 4", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if recs := o.Records(); recs[2].ID != msgs[0].ID || recs[3].ID != msgs[1].ID {
		t.Errorf("replayed ids out of order or changed")
	}
	if _, err := outbox.Replay(ctx, db.Pool, "app", outbox.ReplayFilter{}, true); !errors.Is(err, outbox.ErrInvalidMessage) {
		t.Errorf("empty replay filter: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	if _, err := outbox.Start(ctx, db.Pool, "app", nil); !errors.Is(err, outbox.ErrNotMigrated) {
		t.Errorf("not migrated: %v", err)
	}
	if _, err := outbox.Start(ctx, db.Pool, "a;b", nil); !errors.Is(err, outbox.ErrInvalidSchema) {
		t.Errorf("bad schema: %v", err)
	}
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opt  outbox.Option
		want string
	}{
		{outbox.WithSlotName("Bad-Slot"), "Bad-Slot"},
		{outbox.WithMaxAttempts(0), "WithMaxAttempts(0)"},
		{outbox.WithRetryBackoff(time.Second, time.Millisecond), "WithRetryBackoff"},
		{outbox.WithCreateSlot(false), "slot"},
		{outbox.WithStreamMemoryLimit(0), "WithStreamMemoryLimit(0): must be at least 1 byte"},
	} {
		_, err := outbox.Start(ctx, db.Pool, "app", nil, outbox.WithSlotName(slotName()), tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want it to mention %q", err, tc.want)
		}
	}
}

// A handler that hangs is cut off after WithHandlerTimeout (a failed attempt, then a dead letter);
// the messages after it get a live context again.
func TestRelayHandlerTimeout(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	slow := newID()
	var cause atomic.Value
	handlers := map[outbox.Destination]outbox.Handler{
		outbox.EventBus: func(ctx context.Context, m outbox.Message) error {
			if m.ID == slow {
				<-ctx.Done()
				cause.Store(context.Cause(ctx))
				return ctx.Err()
			}
			if ctx.Err() != nil {
				return fmt.Errorf("handler got a dead context: %w", ctx.Err())
			}
			return o.Handle(ctx, m)
		},
	}
	startRelay(t, db, handlers, outbox.WithSlotName(slotName()), outbox.WithHandlerTimeout(100*time.Millisecond),
		outbox.WithMaxAttempts(2), outbox.WithRetryBackoff(time.Millisecond, time.Millisecond), outbox.WithLanes(1))
	msgs := []outbox.Message{
		{ID: newID(), Destination: outbox.EventBus, Key: "k"},
		{ID: slow, Destination: outbox.EventBus, Key: "k"},
		{ID: newID(), Destination: outbox.EventBus, Key: "k"},
		{ID: newID(), Destination: outbox.EventBus, Key: "other"},
	}
	o.commitBatch(t, msgs)
	o.waitDelivered(t, 20*time.Second)
	o.check(t, false)
	if c, _ := cause.Load().(error); !errors.Is(c, context.DeadlineExceeded) {
		t.Errorf("cause of the cancelled handler ctx = %v, want context.DeadlineExceeded", c)
	}
	dls, err := outbox.ListDeadLetters(context.Background(), db.Pool, "app", outbox.DeadLetterFilter{IDs: []string{slow}})
	if err != nil || len(dls) != 1 || dls[0].Attempts != 2 {
		t.Fatalf("dead letter of the hung message: %+v, %v", dls, err)
	}
}

// A sink holds a record back behind a failed earlier record of its key (ErrNotAttempted): that costs the
// held-back record no attempt, so once the head is dead-lettered it is really tried (here: rejected).
func TestRelayNotAttemptedCostsNoAttempt(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	head, held := newID(), newID()
	var heldTries atomic.Int64
	sink := sinkFunc(func(_ context.Context, batch []outbox.Record) error {
		errs := make([]error, len(batch))
		failedKey := map[string]bool{}
		for i, r := range batch {
			switch {
			case failedKey[r.Key]:
				errs[i] = outbox.NotAttempted(errors.New("held back behind a failed record of its key"))
			case r.ID == head:
				errs[i] = errors.New("503 from the receiver")
				failedKey[r.Key] = true
			case r.ID == held:
				heldTries.Add(1)
				errs[i] = outbox.Permanent(errors.New("422 rejected"))
			}
		}
		return &outbox.BatchError{Errs: errs}
	})
	startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, sink), outbox.WithMaxAttempts(3),
		outbox.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
	if err := outbox.Enqueue(context.Background(), "app", db.Pool,
		outbox.Message{ID: head, Destination: outbox.EventBus, Key: "k"}, outbox.Message{ID: held, Destination: outbox.EventBus, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("both messages should end in the dead letters")
		}
		time.Sleep(20 * time.Millisecond)
	}
	dls, err := outbox.ListDeadLetters(context.Background(), db.Pool, "app", outbox.DeadLetterFilter{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dls {
		switch d.ID {
		case head:
			if d.Attempts != 3 || !strings.Contains(d.Error, "503") {
				t.Errorf("head: attempts %d, error %q; want 3 and the 503", d.Attempts, d.Error)
			}
		case held:
			if d.Attempts != 1 || !strings.Contains(d.Error, "422") || heldTries.Load() != 1 {
				t.Errorf("held-back: attempts %d, error %q, tried %d times; want 1, the 422, 1", d.Attempts, d.Error, heldTries.Load())
			}
		}
	}
}

// TestRelayFillsSinkBatches: while a sink call waits for its acks, the transactions committed
// meanwhile queue up in the lane and go out together in full batches (a lane that could hold only a
// few transactions sent one small batch per linger-bound call: a 4× slower Kafka drain).
func TestRelayFillsSinkBatches(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	var mu sync.Mutex
	var sizes []int
	seen := map[string]bool{}
	committed := make(chan struct{})
	slow := sinkFunc(func(_ context.Context, batch []outbox.Record) error {
		<-committed                       // the first calls wait until every transaction is in the WAL
		time.Sleep(10 * time.Millisecond) // a sink call waiting for its acks
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, len(batch))
		for _, r := range batch {
			seen[r.ID] = true
		}
		return nil
	})
	startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, slow),
		outbox.WithLanes(4), outbox.WithBatchSize(200))
	var ids []string
	for tx := range 40 { // each transaction gives each lane ~25 messages
		msgs := make([]outbox.Message, 100)
		for i := range msgs {
			msgs[i] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("k%d", (tx*100+i)%64)}
			ids = append(ids, msgs[i].ID)
		}
		if err := outbox.Enqueue(context.Background(), "app", db.Pool, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the relay reads them meanwhile
	close(committed)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d of %d", n, len(ids))
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	full := 0
	for _, s := range sizes {
		if s > 200 {
			t.Errorf("a sink call got %d records, WithBatchSize is 200", s)
		}
		if s == 200 {
			full++
		}
	}
	t.Logf("%d sink calls for %d messages: %v", len(sizes), len(ids), sizes)
	if full < 8 {
		t.Errorf("%d sink calls, %d of them full, for 4000 messages over 4 lanes in batches of 200: the lanes did not fill their batches", len(sizes), full)
	}
}
