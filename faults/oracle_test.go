//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/stdout"
)

// The ledger, the traffic generator, the I1–I5 check and the I4 watcher are internal/oracle's; the
// topic watcher is internal/oracle/topic's. What is left here is the faults suite's glue.

func newID() string { return oracle.NewID() }

// deadLetters returns the dead-letter table: id → error.
func deadLetters(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dead, err := oracle.New(pool, "app").DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return dead
}

// marker commits one message on its own key and returns its id: a probe for "is the relay delivering
// what commits now". It retries while the database is unavailable (up to a minute).
func marker(t *testing.T, l *oracle.Ledger, key string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		m := oracle.NewMessage(key, 0, 0)
		m.Type = "Marker"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := l.Commit(ctx, []outbox.Message{m}, nil, false)
		cancel()
		if err == nil {
			return m.ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("commit marker: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stdoutDeliveries parses the JSON lines of the given daemons' stdout, in run order.
func stdoutDeliveries(t *testing.T, ds ...*daemon) []oracle.Delivery {
	t.Helper()
	var out []oracle.Delivery
	for _, d := range ds {
		for _, line := range d.stdout.lines() {
			var l stdout.Line
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("pgoutbox %s printed a line that is not a message: %q", d.name, line)
			}
			p := []byte(nil)
			if l.Payload != nil {
				p = []byte(*l.Payload)
			} else {
				p = l.PayloadBase64
			}
			out = append(out, oracle.Delivery{ID: l.ID, Key: l.Key, Payload: p, Pos: fmt.Sprintf("%s stdout line %d", d.name, len(out))})
		}
	}
	return out
}

// stdoutSource reads what the given daemons printed so far.
func stdoutSource(t *testing.T, ds ...*daemon) oracle.Source {
	return func(context.Context) ([]oracle.Delivery, error) { return stdoutDeliveries(t, ds...), nil }
}
