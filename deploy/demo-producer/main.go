// Command pgoutbox-demo-producer enqueues demo "OrderPlaced" messages into the outbox in a loop, one
// business transaction at a time, for the docker-compose stack. Settings come from the environment:
//
//	PGOUTBOX_DATABASE_URL      PostgreSQL URL (required)
//	PGOUTBOX_DATABASE_PASSWORD password put into the URL (optional)
//	PRODUCER_SCHEMA            outbox schema (default $PGOUTBOX_SCHEMA, else app)
//	PRODUCER_DESTINATION       destination (default orders)
//	PRODUCER_INTERVAL          pause between transactions (default 1s)
//	PRODUCER_BATCH             messages per transaction (default 3)
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/outbox"
)

func main() {
	if err := run(); err != nil {
		slog.Error("producer failed", "error", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run() error {
	dsn := os.Getenv("PGOUTBOX_DATABASE_URL")
	if dsn == "" {
		return errors.New("PGOUTBOX_DATABASE_URL is required")
	}
	if pw := os.Getenv("PGOUTBOX_DATABASE_PASSWORD"); pw != "" {
		u, err := url.Parse(dsn)
		if err != nil {
			return errors.New("PGOUTBOX_DATABASE_URL is not a URL")
		}
		u.User = url.UserPassword(u.User.Username(), pw)
		dsn = u.String()
	}
	schema := env("PRODUCER_SCHEMA", env("PGOUTBOX_SCHEMA", "app"))
	dest := outbox.Destination(env("PRODUCER_DESTINATION", "orders"))
	interval, err := time.ParseDuration(env("PRODUCER_INTERVAL", "1s"))
	if err != nil {
		return fmt.Errorf("PRODUCER_INTERVAL: %w", err)
	}
	batch, err := strconv.Atoi(env("PRODUCER_BATCH", "3"))
	if err != nil || batch < 1 {
		return errors.New("PRODUCER_BATCH must be a positive integer")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()

	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 1; ; n++ {
		err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
			msgs := make([]outbox.Message, batch)
			for i := range msgs {
				order := (n-1)*batch + i + 1
				msgs[i] = outbox.Message{
					Destination: dest,
					Key:         fmt.Sprintf("customer-%d", order%10),
					Type:        "OrderPlaced",
					Payload:     []byte(fmt.Sprintf(`{"order_id":%d,"placed_at":%q}`, order, time.Now().UTC().Format(time.RFC3339Nano))),
				}
			}
			return outbox.Enqueue(ctx, schema, tx, msgs...)
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			slog.Warn("enqueue failed, retrying", "error", err)
		case n%20 == 0:
			slog.Info("enqueued", "transactions", n, "messages", n*batch)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
