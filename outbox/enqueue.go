package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// Execer is the one method Enqueue and Migrate need. pgx.Tx, *pgx.Conn and *pgxpool.Pool satisfy it;
// a database/sql transaction does through SQLExecer.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// SQLExecer adapts a database/sql *sql.Tx, *sql.Conn or *sql.DB to Execer. The driver must accept Go
// slices as array parameters, as github.com/jackc/pgx/v5/stdlib does.
func SQLExecer(db interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}) Execer {
	return sqlExecer{db}
}

type sqlExecer struct {
	db interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	}
}

func (s sqlExecer) Exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error) {
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	n, _ := res.RowsAffected()
	return pgconn.NewCommandTag("INSERT 0 " + strconv.FormatInt(n, 10)), nil
}

// maxValuesRows is the largest batch Enqueue writes with a multi-row INSERT … VALUES. Larger batches go
// through INSERT … SELECT FROM unnest(arrays), which has no parameter limit and one statement text for
// every size, but costs more per call than VALUES (bench/NOTES.md, W1; BenchmarkEnqueueForms).
const maxValuesRows = 32

// Enqueue writes msgs into <schema>.pkg_outbox through tx, in one statement, so they commit or roll back
// with the caller's transaction: up to 32 messages as one multi-row INSERT … VALUES, more as
// INSERT … SELECT FROM unnest(arrays) (no parameter limit). Rows get seq numbers in the order of msgs.
// Messages without an ID get a UUIDv7. When ctx carries an OpenTelemetry span, its W3C traceparent and
// tracestate go into each message's headers (unless already set).
//
// The SQL text depends only on the schema and the batch size (1 to 32, or larger), so a pgx
// connection in its default statement-cache mode prepares at most 33 statements per schema for Enqueue
// and then reuses them.
//
// Every message is validated before any SQL runs, and a bad one returns an error naming the message
// (msgs[i] and its id), the field and the limit, and writes nothing: a bad schema name, an empty
// Destination or one over 255 bytes, an ID that is not a UUID, a payload over 8 MiB
// ([Enqueuer.MaxPayloadBytes]), a Route over 255 bytes or with control characters, a Key over 1 KiB, a
// Type over 255 bytes, a header name that is not an HTTP token, headers over 64 KiB in all
// ([Enqueuer.MaxHeaderBytes]), or text that is not valid UTF-8 or holds a NUL byte.
// Enqueue does not modify msgs. It is safe for concurrent use with distinct transactions.
func Enqueue(ctx context.Context, schema string, tx Execer, msgs ...Message) error {
	return Enqueuer{Schema: schema}.Enqueue(ctx, tx, msgs...)
}

// Enqueuer holds Enqueue settings for one schema. The zero MaxPayloadBytes means 8 MiB and the zero
// MaxHeaderBytes 64 KiB. An Enqueuer is a value: safe for concurrent use.
type Enqueuer struct {
	Schema          string
	MaxPayloadBytes int
	// MaxHeaderBytes bounds the headers of each message: the sum of the lengths of every name and
	// value, trace context included.
	MaxHeaderBytes int
	// Transport is how the messages are written: Table (the zero value, rows of pkg_outbox) or
	// LogicalMessage (the WAL alone; see Transport). The validation and limits are the same.
	Transport Transport
}

// Enqueue is the package-level Enqueue with e's settings.
func (e Enqueuer) Enqueue(ctx context.Context, tx Execer, msgs ...Message) error {
	return e.enqueue(ctx, tx, msgs, maxValuesRows)
}

// enqueue writes msgs with a multi-row VALUES statement when there are at most maxValues of them, else
// with unnest. Tests lower maxValues to compare both forms on the same batch.
func (e Enqueuer) enqueue(ctx context.Context, tx Execer, msgs []Message, maxValues int) error {
	if tx == nil {
		return fmt.Errorf("%w: nil transaction", ErrInvalidMessage)
	}
	w, err := e.write(ctx, msgs, maxValues)
	if err != nil || w.sql == "" {
		return err
	}
	_, err = tx.Exec(ctx, w.sql, w.args...)
	return w.wrap(err)
}

// write is the one statement that writes a batch of validated messages.
type write struct {
	sql  string // "" for no messages
	args []any
	st   *statements
	n    int
	e    Enqueuer
}

// write validates msgs and returns the statement that writes them.
func (e Enqueuer) write(ctx context.Context, msgs []Message, maxValues int) (write, error) {
	st, err := statementsFor(e.Schema)
	if err != nil {
		return write{}, err
	}
	if err := e.Transport.validate(); err != nil {
		return write{}, err
	}
	w := write{st: st, n: len(msgs), e: e}
	if len(msgs) == 0 {
		return w, nil
	}
	lim := limits{payload: e.MaxPayloadBytes, headers: e.MaxHeaderBytes}
	if lim.payload <= 0 {
		lim.payload = names.DefaultMaxPayloadBytes
	}
	if lim.headers <= 0 {
		lim.headers = names.DefaultMaxHeaderBytes
	}
	rows := make([]outboxRow, len(msgs))
	trace := traceHeaders(ctx)
	for i := range msgs {
		if err := rows[i].set(i, &msgs[i], trace, lim); err != nil {
			return write{}, err
		}
	}
	if e.Transport == LogicalMessage {
		w.sql, w.args = emitStatement(st, rows, len(rows) == 1 && maxValues > 0)
		return w, nil
	}
	for i := range rows {
		if rows[i].headers, err = headersJSON(rows[i].hdr); err != nil {
			return write{}, fmt.Errorf("%w: msgs[%d].Headers: %w (message id %s)", ErrInvalidMessage, i, err, rows[i].id)
		}
	}
	if len(rows) <= maxValues && len(rows) <= maxValuesRows {
		w.args = make([]any, 0, valuesColumns*len(rows))
		for i := range rows {
			r := &rows[i]
			// Pointers into rows: boxing a pointer allocates nothing, and nil is NULL.
			w.args = append(w.args, &r.id, &r.destination, nonEmpty(&r.route), nonEmpty(&r.key), nonEmpty(&r.typ), r.payload, r.headers)
		}
		w.sql = st.values(len(rows))
		return w, nil
	}
	c := unnestColumns(rows)
	w.sql, w.args = st.unnest, []any{c.ids, c.destinations, c.routes, c.keys, c.types, c.payloads, c.headers}
	return w, nil
}

// wrap names what failed when the statement returned err.
func (w write) wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case w.e.Transport == LogicalMessage:
		return fmt.Errorf("outbox: enqueue %d messages as logical messages with prefix %s: %w", w.n, w.st.prefix, err)
	case names.IsMissingRelation(err):
		return fmt.Errorf("%w: %s: run outbox.Migrate or apply outbox.GetSchemaSQL(%q) first: %w",
			ErrNotMigrated, w.st.table, w.e.Schema, err)
	}
	return fmt.Errorf("outbox: enqueue %d messages into %s: %w", w.n, w.st.table, err)
}

// outboxRow is one validated message as Enqueue writes it.
type outboxRow struct {
	id, destination string
	uid             uuid.UUID
	route, key, typ string // "" is written as NULL
	payload         []byte // never nil: the column is NOT NULL
	hdr             map[string]string
	headers         *string // hdr as JSON (Table transport)
}

// limits are the configurable limits of one Enqueue call.
type limits struct{ payload, headers int }

// set validates msgs[i] (m) and fills r from it; errors name the message, the field and the limit.
func (r *outboxRow) set(i int, m *Message, trace map[string]string, lim limits) error {
	if m.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("outbox: generate id: %w", err)
		}
		r.uid, r.id = id, id.String()
	} else {
		id, err := uuid.Parse(m.ID)
		if err != nil {
			return fmt.Errorf("%w: msgs[%d].ID %q is not a UUID", ErrInvalidMessage, i, truncate(m.ID, 64))
		}
		r.uid, r.id = id, m.ID
	}
	bad := func(sentinel error, field string, err error) error {
		return fmt.Errorf("%w: msgs[%d].%s %w (message id %s)", sentinel, i, field, err, r.id)
	}
	if m.Destination == "" {
		return bad(ErrInvalidMessage, "Destination", errors.New("is empty"))
	}
	if len(m.Payload) > lim.payload {
		return bad(ErrPayloadTooLarge, "Payload", names.ValidateLen(len(m.Payload), lim.payload))
	}
	for _, f := range [...]struct {
		name, v string
		max     int
	}{
		{"Destination", string(m.Destination), names.MaxDestinationLen}, {"Route", m.Route, names.MaxRouteLen},
		{"Key", m.Key, names.MaxKeyLen}, {"Type", m.Type, names.MaxTypeLen},
	} {
		if err := names.ValidateLen(len(f.v), f.max); err != nil {
			return bad(ErrInvalidMessage, f.name, err)
		}
		if err := checkText(f.v); err != nil {
			return bad(ErrInvalidMessage, f.name, err)
		}
	}
	if err := names.ValidateRoute(m.Route); err != nil {
		return bad(ErrInvalidMessage, "Route", err)
	}
	r.destination, r.route, r.key, r.typ = string(m.Destination), m.Route, m.Key, m.Type
	r.payload = m.Payload
	if r.payload == nil {
		r.payload = []byte{}
	}
	h, err := mergeHeaders(m.Headers, trace, lim.headers)
	if err != nil {
		return bad(ErrInvalidMessage, "Headers", err)
	}
	r.hdr = h
	return nil
}

func nonEmpty(s *string) *string {
	if *s == "" {
		return nil
	}
	return s
}

type columnArrays struct {
	ids, destinations   []string
	routes, keys, types []*string
	payloads            [][]byte
	headers             []*string
}

// unnestColumns turns rows into the seven arrays the unnest statement takes.
func unnestColumns(rows []outboxRow) *columnArrays {
	n := len(rows)
	c := &columnArrays{
		ids: make([]string, n), destinations: make([]string, n),
		routes: make([]*string, n), keys: make([]*string, n), types: make([]*string, n),
		payloads: make([][]byte, n), headers: make([]*string, n),
	}
	for i := range rows {
		r := &rows[i]
		c.ids[i], c.destinations[i] = r.id, r.destination
		c.routes[i], c.keys[i], c.types[i] = nonEmpty(&r.route), nonEmpty(&r.key), nonEmpty(&r.typ)
		c.payloads[i], c.headers[i] = r.payload, r.headers
	}
	return c
}

// statements holds the INSERT texts of one schema. They are built once and reused, so that Enqueue
// allocates nothing for its SQL and sends pgx the same text each time (one prepared statement per text).
type statements struct {
	table  string
	rows   [maxValuesRows + 1]atomic.Pointer[string] // rows[n]: the n-row INSERT … VALUES, built on first use
	unnest string
	logical
}

const valuesColumns = 7

// values returns the INSERT … VALUES statement for n rows, 1 ≤ n ≤ maxValuesRows.
func (s *statements) values(n int) string {
	if q := s.rows[n].Load(); q != nil {
		return *q
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + s.table + " (id, destination, route, key, type, payload, headers)\nVALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(",\n       ")
		}
		p := valuesColumns * i
		fmt.Fprintf(&b, "($%d::uuid, $%d::text, $%d::text, $%d::text, $%d::text, $%d::bytea, $%d::text::jsonb)",
			p+1, p+2, p+3, p+4, p+5, p+6, p+7)
	}
	q := b.String()
	s.rows[n].CompareAndSwap(nil, &q) // a concurrent builder made the same text; keep one
	return *s.rows[n].Load()
}

// maxCachedSchemas bounds the statement cache; Enqueue into further schemas builds its SQL per call.
const maxCachedSchemas = 64

var (
	stmtCache   sync.Map // schema name → *statements
	stmtCacheMu sync.Mutex
	stmtCached  int // entries in stmtCache, under stmtCacheMu
)

// statementsFor returns the statements for schema, validating the name the first time it is seen.
func statementsFor(schema string) (*statements, error) {
	if s, ok := stmtCache.Load(schema); ok {
		return s.(*statements), nil
	}
	if err := validateSchema(schema); err != nil {
		return nil, err
	}
	table := names.Table(schema, names.OutboxTable)
	s := &statements{table: table, unnest: "INSERT INTO " + table + ` (id, destination, route, key, type, payload, headers)
SELECT u.id, u.destination, u.route, u.key, u.type, u.payload, u.headers::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[])
  AS u(id, destination, route, key, type, payload, headers)`, logical: logicalStatements(schema)}
	stmtCacheMu.Lock()
	defer stmtCacheMu.Unlock()
	if cached, ok := stmtCache.Load(schema); ok {
		return cached.(*statements), nil
	}
	if stmtCached < maxCachedSchemas {
		stmtCache.Store(schema, s)
		stmtCached++
	}
	return s, nil
}

// traceHeaders returns the W3C trace context of ctx's span, or nil.
func traceHeaders(ctx context.Context) map[string]string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	h := map[string]string{
		"traceparent": fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags()),
	}
	if ts := sc.TraceState().String(); ts != "" {
		h["tracestate"] = ts
	}
	return h
}

// mergeHeaders merges the caller's headers over the trace context and checks them (names are HTTP
// tokens, names and values valid text, at most maxBytes in all). The result may be h itself.
func mergeHeaders(h, trace map[string]string, maxBytes int) (map[string]string, error) {
	if len(h) == 0 && len(trace) == 0 {
		return nil, nil
	}
	merged := h
	if len(trace) > 0 {
		merged = make(map[string]string, len(h)+len(trace))
		for k, v := range trace {
			merged[k] = v
		}
		for k, v := range h { // the caller's own headers win
			merged[k] = v
		}
	}
	size := 0
	for k, v := range merged {
		if err := names.ValidateHeaderName(k); err != nil {
			return nil, fmt.Errorf("name %q %w", truncate(k, 64), err)
		}
		if err := checkText(v); err != nil {
			return nil, fmt.Errorf("%q value %w", truncate(k, 64), err)
		}
		size += len(k) + len(v)
	}
	if size > maxBytes {
		return nil, fmt.Errorf("are %d bytes (names and values), the limit is %d", size, maxBytes)
	}
	return merged, nil
}

// headersJSON returns checked headers as JSON, or nil for none.
func headersJSON(h map[string]string) (*string, error) {
	if len(h) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}

// checkText rejects what PostgreSQL text and jsonb cannot store unchanged.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains a NUL byte")
	}
	return nil
}

// Queue adds to b the one statement that writes msgs, so that they travel with the caller's own
// statements when it sends b (pgx.Tx.SendBatch): the messages then cost no round trip of their own,
// which is most of what a small Enqueue adds to a transaction. They commit or roll back with the
// transaction the batch runs in (a batch sent outside one runs in an implicit transaction of its own).
//
// msgs are validated now, as by Enqueue: an invalid message returns its error and queues nothing. A
// database error (the outbox not migrated, a constraint) is returned by the batch's results, like the
// caller's own statements' errors: it is not wrapped. The payloads of msgs are sent as they are when
// the batch is: do not modify them before.
func (e Enqueuer) Queue(ctx context.Context, b *pgx.Batch, msgs ...Message) error {
	if b == nil {
		return fmt.Errorf("%w: nil batch", ErrInvalidMessage)
	}
	w, err := e.write(ctx, msgs, maxValuesRows)
	if err != nil || w.sql == "" {
		return err
	}
	b.Queue(w.sql, w.args...)
	return nil
}
