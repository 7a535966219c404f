package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// execFunc is an outbox.Execer made of a function.
type execFunc func(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error)

func (f execFunc) Exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error) {
	return f(ctx, q, args...)
}

// recording wraps tx and records the SQL text and argument count of each Exec.
func recording(tx outbox.Execer, sqls *[]string, nargs *[]int) outbox.Execer {
	return execFunc(func(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error) {
		*sqls, *nargs = append(*sqls, q), append(*nargs, len(args))
		return tx.Exec(ctx, q, args...)
	})
}

// formMessages returns n messages that cover what a row can hold: explicit and generated ids, NULL and
// non-empty route/key/type, nil, empty and binary payloads (zero bytes, 0xff, quotes, backslashes, one of
// 64 KiB), no, empty and non-empty headers. Payload bytes 1 and 2 are n and the message's index.
func formMessages(n int) []outbox.Message {
	dests := []outbox.Destination{outbox.EventBus, commandQueue, "custom-dest"}
	msgs := make([]outbox.Message, n)
	for i := range msgs {
		m := outbox.Message{Destination: dests[i%len(dests)]}
		if i%2 == 0 {
			m.ID = uuid.NewString()
		}
		if i%3 != 0 {
			m.Route = fmt.Sprintf("route-%d", i)
		}
		if i%4 != 1 {
			m.Key = fmt.Sprintf("ключ-%d 'q' \\ %d", n, i)
		}
		if i%5 != 2 {
			m.Type = "Type\t" + fmt.Sprint(i)
		}
		switch {
		case i%7 == 3:
			m.Payload = nil
		case i%7 == 4:
			m.Payload = []byte{}
		default:
			m.Payload = []byte{0x00, byte(n), byte(i), 0xff, 0x00, '\\', '\'', '"', 'x', 0x00}
			if i == 5 {
				m.Payload = append(m.Payload, bytes.Repeat([]byte{0x00, 0x80, 0x7f}, 64<<10/3)...)
			}
		}
		switch i % 3 {
		case 1:
			m.Headers = map[string]string{}
		case 2:
			m.Headers = map[string]string{"content-type": "application/json", "x-i": fmt.Sprint(i), "empty": "", "q": `"'\`}
		}
		msgs[i] = m
	}
	return msgs
}

// storedRow is a pkg_outbox row as stored, with NULL apart from "".
type storedRow struct {
	id, dest             string
	route, key, typ, hdr *string
	payload              []byte
}

func readStored(t *testing.T, db *pgtest.DB, schema string) []storedRow {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT id::text, destination, route, key, type, payload, headers::text
		FROM `+names.Table(schema, names.OutboxTable)+` ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storedRow, error) {
		var s storedRow
		err := r.Scan(&s.id, &s.dest, &s.route, &s.key, &s.typ, &s.payload, &s.hdr)
		return s, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func str(p *string) string {
	if p == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", *p)
}

const (
	formTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	formTraceState  = "vendor=value"
)

func formTraceContext() context.Context {
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState(formTraceState)
	return trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled, TraceState: ts}))
}

// checkStored compares a stored row with the message it came from, enqueued with or without a span in ctx.
func checkStored(t *testing.T, what string, got storedRow, m outbox.Message, traced bool) {
	t.Helper()
	if m.ID != "" && got.id != m.ID {
		t.Errorf("%s: id %s, want %s", what, got.id, m.ID)
	}
	if u, err := uuid.Parse(got.id); m.ID == "" && (err != nil || u.Version() != 7) {
		t.Errorf("%s: id %s, want a generated UUIDv7", what, got.id)
	}
	if got.dest != string(m.Destination) {
		t.Errorf("%s: destination %q, want %q", what, got.dest, m.Destination)
	}
	for _, f := range []struct {
		name string
		got  *string
		want string
	}{{"route", got.route, m.Route}, {"key", got.key, m.Key}, {"type", got.typ, m.Type}} {
		if (f.want == "") != (f.got == nil) || (f.got != nil && *f.got != f.want) {
			t.Errorf("%s: %s %s, want %q (NULL when empty)", what, f.name, str(f.got), f.want)
		}
	}
	if got.payload == nil || !bytes.Equal(got.payload, m.Payload) {
		t.Errorf("%s: payload %d bytes %x…, want %d bytes %x…", what, len(got.payload), got.payload[:min(len(got.payload), 12)],
			len(m.Payload), m.Payload[:min(len(m.Payload), 12)])
	}
	want := map[string]string{}
	if traced {
		want["traceparent"], want["tracestate"] = formTraceParent, formTraceState
	}
	for k, v := range m.Headers {
		want[k] = v
	}
	if len(want) == 0 {
		if got.hdr != nil {
			t.Errorf("%s: headers %s, want NULL", what, *got.hdr)
		}
		return
	}
	var h map[string]string
	if got.hdr == nil || json.Unmarshal([]byte(*got.hdr), &h) != nil || !maps.Equal(h, want) {
		t.Errorf("%s: headers %s, want %v", what, str(got.hdr), want)
	}
}

// TestEnqueueValuesMatchesUnnest writes the same batches of 1..MaxValuesRows+2 messages through Enqueue (multi-row
// VALUES up to MaxValuesRows, unnest above) and through the unnest form, into two schemas, and compares the rows
// with the messages and with each other: byte for byte, NULL for NULL, seq in message order.
func TestEnqueueValuesMatchesUnnest(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	for _, s := range []string{"vals", "unn"} {
		if err := outbox.Migrate(ctx, db.Pool, s); err != nil {
			t.Fatal(err)
		}
	}
	type sent struct {
		m      outbox.Message
		traced bool
	}
	var all []sent
	for n := 1; n <= outbox.MaxValuesRows+2; n++ {
		msgs := formMessages(n)
		cctx, traced := ctx, n%2 == 1 // odd batches carry a span: trace headers on every message
		if traced {
			cctx = formTraceContext()
		}
		var sqls []string
		var nargs []int
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			rec := recording(tx, &sqls, &nargs)
			if err := (outbox.Enqueuer{Schema: "vals"}).Enqueue(cctx, rec, msgs...); err != nil {
				return err
			}
			return outbox.Enqueuer{Schema: "unn"}.EnqueueUnnest(cctx, rec, msgs...)
		})
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if n <= outbox.MaxValuesRows {
			if !strings.Contains(sqls[0], "VALUES") || strings.Contains(sqls[0], "unnest") || nargs[0] != 7*n || strings.Count(sqls[0], "::uuid") != n {
				t.Errorf("n=%d: Enqueue sent %d args to %q, want a %d-row VALUES", n, nargs[0], sqls[0], n)
			}
		} else if !strings.Contains(sqls[0], "unnest(") || nargs[0] != 7 {
			t.Errorf("n=%d: Enqueue sent %d args to %q, want unnest", n, nargs[0], sqls[0])
		}
		if !strings.Contains(sqls[1], "unnest(") || nargs[1] != 7 {
			t.Errorf("n=%d: EnqueueUnnest sent %d args to %q, want unnest", n, nargs[1], sqls[1])
		}
		for _, m := range msgs {
			all = append(all, sent{m, traced})
		}
	}
	vals, unn := readStored(t, db, "vals"), readStored(t, db, "unn")
	if len(vals) != len(all) || len(unn) != len(all) {
		t.Fatalf("rows: vals %d, unn %d, want %d", len(vals), len(unn), len(all))
	}
	for k, s := range all {
		what := fmt.Sprintf("row %d (key %q)", k, s.m.Key)
		checkStored(t, "VALUES "+what, vals[k], s.m, s.traced)
		checkStored(t, "unnest "+what, unn[k], s.m, s.traced)
		v, u := vals[k], unn[k]
		if (s.m.ID != "" && v.id != u.id) || v.dest != u.dest || str(v.route) != str(u.route) || str(v.key) != str(u.key) ||
			str(v.typ) != str(u.typ) || !bytes.Equal(v.payload, u.payload) || str(v.hdr) != str(u.hdr) {
			t.Errorf("%s: VALUES and unnest rows differ:\n%+v\n%+v", what, v, u)
		}
	}
}

// TestEnqueueFormsDatabaseSQL runs both forms, and the boundary between them, through database/sql.
func TestEnqueueFormsDatabaseSQL(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	sdb := openSQL(t, db)
	var all []outbox.Message
	for _, n := range []int{1, 2, outbox.MaxValuesRows, outbox.MaxValuesRows + 1, 100} {
		msgs := formMessages(n)
		tx, err := sdb.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Enqueue(ctx, schema, outbox.SQLExecer(tx), msgs...); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		all = append(all, msgs...)
	}
	got := readStored(t, db, schema)
	if len(got) != len(all) {
		t.Fatalf("got %d rows, want %d", len(got), len(all))
	}
	for k, m := range all {
		checkStored(t, fmt.Sprintf("row %d (key %q)", k, m.Key), got[k], m, false)
	}
}

// TestEnqueueSQLTextIsBuiltOnce checks that Enqueue sends one SQL text per batch size up to MaxValuesRows and one
// for all larger batches, and reuses the same string (no per-call SQL building), also past the schema cache.
func TestEnqueueSQLTextIsBuiltOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var last string
	exec := execFunc(func(_ context.Context, q string, _ ...any) (pgconn.CommandTag, error) {
		last = q
		return pgconn.NewCommandTag("INSERT 0 1"), nil
	})
	texts := map[string]int{}
	for n := 1; n <= outbox.MaxValuesRows+3; n++ {
		msgs := formMessages(n)
		if err := outbox.Enqueue(ctx, "texts", exec, msgs...); err != nil {
			t.Fatal(err)
		}
		first := last
		if err := outbox.Enqueue(ctx, "texts", exec, msgs...); err != nil {
			t.Fatal(err)
		}
		if last != first || unsafe.StringData(last) != unsafe.StringData(first) {
			t.Errorf("n=%d: the second call built its SQL again", n)
		}
		if !strings.HasPrefix(first, `INSERT INTO "texts"."pkg_outbox" (id, destination`) {
			t.Errorf("n=%d: SQL %q", n, first)
		}
		texts[first]++
	}
	if len(texts) != outbox.MaxValuesRows+1 {
		t.Errorf("%d distinct SQL texts for batches of 1..%d, want %d", len(texts), outbox.MaxValuesRows+3, outbox.MaxValuesRows+1)
	}
	// Many schemas: past the cache's bound each call builds its own text, still for the right table.
	for i := range 100 {
		s := fmt.Sprintf("texts_%d", i)
		if err := outbox.Enqueue(ctx, s, exec, formMessages(3)...); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(last, `INSERT INTO "`+s+`"."pkg_outbox"`) {
			t.Fatalf("schema %s: SQL %q", s, last)
		}
	}
}

// TestEnqueueFormsExecModes writes both forms through pgx connections in each query exec mode (the simple protocol
// is what PgBouncer in transaction mode needs) and checks the rows.
func TestEnqueueFormsExecModes(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg, err := pgx.ParseConfig(db.ConnString)
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var all []outbox.Message
			for _, n := range []int{1, 2, outbox.MaxValuesRows, outbox.MaxValuesRows + 1} {
				msgs := formMessages(n)
				for i := range msgs { // rows of this mode only
					msgs[i].Route = mode.String() + msgs[i].Route
				}
				err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return outbox.Enqueue(ctx, schema, tx, msgs...) })
				if err != nil {
					t.Fatalf("n=%d: %v", n, err)
				}
				all = append(all, msgs...)
			}
			var got []storedRow
			for _, r := range readStored(t, db, schema) {
				if r.route != nil && strings.HasPrefix(*r.route, mode.String()) {
					got = append(got, r)
				}
			}
			if len(got) != len(all) {
				t.Fatalf("got %d rows, want %d", len(got), len(all))
			}
			for k, m := range all {
				checkStored(t, fmt.Sprintf("row %d (key %q)", k, m.Key), got[k], m, false)
			}
		})
	}
}
