package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// deadLetter writes it to the dead-letter table and acks it once the row committed. Writing the same
// message twice (after a crash) is a no-op thanks to the unique (id, commit_lsn). It retries database
// errors until ctx ends; false means ctx ended first (the message stays unacked).
func (r *Relay) deadLetter(ctx context.Context, it *item) bool {
	var headers *string
	if len(it.rec.Headers) > 0 {
		b, _ := json.Marshal(it.rec.Headers)
		s := string(b)
		headers = &s
	}
	errText := "unknown error"
	if it.lastErr != nil {
		errText = it.lastErr.Error()
	}
	created := it.rec.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	q := `INSERT INTO ` + names.Table(r.schema, names.DeadLetterTable) + ` (id, outbox_seq, destination,
	route, key, type, payload, headers, created_at, error, attempts, first_failed_at, last_failed_at, commit_lsn)
	VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), NULLIF($6, ''), $7, $8::jsonb, $9, $10, $11, $12, now(), $13::pg_lsn)
	ON CONFLICT (id, commit_lsn) DO NOTHING`
	for attempt := 1; ; attempt++ {
		_, err := r.pool.Exec(ctx, q, it.rec.ID, it.rec.Seq, string(it.rec.Destination), it.rec.Route, it.rec.Key, it.rec.Type,
			it.rec.Payload, headers, created, errText, it.rec.Attempt, it.firstFail, it.rec.CommitLSN.String())
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		r.log.Error("write dead letter failed, retrying", zap.String("id", it.rec.ID), zap.Error(err))
		if !sleep(ctx, r.backoff(attempt)) {
			return false
		}
	}
	r.log.Warn("message dead-lettered", zap.String("id", it.rec.ID), zap.String("destination", string(it.rec.Destination)),
		zap.String("key", it.rec.Key), zap.Int("attempts", it.rec.Attempt), zap.String("error", errText))
	r.deadLettered.Add(1)
	if r.cfg.observer != nil {
		r.cfg.observer.DeadLettered(it.rec.Destination)
	}
	it.tx.Ack(1)
	return true
}

// DeadLetter is a row of the dead-letter table.
type DeadLetter struct {
	Message
	Seq            int64
	CreatedAt      time.Time
	Error          string
	Attempts       int
	FirstFailedAt  time.Time
	LastFailedAt   time.Time
	CommitLSN      string
	DeadLetteredAt time.Time
}

// DeadLetterFilter selects dead letters: by IDs, by Destination, or all of them when All is set.
// An empty filter selects nothing, so that a forgotten flag never purges everything.
type DeadLetterFilter struct {
	IDs         []string
	Destination Destination
	All         bool
	Limit       int // ListDeadLetters only; default 100
}

func (f DeadLetterFilter) where() (string, []any, error) {
	var conds []string
	var args []any
	if len(f.IDs) > 0 {
		args = append(args, f.IDs)
		conds = append(conds, fmt.Sprintf("id = ANY($%d::uuid[])", len(args)))
	}
	if f.Destination != "" {
		args = append(args, string(f.Destination))
		conds = append(conds, fmt.Sprintf("destination = $%d", len(args)))
	}
	if len(conds) == 0 {
		if !f.All {
			return "", nil, fmt.Errorf("%w: dead-letter filter selects nothing: give IDs, a Destination or All", ErrInvalidMessage)
		}
		return "true", nil, nil
	}
	return strings.Join(conds, " AND "), args, nil
}

// ListDeadLetters returns dead letters matching f, oldest first.
func ListDeadLetters(ctx context.Context, conn Querier, schema string, f DeadLetterFilter) ([]DeadLetter, error) {
	if err := validateSchema(schema); err != nil {
		return nil, err
	}
	where, args, err := f.where()
	if err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := conn.Query(ctx, `SELECT id::text, coalesce(outbox_seq, 0), destination, coalesce(route, ''), coalesce(key, ''),
		coalesce(type, ''), payload, headers, created_at, error, attempts, first_failed_at, last_failed_at, commit_lsn::text,
		dead_lettered_at FROM `+names.Table(schema, names.DeadLetterTable)+` WHERE `+where+
		fmt.Sprintf(" ORDER BY dead_lettered_at, outbox_seq LIMIT %d", limit), args...)
	if err != nil {
		return nil, fmt.Errorf("outbox: list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var dest string
		if err := rows.Scan(&d.ID, &d.Seq, &dest, &d.Route, &d.Key, &d.Type, &d.Payload, &d.Headers, &d.CreatedAt, &d.Error,
			&d.Attempts, &d.FirstFailedAt, &d.LastFailedAt, &d.CommitLSN, &d.DeadLetteredAt); err != nil {
			return nil, fmt.Errorf("outbox: list dead letters: %w", err)
		}
		d.Destination = Destination(dest)
		out = append(out, d)
	}
	return out, rows.Err()
}

// Querier is what the admin functions need; pgx.Tx, *pgx.Conn and *pgxpool.Pool satisfy it.
type Querier interface {
	Execer
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// RequeueDeadLetters moves the dead letters matching f back into the outbox in one statement (so in one
// transaction): they keep their ids and flow again as new deliveries. It returns how many moved.
func RequeueDeadLetters(ctx context.Context, conn Execer, schema string, f DeadLetterFilter) (int64, error) {
	if err := validateSchema(schema); err != nil {
		return 0, err
	}
	where, args, err := f.where()
	if err != nil {
		return 0, err
	}
	tag, err := conn.Exec(ctx, `WITH moved AS (
		DELETE FROM `+names.Table(schema, names.DeadLetterTable)+` WHERE `+where+`
		RETURNING id, destination, route, key, type, payload, headers, outbox_seq, dead_lettered_at)
	INSERT INTO `+names.Table(schema, names.OutboxTable)+` (id, destination, route, key, type, payload, headers)
	SELECT id, destination, route, key, type, payload, headers FROM moved ORDER BY dead_lettered_at, outbox_seq`, args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: requeue dead letters: %w", err)
	}
	return tag.RowsAffected(), nil
}

// PurgeDeadLetters deletes the dead letters matching f and returns how many were deleted.
func PurgeDeadLetters(ctx context.Context, conn Execer, schema string, f DeadLetterFilter) (int64, error) {
	if err := validateSchema(schema); err != nil {
		return 0, err
	}
	where, args, err := f.where()
	if err != nil {
		return 0, err
	}
	tag, err := conn.Exec(ctx, `DELETE FROM `+names.Table(schema, names.DeadLetterTable)+` WHERE `+where, args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: purge dead letters: %w", err)
	}
	return tag.RowsAffected(), nil
}
