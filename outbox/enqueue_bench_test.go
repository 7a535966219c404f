package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

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

// BenchmarkEnqueueTx is W1 as a go benchmark: `BEGIN; UPDATE one account; Enqueue n × 256 B; COMMIT` on one
// connection. n=0 is the business transaction alone; what Enqueue adds is the difference to it. Run with
// -count so that the sub-benchmarks interleave, and compare medians. Besides the mean (ns/op) each reports the
// median transaction (p50-µs), which preemption by other work on the machine disturbs much less.
func BenchmarkEnqueueTx(b *testing.B) {
	conn := accountsConn(b)
	for _, n := range []int{0, 1, 2, 10, 32, 33} {
		enqueue := outbox.Enqueuer{Schema: "app"}.Enqueue
		if n == 0 {
			enqueue = nil
		}
		b.Run(fmt.Sprintf("msgs=%d", n), func(b *testing.B) { benchAccountTx(b, conn, n, enqueue) })
	}
}

// benchAccountTx runs W1's transaction with n messages written by enqueue (nil: none) and reports
// the median transaction too.
func benchAccountTx(b *testing.B, conn *pgx.Conn, n int, enqueue func(context.Context, outbox.Execer, ...outbox.Message) error) {
	ctx := context.Background()
	payload := make([]byte, 256)
	msgs := make([]outbox.Message, n)
	var lat txDurations
	i := 0
	for b.Loop() {
		i++
		for j := range msgs {
			msgs[j] = outbox.Message{Destination: outbox.EventBus, Key: "acct-" + strconv.Itoa((i+j)%1000), Type: "BalanceChanged", Payload: payload}
		}
		t0 := time.Now()
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + 1 WHERE id = $1", i%1000+1); err != nil {
				return err
			}
			if enqueue == nil {
				return nil
			}
			return enqueue(ctx, tx, msgs...)
		})
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
	}
	lat.report(b)
}

// BenchmarkEnqueueForms runs the W1 transaction with no Enqueue, with the batch written through unnest and
// through multi-row VALUES, side by side on one connection, so that the forms are compared within one run.
// The added cost of a form is its ns/op minus the none ns/op of the same -count round.
func BenchmarkEnqueueForms(b *testing.B) {
	conn := accountsConn(b)
	e := outbox.Enqueuer{Schema: "app"}
	forms := []struct {
		name    string
		enqueue func(context.Context, outbox.Execer, ...outbox.Message) error
	}{
		{"none", nil},
		{"unnest", e.EnqueueUnnest},
		{"values", e.Enqueue},
	}
	for _, n := range []int{1, 10, 32} {
		for _, f := range forms {
			b.Run(fmt.Sprintf("msgs=%d/%s", n, f.name), func(b *testing.B) { benchAccountTx(b, conn, n, f.enqueue) })
		}
	}
}

// BenchmarkEnqueueClient measures Enqueue's own CPU and allocations (validation, ids, arguments, SQL text)
// with an Execer that does nothing.
func BenchmarkEnqueueClient(b *testing.B) {
	ctx := context.Background()
	var exec nopExecer
	payload := make([]byte, 256)
	for _, n := range []int{1, 10, 32, 33} {
		msgs := make([]outbox.Message, n)
		for j := range msgs {
			msgs[j] = outbox.Message{Destination: outbox.EventBus, Key: "acct-" + strconv.Itoa(j), Type: "BalanceChanged", Payload: payload}
		}
		b.Run(fmt.Sprintf("msgs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := outbox.Enqueue(ctx, "app", exec, msgs...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type nopExecer struct{}

func (nopExecer) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, nil
}

// txDurations collects per-transaction durations of one benchmark run.
type txDurations []time.Duration

func (l txDurations) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l[len(l)/2].Nanoseconds())/1e3, "p50-µs")
}

// accountsConn returns a connection to a migrated database with a 1000-row accounts table (W1's
// business table); it is closed when b ends.
func accountsConn(b *testing.B) *pgx.Conn {
	b.Helper()
	db := pgtest.New(b)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		b.Fatal(err)
	}
	db.Exec(b, "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
	db.Exec(b, "INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 1000) g")
	conn, err := pgx.Connect(ctx, db.ConnString)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
