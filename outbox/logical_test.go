package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgoutbox/pgoutbox/internal/envelope"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

var logicalEnq = outbox.Enqueuer{Schema: schema, Transport: outbox.LogicalMessage}

// collector is a Sink keeping every record it got, by key, in delivery order.
type collector struct {
	mu    sync.Mutex
	byKey map[string][]outbox.Record
	ids   map[string]int
}

func newCollector() *collector {
	return &collector{byKey: map[string][]outbox.Record{}, ids: map[string]int{}}
}

func (c *collector) Send(_ context.Context, batch []outbox.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range batch {
		r.Payload = bytes.Clone(r.Payload)
		c.byKey[r.Key] = append(c.byKey[r.Key], r)
		c.ids[r.ID]++
	}
	return nil
}

func (c *collector) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids[id] > 0
}

func (c *collector) key(k string) []outbox.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]outbox.Record(nil), c.byKey[k]...)
}

// waitFor waits until every id in ids was delivered.
func (c *collector) waitFor(t *testing.T, timeout time.Duration, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, id := range ids {
		for !c.has(id) {
			if time.Now().After(deadline) {
				t.Fatalf("message %s not delivered within %s", id, timeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func msg(key string, i int) outbox.Message {
	return outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: key, Type: "T", Payload: fmt.Appendf(nil, "%s-%d", key, i)}
}

func ids(msgs ...outbox.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

func commitTx(t *testing.T, db *pgtest.DB, f func(tx pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), db.Pool, f); err != nil {
		t.Fatal(err)
	}
}

// Both transports in one transaction reach the sink in the order they were written, per key; what a
// rolled-back transaction or savepoint wrote never does; other prefixes and non-transactional messages
// are ignored and counted; pgx and database/sql both work; a 1,000-message Enqueue keeps its order.
func TestLogicalMessagesWithRows(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, streaming bool) {
		db := relayDB(t, streaming)
		ctx := context.Background()
		c := newCollector()
		r := startRelay(t, db, nil, withStreaming(t, streaming, outbox.WithSlotName(slotName()), outbox.WithLogicalMessages(),
			outbox.WithSink(outbox.EventBus, c))...)

		// One transaction, both transports, interleaved on key k.
		k := []outbox.Message{msg("k", 0), msg("k", 1), msg("k", 2), msg("k", 3), msg("k2", 4)}
		k[1].Route, k[1].Headers, k[1].Payload = "orders.v1", map[string]string{"x-a": "1", "x-b": ""}, []byte{0, 0xff, 1}
		traced := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled}))
		commitTx(t, db, func(tx pgx.Tx) error {
			if err := outbox.Enqueue(ctx, schema, tx, k[0]); err != nil {
				return err
			}
			if err := logicalEnq.Enqueue(traced, tx, k[1]); err != nil {
				return err
			}
			if err := outbox.Enqueue(ctx, schema, tx, k[2]); err != nil {
				return err
			}
			return logicalEnq.Enqueue(ctx, tx, k[3], k[4])
		})
		// Rolled back: the transaction, and a savepoint.
		gone := []outbox.Message{msg("k", 90), msg("k", 91)}
		if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			if err := logicalEnq.Enqueue(ctx, tx, gone[0]); err != nil {
				return err
			}
			return errors.New("roll back")
		}); err == nil {
			t.Fatal("no rollback")
		}
		after := msg("k", 5)
		commitTx(t, db, func(tx pgx.Tx) error {
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if err := logicalEnq.Enqueue(ctx, sp, gone[1]); err != nil {
				return err
			}
			if err := sp.Rollback(ctx); err != nil {
				return err
			}
			return logicalEnq.Enqueue(ctx, tx, after)
		})
		// Not ours: another prefix, and a non-transactional message with our prefix.
		db.Exec(t, `SELECT pg_logical_emit_message(true, 'other', 'x'), pg_logical_emit_message(false, 'pgoutbox:app', 'y')`)
		// database/sql: one and two messages, next to a row.
		viaSQL := []outbox.Message{msg("s", 0), msg("s", 1), msg("s", 2), msg("s", 3)}
		sdb := openSQL(t, db)
		stx, err := sdb.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, err := range []error{
			logicalEnq.Enqueue(ctx, outbox.SQLExecer(stx), viaSQL[0]),
			outbox.Enqueue(ctx, schema, outbox.SQLExecer(stx), viaSQL[1]),
			logicalEnq.Enqueue(ctx, outbox.SQLExecer(stx), viaSQL[2:]...),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := stx.Commit(); err != nil {
			t.Fatal(err)
		}
		// 1,000 messages in one Enqueue (streamed in chunks with streaming on).
		batch := make([]outbox.Message, 1000)
		for i := range batch {
			batch[i] = msg("batch", i)
		}
		commitTx(t, db, func(tx pgx.Tx) error { return logicalEnq.Enqueue(ctx, tx, batch...) })

		c.waitFor(t, 60*time.Second, ids(append(append(append(k, after), viaSQL...), batch...)...)...)
		checkOrder(t, c.key("k"), append(k[:4:4], after))
		checkOrder(t, c.key("s"), viaSQL)
		checkOrder(t, c.key("batch"), batch)
		for _, m := range gone {
			if c.has(m.ID) {
				t.Errorf("message %s of a rolled-back transaction or savepoint was delivered", m.Payload)
			}
		}
		got := c.key("k")
		if got[1].Route != "orders.v1" || !bytes.Equal(got[1].Payload, []byte{0, 0xff, 1}) || got[1].Type != "T" ||
			got[1].Headers["x-a"] != "1" || got[1].Headers["x-b"] != "" ||
			got[1].Headers["traceparent"] != "00-01020300000000000000000000000000-0405000000000000-01" {
			t.Errorf("logical record %+v", got[1])
		}
		if got[0].CommitLSN != got[1].CommitLSN || got[1].CommitLSN != got[3].CommitLSN || got[1].CommitLSN == 0 {
			t.Errorf("commit LSNs %s %s %s: one transaction", got[0].CommitLSN, got[1].CommitLSN, got[3].CommitLSN)
		}
		if got[1].Seq <= 0 || got[3].Seq <= got[1].Seq || got[1].CreatedAt.IsZero() {
			t.Errorf("logical Seq %d then %d (want increasing WAL positions), CreatedAt %s", got[1].Seq, got[3].Seq, got[1].CreatedAt)
		}
		if n := db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox"); n != 3 {
			t.Errorf("%d rows in pkg_outbox, want the 3 of the Table transport", n)
		}
		st := r.Stats()
		if st.IgnoredMessages.OtherPrefix < 1 || st.IgnoredMessages.NonTransactional < 1 || st.DeadLettered != 0 {
			t.Errorf("stats %+v: want the other prefix and the non-transactional message counted, nothing dead-lettered", st)
		}
	})
}

func checkOrder(t *testing.T, got []outbox.Record, want []outbox.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records of key %q, want %d", len(got), want[0].Key, len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("key %q position %d: %s (%s), want %s (%s)", want[0].Key, i, got[i].ID, got[i].Payload, want[i].ID, want[i].Payload)
		}
	}
}

// An envelope under the schema's prefix that cannot be read is dead-lettered with the reason and what
// could be recovered; the relay goes on.
func TestLogicalMalformedEnvelopeIsDeadLettered(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	c := newCollector()
	r := startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithLogicalMessages(), outbox.WithSink(outbox.EventBus, c))
	good := envelope.Envelope{ID: [16]byte{1, 2, 3}, Destination: string(outbox.EventBus), Key: "m", Payload: []byte("ok"), CreatedAt: time.Now()}
	valid := envelope.Append(nil, &good)
	long := good
	long.ID, long.Destination = [16]byte{4, 5, 6}, strings.Repeat("d", 300)
	cases := map[string][]byte{
		"version 2":       append([]byte{2}, valid[1:]...),
		"truncated":       valid[:len(valid)-1],
		"oversized field": envelope.Append(nil, &long),
	}
	for _, b := range cases {
		if _, err := db.Pool.Exec(context.Background(), `SELECT pg_logical_emit_message(true, 'pgoutbox:app', $1::bytea)`, b); err != nil {
			t.Fatal(err)
		}
	}
	next := msg("m", 1)
	commitTx(t, db, func(tx pgx.Tx) error { return logicalEnq.Enqueue(context.Background(), tx, next) })
	c.waitFor(t, 30*time.Second, next.ID)
	dls, err := outbox.ListDeadLetters(context.Background(), db.Pool, schema, outbox.DeadLetterFilter{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 3 || r.Stats().DeadLettered != 3 {
		t.Fatalf("%d dead letters (stats: %d), want 3", len(dls), r.Stats().DeadLettered)
	}
	want := map[string]string{"version 2": "version is 2", "truncated": "payload is 2 bytes but only 1 remain", "oversized field": "destination is 300 bytes, the limit is 255"}
	for _, d := range dls {
		var name string
		for n, b := range cases {
			if bytes.Equal(d.Payload, b) {
				name = n
			}
		}
		if name == "" || !strings.Contains(d.Error, want[name]) || !strings.Contains(d.Error, "malformed") {
			t.Errorf("dead letter %q (payload %x): want the whole envelope as payload and the reason", d.Error, d.Payload)
			continue
		}
		switch name {
		case "version 2":
			if d.Destination != "pgoutbox.malformed-envelope" || d.ID == "" || d.Seq <= 0 {
				t.Errorf("%s: %+v", name, d)
			}
		case "truncated":
			if d.Destination != outbox.EventBus || d.Key != "m" || d.ID != "01020300-0000-0000-0000-000000000000" {
				t.Errorf("%s: recovered %+v", name, d.Message)
			}
		}
	}
	if c.has("01020300-0000-0000-0000-000000000000") || c.has("04050600-0000-0000-0000-000000000000") {
		t.Error("a malformed envelope was delivered")
	}
}

// A message in a savepoint of a streamed transaction that is rolled back after PostgreSQL streamed it
// arrives anyway (pgoutput tags it with the top-level xid): the relay dead-letters it, never
// delivers it, and delivers the transaction's other messages.
func TestLogicalMessageInStreamedRolledBackSavepoint(t *testing.T) {
	t.Parallel()
	db := relayDB(t, true)
	c := newCollector()
	startRelay(t, db, nil, withStreaming(t, true, outbox.WithSlotName(slotName()), outbox.WithLogicalMessages(), outbox.WithSink(outbox.EventBus, c))...)
	ctx := context.Background()
	rows := func(key string, n int) []outbox.Message {
		out := make([]outbox.Message, n)
		for i := range out {
			out[i] = msg(key, i)
			out[i].Payload = bytes.Repeat([]byte{'x'}, 200)
		}
		return out
	}
	before, inSP, after := msg("m", 0), msg("m", 1), msg("m", 2)
	last := rows("r", 10)
	commitTx(t, db, func(tx pgx.Tx) error {
		if err := logicalEnq.Enqueue(ctx, tx, before); err != nil {
			return err
		}
		if err := outbox.Enqueue(ctx, schema, tx, rows("p", 1000)...); err != nil {
			return err
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if err := logicalEnq.Enqueue(ctx, sp, inSP); err != nil {
			return err
		}
		if err := outbox.Enqueue(ctx, schema, sp, rows("sp", 1000)...); err != nil {
			return err
		}
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		if err := logicalEnq.Enqueue(ctx, tx, after); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, schema, tx, last...)
	})
	c.waitFor(t, 60*time.Second, append(ids(before, after), ids(last...)...)...)
	if c.has(inSP.ID) || len(c.key("sp")) != 0 {
		t.Fatal("a message of the rolled-back savepoint was delivered")
	}
	dls, err := outbox.ListDeadLetters(ctx, db.Pool, schema, outbox.DeadLetterFilter{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].ID != inSP.ID || !strings.Contains(dls[0].Error, "savepoints rolled back") {
		t.Fatalf("dead letters %+v, want the savepoint's message with the reason", dls)
	}
	checkOrder(t, c.key("m"), []outbox.Message{before, after})
}

// The LogicalMessage transport validates exactly as the Table transport does, and an Enqueuer with an
// unknown transport is an error.
func TestEnqueueLogicalValidation(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	for name, m := range map[string]outbox.Message{
		"no destination":  {Payload: []byte("x")},
		"bad id":          {ID: "nope", Destination: outbox.EventBus},
		"route control":   {Destination: outbox.EventBus, Route: "a\nb"},
		"key too long":    {Destination: outbox.EventBus, Key: strings.Repeat("k", 1025)},
		"header name":     {Destination: outbox.EventBus, Headers: map[string]string{"a b": "c"}},
		"payload too big": {Destination: outbox.EventBus, Payload: make([]byte, 8<<20+1)},
	} {
		if m.ID == "" {
			m.ID = newID() // the errors name it
		}
		tableErr := outbox.Enqueue(ctx, schema, db.Pool, m)
		logicalErr := logicalEnq.Enqueue(ctx, db.Pool, m)
		if tableErr == nil || logicalErr == nil || tableErr.Error() != logicalErr.Error() {
			t.Errorf("%s: table %v, logical %v: want the same error", name, tableErr, logicalErr)
		}
	}
	bad := outbox.Enqueuer{Schema: schema, Transport: 7}
	if err := bad.Enqueue(ctx, db.Pool, msg("k", 0)); !errors.Is(err, outbox.ErrInvalidMessage) || !strings.Contains(err.Error(), "Transport is 7") {
		t.Errorf("unknown transport: %v", err)
	}
	if outbox.Table.String() != "table" || outbox.LogicalMessage.String() != "logical" {
		t.Errorf("transport names %s, %s", outbox.Table, outbox.LogicalMessage)
	}
}
