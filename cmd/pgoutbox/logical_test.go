package main_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// TestLogicalMessagesDaemon: with logical_messages: true the daemon delivers the LogicalMessage
// transport's messages with the table's rows, in the order one transaction wrote them; messages that
// are not its own are counted in pgoutbox_logical_messages_ignored_total; replay says that logical
// messages cannot be replayed.
func TestLogicalMessagesDaemon(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	migrate(t, db)
	env := append(baseEnv(db), "PGOUTBOX_LOGICAL_MESSAGES=true")
	d := start(t, "run", env, "--route", "orders=stdout", "--instance-id", "logical")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })

	ctx := context.Background()
	var sent []string
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		for i := range 6 {
			id := uuid.Must(uuid.NewV7()).String()
			sent = append(sent, id)
			m := outbox.Message{ID: id, Destination: "orders", Key: "k", Payload: fmt.Appendf(nil, `{"n":%d}`, i)}
			e := outbox.Enqueuer{Schema: schema}
			if i%2 == 1 {
				e.Transport = outbox.LogicalMessage
			}
			if err := e.Enqueue(ctx, tx, m); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, 'someone-else', 'x'), pg_logical_emit_message(false, 'pgoutbox:`+schema+`', 'y')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d.stdout.waitFor(t, 30*time.Second, "both transports", hasAll(sent))
	if got := ids(allOf(d.stdout)); !slices.Equal(got, sent) {
		t.Errorf("printed %v, want %v (one key, both transports, in the order written)", got, sent)
	}
	_, body := d.waitHTTP("/metrics", 10*time.Second, func(_ int, b string) bool {
		n, _ := strconv.Atoi(metric(b, `pgoutbox_logical_messages_ignored_total{reason="non_transactional"}`))
		return n >= 1
	})
	if n, _ := strconv.Atoi(metric(body, `pgoutbox_logical_messages_ignored_total{reason="other_prefix"}`)); n < 1 {
		t.Errorf("other_prefix not counted:\n%s", body)
	}
	if v := metric(body, `pgoutbox_messages_delivered_total{destination="orders"}`); v != "6" {
		t.Errorf("delivered %q, want 6", v)
	}

	code, out, errs := cli(t, env, "replay", "--id", sent[0], "--id", sent[1])
	if code != 0 || !strings.Contains(out, "replayed 1 message(s)") || !strings.Contains(out, "cannot be replayed") {
		t.Errorf("replay of a row and a logical message = %d %q %q: want the row replayed and the note", code, out, errs)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d", code)
	}
}
