package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

const schema = "app"

func migrated(t *testing.T) *pgtest.DB {
	t.Helper()
	db := pgtest.New(t)
	if err := outbox.Migrate(context.Background(), db.Pool, schema); err != nil {
		t.Fatal(err)
	}
	return db
}

type row struct {
	id, dest, route, key, typ string
	payload                   []byte
	headers                   map[string]string
}

func readRows(t *testing.T, db *pgtest.DB) []row {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT id::text, destination, coalesce(route,''), coalesce(key,''),
		coalesce(type,''), payload, headers FROM app.pkg_outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var out []row
	for rows.Next() {
		var r row
		var h []byte
		if err := rows.Scan(&r.id, &r.dest, &r.route, &r.key, &r.typ, &r.payload, &h); err != nil {
			t.Fatal(err)
		}
		if h != nil {
			if err := json.Unmarshal(h, &r.headers); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEnqueueCommitIsByteExact(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	// Payload bytes jsonb would rewrite (key order, spaces) and bytes that are not UTF-8 at all.
	jsonPayload := []byte(`{"b": 1,   "a":[2, 1]}`)
	binPayload := []byte{0x00, 0xff, 0xfe, 0x0a, 0x00}
	id := uuid.NewString()
	msgs := []outbox.Message{
		{ID: id, Destination: outbox.EventBus, Route: "orders", Key: "order-1", Type: "OrderPlaced", Payload: jsonPayload,
			Headers: map[string]string{"content-type": "application/json", "x-tenant": "t1"}},
		{Destination: "custom-dest", Payload: binPayload},
		{Destination: mailman},
	}
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "CREATE TABLE business (id int)"); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, schema, tx, msgs...)
	})
	if err != nil {
		t.Fatal(err)
	}
	got := readRows(t, db)
	if len(got) != 3 {
		t.Fatalf("got %d rows, want 3", len(got))
	}
	if got[0].id != id || got[0].dest != "event_bus" || got[0].route != "orders" || got[0].key != "order-1" || got[0].typ != "OrderPlaced" {
		t.Errorf("row 0 = %+v", got[0])
	}
	if !bytes.Equal(got[0].payload, jsonPayload) || !bytes.Equal(got[1].payload, binPayload) || len(got[2].payload) != 0 {
		t.Errorf("payloads not byte-exact: %q %x %x", got[0].payload, got[1].payload, got[2].payload)
	}
	if got[0].headers["content-type"] != "application/json" || got[0].headers["x-tenant"] != "t1" || got[1].headers != nil {
		t.Errorf("headers = %v / %v", got[0].headers, got[1].headers)
	}
	for i, r := range got[1:] {
		u, err := uuid.Parse(r.id)
		if err != nil || u.Version() != 7 {
			t.Errorf("row %d id %q: want a generated UUIDv7 (err %v)", i+1, r.id, err)
		}
	}
	if msgs[1].ID != "" {
		t.Error("Enqueue modified the caller's message")
	}
}

func TestEnqueueRollbackAndSavepoint(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	errRollback := errors.New("rollback")
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if err := outbox.Enqueue(ctx, schema, tx, outbox.Message{Destination: outbox.EventBus, Key: "rolled-back"}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if err := outbox.Enqueue(ctx, schema, tx, outbox.Message{Destination: outbox.EventBus, Key: "kept-1"}); err != nil {
			return err
		}
		sp, err := tx.Begin(ctx) // SAVEPOINT
		if err != nil {
			return err
		}
		if err := outbox.Enqueue(ctx, schema, sp, outbox.Message{Destination: outbox.EventBus, Key: "savepoint-rolled-back"}); err != nil {
			return err
		}
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, schema, tx, outbox.Message{Destination: outbox.EventBus, Key: "kept-2"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range readRows(t, db) {
		keys = append(keys, r.key)
	}
	if strings.Join(keys, ",") != "kept-1,kept-2" {
		t.Fatalf("keys = %v, want [kept-1 kept-2]", keys)
	}
}

func TestEnqueueTenThousandInOneCall(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	msgs := make([]outbox.Message, 10_000)
	for i := range msgs {
		msgs[i] = outbox.Message{Destination: outbox.EventBus, Key: fmt.Sprintf("k%d", i%100), Payload: []byte(fmt.Sprintf(`{"n":%d}`, i))}
	}
	if err := outbox.Enqueue(ctx, schema, db.Pool, msgs...); err != nil {
		t.Fatal(err)
	}
	got := readRows(t, db)
	if len(got) != len(msgs) {
		t.Fatalf("got %d rows, want %d", len(got), len(msgs))
	}
	for i, r := range got { // seq order follows the call's order
		if want := fmt.Sprintf(`{"n":%d}`, i); string(r.payload) != want {
			t.Fatalf("row %d payload %q, want %q", i, r.payload, want)
		}
	}
}

func TestEnqueueConcurrent(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	const workers, perWorker = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					return outbox.Enqueue(ctx, schema, tx,
						outbox.Message{Destination: outbox.EventBus, Key: fmt.Sprintf("w%d", w), Payload: []byte(fmt.Sprint(i))},
						outbox.Message{Destination: commandQueue, Key: fmt.Sprintf("w%d", w), Payload: []byte(fmt.Sprint(i))})
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := db.QueryInt(t, "SELECT count(DISTINCT id) FROM app.pkg_outbox"); n != workers*perWorker*2 {
		t.Fatalf("distinct ids = %d, want %d", n, workers*perWorker*2)
	}
}

func TestEnqueueDatabaseSQL(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	sdb := openSQL(t, db)
	tx, err := sdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Enqueue(ctx, schema, outbox.SQLExecer(tx), outbox.Message{Destination: outbox.EventBus, Key: "sql", Payload: []byte{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	tx, _ = sdb.BeginTx(ctx, nil)
	if err := outbox.Enqueue(ctx, schema, outbox.SQLExecer(tx), outbox.Message{Destination: outbox.EventBus, Key: "sql-rolled-back"}); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback()
	got := readRows(t, db)
	if len(got) != 1 || got[0].key != "sql" || !bytes.Equal(got[0].payload, []byte{1, 2, 3}) {
		t.Fatalf("rows = %+v", got)
	}
}

func TestEnqueueTraceContext(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("vendor=value")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled, TraceState: ts})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if err := outbox.Enqueue(ctx, schema, db.Pool, outbox.Message{Destination: outbox.EventBus, Headers: map[string]string{"a": "b"}}); err != nil {
		t.Fatal(err)
	}
	got := readRows(t, db)[0].headers
	if got["traceparent"] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" || got["tracestate"] != "vendor=value" || got["a"] != "b" {
		t.Fatalf("headers = %v", got)
	}
}

func TestEnqueueBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	ok := outbox.Message{Destination: outbox.EventBus, Payload: []byte("fine")}
	cases := []struct {
		name    string
		schema  string
		max     int
		msgs    []outbox.Message
		wantErr error
		wantMsg []string
	}{
		{"empty destination", schema, 0, []outbox.Message{ok, {Payload: []byte("x")}}, outbox.ErrInvalidMessage, []string{"msgs[1].Destination", "empty"}},
		{"id not a uuid", schema, 0, []outbox.Message{{ID: "order-42", Destination: outbox.EventBus}}, outbox.ErrInvalidMessage, []string{"msgs[0].ID", "order-42", "not a UUID"}},
		{"payload over the limit", schema, 10, []outbox.Message{ok, {Destination: outbox.EventBus, Payload: make([]byte, 11)}}, outbox.ErrPayloadTooLarge, []string{"msgs[1].Payload", "11 bytes", "limit is 10"}},
		{"NUL in key", schema, 0, []outbox.Message{{Destination: outbox.EventBus, Key: "a\x00b"}}, outbox.ErrInvalidMessage, []string{"msgs[0].Key", "NUL"}},
		{"invalid UTF-8 header", schema, 0, []outbox.Message{{Destination: outbox.EventBus, Headers: map[string]string{"h": "\xff"}}}, outbox.ErrInvalidMessage, []string{"msgs[0].Headers", "UTF-8"}},
		{"empty schema", "", 0, []outbox.Message{ok}, outbox.ErrInvalidSchema, []string{"empty"}},
		{"injection schema", "a;drop table x", 0, []outbox.Message{ok}, outbox.ErrInvalidSchema, []string{`"a;drop table x"`}},
		{"long schema", strings.Repeat("s", 55), 0, []outbox.Message{ok}, outbox.ErrInvalidSchema, []string{"55 bytes", "limit is 54"}},
		{"reserved schema", "pg_outbox", 0, []outbox.Message{ok}, outbox.ErrInvalidSchema, []string{"pg_"}},
		{"schema not migrated", "nowhere", 0, []outbox.Message{ok}, outbox.ErrNotMigrated, []string{"outbox.Migrate", `"nowhere"."pkg_outbox"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := outbox.Enqueuer{Schema: tc.schema, MaxPayloadBytes: tc.max}.Enqueue(ctx, db.Pool, tc.msgs...)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			for _, s := range tc.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	if n := db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox"); n != 0 {
		t.Fatalf("bad input wrote %d rows", n)
	}
}

func TestSchemaIsIdempotentAndTearsDown(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	for range 2 {
		if err := outbox.Migrate(ctx, db.Pool, "Mixed_Case"); err != nil {
			t.Fatal(err)
		}
	}
	// Inside a migration tool's transaction, twice.
	q, err := outbox.GetSchemaSQL("Mixed_Case")
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, q); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, q)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Enqueue(ctx, "Mixed_Case", db.Pool, outbox.Message{Destination: outbox.EventBus}); err != nil {
		t.Fatal(err)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pgoutbox_Mixed_Case'
		AND schemaname = 'Mixed_Case' AND tablename = 'pkg_outbox'`); n != 1 {
		t.Fatalf("publication covers %d outbox tables, want 1", n)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_publication WHERE pubname = 'pgoutbox_Mixed_Case'
		AND pubinsert AND NOT pubupdate AND NOT pubdelete AND NOT pubtruncate`); n != 1 {
		t.Fatal("publication must publish inserts only")
	}
	for range 2 {
		q, err := outbox.GetTeardownSQL("Mixed_Case")
		if err != nil {
			t.Fatal(err)
		}
		db.Exec(t, q)
	}
	if n := db.QueryInt(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'Mixed_Case'`); n != 0 {
		t.Fatalf("%d tables left after teardown", n)
	}
	if err := outbox.Migrate(ctx, db.Pool, "Mixed_Case"); err != nil {
		t.Fatalf("migrate after teardown: %v", err)
	}
}

// openSQL opens db through database/sql (the pgx stdlib driver); it is closed when t ends.
func openSQL(t *testing.T, db *pgtest.DB) *sql.DB {
	t.Helper()
	sdb, err := sql.Open("pgx", db.ConnString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sdb.Close() })
	return sdb
}
