package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"
	"github.com/pressly/goose/v3"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/stdout"
)

// The schema SQL is plain text: put it in a migration, or run it with outbox.Migrate.
func ExampleGetSchemaSQL() {
	q, err := outbox.GetSchemaSQL("app")
	if err != nil {
		log.Fatal(err)
	}
	for _, line := range strings.Split(q, "\n") {
		if strings.HasPrefix(line, "CREATE TABLE") {
			fmt.Println(strings.TrimSuffix(line, " ("))
		}
	}
	// Output:
	// CREATE TABLE IF NOT EXISTS "app".pkg_outbox
	// CREATE TABLE IF NOT EXISTS "app".pkg_outbox_dead_letter
	// CREATE TABLE IF NOT EXISTS "app".pkg_outbox_relay
}

// outboxMigration is how an application puts the outbox schema into its goose migrations.
func outboxMigration(version int64, schema string) *goose.Migration {
	return goose.NewGoMigration(version,
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			q, err := outbox.GetSchemaSQL(schema)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, q)
			return err
		}},
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			q, err := outbox.GetTeardownSQL(schema)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, q)
			return err
		}},
	)
}

// The outbox schema as a goose migration: up creates it, down removes it.
func Example_goose() {
	ctx := context.Background()
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, nil, goose.WithGoMigrations(outboxMigration(1, "app")))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := provider.Up(ctx); err != nil {
		log.Fatal(err)
	}
}

// Enqueue writes the message in the application's own transaction, next to its business write: both
// commit, or neither does.
func ExampleEnqueue() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE orders SET status = 'placed' WHERE id = $1", 42); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, "app", tx, outbox.Message{
			Destination: "orders",    // a handler or sink registered for it delivers the message
			Route:       "orders.v1", // e.g. the Kafka topic, where the destination configures none
			Key:         "order-42",  // messages of one key are delivered in commit order
			Type:        "OrderPlaced",
			Payload:     []byte(`{"id":42}`),
		})
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Queue sends the messages with the business statement in one round trip: the cheapest way to add a
// few messages to a short transaction (through either transport).
func ExampleEnqueuer_Queue() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	enq := outbox.Enqueuer{Schema: "app", Transport: outbox.LogicalMessage}
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{}, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue("UPDATE orders SET status = 'placed' WHERE id = $1", 42)
		if err := enq.Queue(ctx, b, outbox.Message{Destination: "orders", Key: "order-42", Payload: []byte(`{"id":42}`)}); err != nil {
			return err // an invalid message: nothing was sent
		}
		return tx.SendBatch(ctx, b).Close() // the first error of any statement of the batch
	})
	if err != nil {
		log.Fatal(err)
	}
}

// With database/sql (and the pgx driver), SQLExecer adapts the transaction.
func ExampleSQLExecer() {
	ctx := context.Background()
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback() // a no-op after Commit
	if _, err := tx.ExecContext(ctx, "UPDATE orders SET status = 'placed' WHERE id = $1", 42); err != nil {
		log.Fatal(err)
	}
	msg := outbox.Message{Destination: "orders", Key: "order-42", Type: "OrderPlaced", Payload: []byte(`{"id":42}`)}
	if err := outbox.Enqueue(ctx, "app", outbox.SQLExecer(tx), msg); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
}

// Start runs the relay in the application's process and delivers each message to the handler of its
// destination. Stop drains what is in flight and confirms the final position.
func ExampleStart() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	relay, err := outbox.Start(ctx, pool, "app", map[outbox.Destination]outbox.Handler{
		"orders": func(ctx context.Context, m outbox.Message) error {
			// nil acks the message. An error retries it (later messages of its key wait behind it),
			// until the last attempt dead-letters it; outbox.Permanent(err) dead-letters it at once.
			log.Printf("order event %s %s: %s", m.Type, m.Key, m.Payload)
			return nil
		},
	}, outbox.WithMaxAttempts(10), outbox.WithRetryBackoff(100*time.Millisecond, 30*time.Second))
	if err != nil {
		log.Fatal(err) // slot, schema and publication problems show here
	}

	sig, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	select {
	case <-sig.Done():
	case <-waitDone(relay):
		log.Fatal(relay.Wait()) // a fatal failure: slot lost, publication dropped
	}
	drain, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := relay.Stop(drain); err != nil {
		log.Printf("stop: %v (what was not confirmed is delivered again on the next start)", err)
	}
}

func waitDone(r *outbox.Relay) <-chan struct{} {
	done := make(chan struct{})
	go func() { _ = r.Wait(); close(done) }()
	return done
}

// WithSink routes a destination to a Sink instead of a handler: here one destination to the stdout
// sink and one to a custom sink (see the Sink example).
func ExampleWithSink() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	relay, err := outbox.Start(ctx, pool, "app", nil,
		outbox.WithSink("audit", stdout.New(os.Stdout)),
		outbox.WithSink("orders", &queueSink{queue: &fakeQueue{maxBytes: 1 << 20}}),
		outbox.WithBatchSize(100), // the most records one Send gets
	)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = relay.Stop(ctx) }()
}

// fakeQueue stands in for a message queue: it takes payloads up to maxBytes, is throttled for
// payloads that say "busy", and refuses everything while down.
type fakeQueue struct {
	maxBytes int
	down     bool
	got      []string
}

var errThrottled = errors.New("queue: throttled")

func (q *fakeQueue) put(r outbox.Record) error {
	if string(r.Payload) == "busy" {
		return errThrottled
	}
	q.got = append(q.got, r.Key+":"+string(r.Payload))
	return nil
}

// queueSink is a custom Sink: the relay calls Send with a batch of records in commit order, and Send
// returns only once each record is durable or has failed.
type queueSink struct{ queue *fakeQueue }

func (s *queueSink) Send(ctx context.Context, batch []outbox.Record) error {
	if s.queue.down {
		// Nothing can go now: the relay retries the whole batch, counts no attempt, dead-letters nothing.
		return outbox.Unavailable(errors.New("queue: connection refused"))
	}
	errs := make([]error, len(batch))
	failed := map[string]bool{} // keys with a retryable failure in this Send
	ok := true
	for i, r := range batch {
		switch {
		case failed[r.Key]:
			// Keep the order per key: a later record of a key that failed is not tried now.
			errs[i] = outbox.NotAttempted(fmt.Errorf("record %s waits behind its key", r.ID))
		case len(r.Payload) > s.queue.maxBytes:
			// Retrying cannot help: dead-letter it now (later records of its key still go).
			errs[i] = outbox.Permanent(fmt.Errorf("payload of %d bytes, the queue takes %d", len(r.Payload), s.queue.maxBytes))
		default:
			if err := s.queue.put(r); err != nil {
				// Retried with backoff, and not before the wait the queue asked for.
				errs[i] = outbox.RetryAfter(err, 2*time.Second)
				failed[r.Key] = true
			}
		}
		ok = ok && errs[i] == nil
	}
	if ok {
		return nil
	}
	return &outbox.BatchError{Errs: errs}
}

// A custom Sink reports per-record results in a BatchError; the relay reads each one's class.
func ExampleSink() {
	q := &fakeQueue{maxBytes: 8}
	var s outbox.Sink = &queueSink{queue: q}
	rec := func(id, key, payload string) outbox.Record {
		return outbox.Record{Message: outbox.Message{ID: id, Destination: "orders", Key: key, Payload: []byte(payload)}, Attempt: 1}
	}
	batch := []outbox.Record{
		rec("1", "a", "hello"),
		rec("2", "b", "far too large"),
		rec("3", "c", "busy"),
		rec("4", "c", "later"),
		rec("5", "a", "world"),
	}
	err := s.Send(context.Background(), batch)
	var be *outbox.BatchError
	if errors.As(err, &be) {
		for i, err := range be.Errs {
			switch {
			case err == nil:
				fmt.Printf("%s: delivered\n", batch[i].ID)
			case outbox.IsPermanent(err):
				fmt.Printf("%s: dead-lettered now: %v\n", batch[i].ID, err)
			case errors.Is(err, outbox.ErrNotAttempted):
				fmt.Printf("%s: not attempted, retried without counting an attempt\n", batch[i].ID)
			default:
				fmt.Printf("%s: retried after %s, its key parked: %v\n", batch[i].ID, outbox.RetryAfterOf(err), err)
			}
		}
	}
	fmt.Println("queue holds", q.got)

	q.down = true
	err = s.Send(context.Background(), batch[:1])
	fmt.Println("queue down, unavailable:", outbox.IsUnavailable(err))
	// Output:
	// 1: delivered
	// 2: dead-lettered now: payload of 13 bytes, the queue takes 8
	// 3: retried after 2s, its key parked: queue: throttled
	// 4: not attempted, retried without counting an attempt
	// 5: delivered
	// queue holds [a:hello a:world]
	// queue down, unavailable: true
}
