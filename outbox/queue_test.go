package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// Queue puts the messages into the caller's batch: they are written, through either transport, with
// the batch's other statements, commit and roll back with them, and reach the relay in order per key.
func TestQueueTravelsWithTheBatch(t *testing.T) {
	t.Parallel()
	db := relayDB(t, false)
	ctx := context.Background()
	c := newCollector()
	startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithLogicalMessages(), outbox.WithSink(outbox.EventBus, c))
	if _, err := db.Pool.Exec(ctx, "CREATE TABLE public.accounts (id int PRIMARY KEY, balance int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	sendBatch := func(commit bool, msgs ...outbox.Message) {
		t.Helper()
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		b := &pgx.Batch{}
		b.Queue("INSERT INTO public.accounts VALUES ($1, 0)", msgs[0].Payload[0])
		if err := (outbox.Enqueuer{Schema: schema}).Queue(ctx, b, msgs[0]); err != nil {
			t.Fatal(err)
		}
		if err := logicalEnq.Queue(ctx, b, msgs[1:]...); err != nil {
			t.Fatal(err)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	kept := []outbox.Message{msg("k", 1), msg("k", 2), msg("k", 3)}
	gone := []outbox.Message{msg("k", 4), msg("k", 5)}
	sendBatch(false, gone...)
	sendBatch(true, kept...)
	c.waitFor(t, 30*time.Second, ids(kept...)...)
	checkOrder(t, c.key("k"), kept)
	for _, m := range gone {
		if c.has(m.ID) {
			t.Errorf("message %s of a rolled-back batch was delivered", m.ID)
		}
	}
	var n int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM public.accounts").Scan(&n); err != nil || n != 1 {
		t.Errorf("accounts = %d (%v), want the committed batch's 1 row", n, err)
	}
}

// An invalid message queues nothing; a database error comes back through the batch's results.
func TestQueueErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := &pgx.Batch{}
	err := outbox.Enqueuer{Schema: schema}.Queue(ctx, b, outbox.Message{Destination: outbox.EventBus}, outbox.Message{})
	if !errors.Is(err, outbox.ErrInvalidMessage) || b.Len() != 0 {
		t.Errorf("Queue(invalid) = %v with %d statements queued, want ErrInvalidMessage and none", err, b.Len())
	}
	if err := (outbox.Enqueuer{Schema: schema}).Queue(ctx, nil, msg("k", 1)); !errors.Is(err, outbox.ErrInvalidMessage) {
		t.Errorf("Queue(nil batch) = %v, want ErrInvalidMessage", err)
	}
	if err := (outbox.Enqueuer{Schema: "bad name"}).Queue(ctx, b, msg("k", 1)); err == nil || b.Len() != 0 {
		t.Errorf("Queue(bad schema) = %v with %d statements queued", err, b.Len())
	}
	db := pgtest.New(t) // not migrated
	if err := (outbox.Enqueuer{Schema: schema}).Queue(ctx, b, msg("k", 1)); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	if err == nil {
		t.Error("a batch writing into an outbox that does not exist succeeded")
	}
}
