package outbox_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// BenchmarkBusinessTx compares one business UPDATE per transaction alone and with one Enqueue;
// the difference in ns/op is what the outbox adds to a transaction.
func BenchmarkBusinessTx(b *testing.B) {
	db := pgtest.New(b)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		b.Fatal(err)
	}
	db.Exec(b, "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
	db.Exec(b, "INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 1000) g")
	payload := make([]byte, 256)
	for _, withOutbox := range []bool{false, true} {
		name := "update"
		if withOutbox {
			name = "update+enqueue1"
		}
		b.Run(name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + 1 WHERE id = $1", i%1000+1); err != nil {
						return err
					}
					if !withOutbox {
						return nil
					}
					return outbox.Enqueue(ctx, "app", tx, outbox.Message{Destination: outbox.EventBus, Key: fmt.Sprint(i % 1000), Payload: payload})
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEnqueueBatch measures batch Enqueue throughput of 256-byte messages (msgs/s metric).
func BenchmarkEnqueueBatch(b *testing.B) {
	db := pgtest.New(b)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{100, 1000} {
		msgs := make([]outbox.Message, n)
		for i := range msgs {
			msgs[i] = outbox.Message{Destination: outbox.EventBus, Key: fmt.Sprint(i % 64), Type: "Bench", Payload: make([]byte, 256)}
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if err := outbox.Enqueue(ctx, "app", db.Pool, msgs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
