// Command pgoutbox-example shows the whole flow against a real PostgreSQL: it migrates the outbox schema,
// starts the relay, enqueues messages inside business transactions (one of them rolled back), prints
// what the relay delivers, and stops. The database comes from DATABASE_URL or PGOUTBOX_TEST_DATABASE_URL
// (`pg=$(scripts/postgres.sh up) && eval "$pg"` sets the latter).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pgoutbox-example:", err)
		os.Exit(1)
	}
}

func run() error {
	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		dsn = os.Getenv("PGOUTBOX_TEST_DATABASE_URL")
	}
	if dsn == "" {
		return errors.New("set DATABASE_URL, or run: eval \"$(scripts/postgres.sh up)\"")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, _ := zap.NewDevelopment()
	defer log.Sync()

	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	const schema = "example"
	if err := outbox.Migrate(ctx, pool, schema); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS example.orders (id int PRIMARY KEY, status text)"); err != nil {
		return err
	}

	var delivered atomic.Int64
	relay, err := outbox.Start(ctx, pool, schema, map[outbox.Destination]outbox.Handler{
		outbox.EventBus: func(ctx context.Context, m outbox.Message) error {
			fmt.Printf("delivered  id=%s key=%s type=%s payload=%s\n", m.ID, m.Key, m.Type, m.Payload)
			delivered.Add(1)
			return nil
		},
	}, outbox.WithLogger(log), outbox.WithInstanceID("example"))
	if err != nil {
		return err
	}

	base := int(time.Now().Unix() % 100000 * 10)
	for i := range 5 {
		id := base + i
		err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO example.orders VALUES ($1, 'placed') ON CONFLICT (id) DO UPDATE SET status = 'placed'", id); err != nil {
				return err
			}
			if err := outbox.Enqueue(ctx, schema, tx, outbox.Message{
				Destination: outbox.EventBus, Key: fmt.Sprintf("order-%d", id), Type: "OrderPlaced",
				Payload: []byte(fmt.Sprintf(`{"order":%d}`, id)),
			}); err != nil {
				return err
			}
			if i == 2 {
				return errors.New("rolled back on purpose")
			}
			return nil
		})
		if err != nil {
			fmt.Printf("rolled back order %d: never delivered\n", id)
		} else {
			fmt.Printf("committed  order %d\n", id)
		}
	}

	deadline := time.Now().Add(30 * time.Second)
	for delivered.Load() < 4 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := relay.Stop(stopCtx); err != nil {
		return err
	}
	fmt.Printf("%d messages delivered, slot confirmed and relay stopped\n", delivered.Load())
	if delivered.Load() < 4 {
		return fmt.Errorf("only %d of 4 committed messages delivered", delivered.Load())
	}
	return nil
}
