package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"
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
	return pgconn.NewCommandTag(fmt.Sprintf("INSERT 0 %d", n)), nil
}

// DefaultMaxPayloadBytes is the payload limit Enqueue applies unless an Enqueuer sets another one.
const DefaultMaxPayloadBytes = 8 << 20

// Enqueue writes msgs into <schema>.pkg_outbox through tx, in one statement (a scalar INSERT for one
// message, INSERT … SELECT FROM unnest(arrays) for more: no parameter limit), so they commit or roll back
// with the caller's transaction. Messages without an ID get a UUIDv7. When ctx carries an OpenTelemetry
// span, its W3C traceparent and tracestate go into each message's headers (unless already set).
//
// Every message is validated before any SQL runs: a bad schema name, an empty destination, an ID that is
// not a UUID or a payload over DefaultMaxPayloadBytes returns an error and writes nothing.
// Enqueue does not modify msgs. It is safe for concurrent use with distinct transactions.
func Enqueue(ctx context.Context, schema string, tx Execer, msgs ...Message) error {
	return Enqueuer{Schema: schema}.Enqueue(ctx, tx, msgs...)
}

// Enqueuer holds Enqueue settings for one schema. The zero MaxPayloadBytes means DefaultMaxPayloadBytes.
// An Enqueuer is a value: safe for concurrent use.
type Enqueuer struct {
	Schema          string
	MaxPayloadBytes int
}

// Enqueue is the package-level Enqueue with e's settings.
func (e Enqueuer) Enqueue(ctx context.Context, tx Execer, msgs ...Message) error {
	if err := ValidateSchemaName(e.Schema); err != nil {
		return err
	}
	if tx == nil {
		return fmt.Errorf("%w: nil transaction", ErrInvalidMessage)
	}
	if len(msgs) == 0 {
		return nil
	}
	limit := e.MaxPayloadBytes
	if limit <= 0 {
		limit = DefaultMaxPayloadBytes
	}
	cols, err := columns(ctx, msgs, limit)
	if err != nil {
		return err
	}
	if len(msgs) == 1 { // the common case: a scalar INSERT is cheaper to plan and run than unnest
		q := "INSERT INTO " + TableName(e.Schema) + ` (id, destination, route, key, type, payload, headers)
VALUES ($1::uuid, $2::text, $3::text, $4::text, $5::text, $6::bytea, $7::text::jsonb)`
		_, err = tx.Exec(ctx, q, cols.ids[0], cols.destinations[0], cols.routes[0], cols.keys[0], cols.types[0], cols.payloads[0], cols.headers[0])
	} else {
		q := "INSERT INTO " + TableName(e.Schema) + ` (id, destination, route, key, type, payload, headers)
SELECT u.id, u.destination, u.route, u.key, u.type, u.payload, u.headers::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[])
  AS u(id, destination, route, key, type, payload, headers)`
		_, err = tx.Exec(ctx, q, cols.ids, cols.destinations, cols.routes, cols.keys, cols.types, cols.payloads, cols.headers)
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
			return fmt.Errorf("%w: %s: run outbox.Migrate or apply outbox.GetSchemaSQL(%q) first: %w",
				ErrNotMigrated, TableName(e.Schema), e.Schema, err)
		}
		return fmt.Errorf("outbox: enqueue %d messages into %s: %w", len(msgs), TableName(e.Schema), err)
	}
	return nil
}

type columnArrays struct {
	ids, destinations   []string
	routes, keys, types []*string
	payloads            [][]byte
	headers             []*string
}

func columns(ctx context.Context, msgs []Message, limit int) (*columnArrays, error) {
	n := len(msgs)
	c := &columnArrays{
		ids: make([]string, n), destinations: make([]string, n),
		routes: make([]*string, n), keys: make([]*string, n), types: make([]*string, n),
		payloads: make([][]byte, n), headers: make([]*string, n),
	}
	trace := traceHeaders(ctx)
	for i := range msgs {
		m := &msgs[i]
		if m.Destination == "" {
			return nil, fmt.Errorf("%w: msgs[%d].Destination is empty", ErrInvalidMessage, i)
		}
		if m.ID == "" {
			id, err := uuid.NewV7()
			if err != nil {
				return nil, fmt.Errorf("outbox: generate id: %w", err)
			}
			c.ids[i] = id.String()
		} else {
			if _, err := uuid.Parse(m.ID); err != nil {
				return nil, fmt.Errorf("%w: msgs[%d].ID %q is not a UUID", ErrInvalidMessage, i, truncate(m.ID, 64))
			}
			c.ids[i] = m.ID
		}
		if len(m.Payload) > limit {
			return nil, fmt.Errorf("%w: msgs[%d].Payload is %d bytes, the limit is %d", ErrPayloadTooLarge, i, len(m.Payload), limit)
		}
		for _, f := range [...]struct{ name, v string }{
			{"Destination", string(m.Destination)}, {"Route", m.Route}, {"Key", m.Key}, {"Type", m.Type},
		} {
			if err := checkText(f.v); err != nil {
				return nil, fmt.Errorf("%w: msgs[%d].%s %w", ErrInvalidMessage, i, f.name, err)
			}
		}
		c.destinations[i] = string(m.Destination)
		c.routes[i] = nullable(m.Route)
		c.keys[i] = nullable(m.Key)
		c.types[i] = nullable(m.Type)
		if m.Payload == nil {
			c.payloads[i] = []byte{}
		} else {
			c.payloads[i] = m.Payload
		}
		h, err := encodeHeaders(m.Headers, trace)
		if err != nil {
			return nil, fmt.Errorf("%w: msgs[%d].Headers: %w", ErrInvalidMessage, i, err)
		}
		c.headers[i] = h
	}
	return c, nil
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
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

func encodeHeaders(h, trace map[string]string) (*string, error) {
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
	for k, v := range merged {
		if k == "" {
			return nil, errors.New("empty header name")
		}
		if err := checkText(k); err != nil {
			return nil, fmt.Errorf("header name %q %w", truncate(k, 64), err)
		}
		if err := checkText(v); err != nil {
			return nil, fmt.Errorf("header %q value %w", truncate(k, 64), err)
		}
	}
	b, err := json.Marshal(merged)
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
