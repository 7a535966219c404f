package outbox

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReplayFilter selects retained outbox rows to deliver again: by IDs, and/or by a created_at range
// [From, To), and/or by Destination. At least one of IDs, From or To must be set.
type ReplayFilter struct {
	IDs         []string
	From, To    time.Time
	Destination Destination
}

func (f ReplayFilter) where() (string, []any, error) {
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if len(f.IDs) > 0 {
		add("id = ANY($%d::uuid[])", f.IDs)
	}
	if !f.From.IsZero() {
		add("created_at >= $%d", f.From)
	}
	if !f.To.IsZero() {
		add("created_at < $%d", f.To)
	}
	if len(conds) == 0 {
		return "", nil, fmt.Errorf("%w: replay filter selects nothing: give IDs or a time range", ErrInvalidMessage)
	}
	if f.Destination != "" {
		add("destination = $%d", string(f.Destination))
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return "", nil, fmt.Errorf("%w: replay range From %s is not before To %s", ErrInvalidMessage, f.From, f.To)
	}
	return strings.Join(conds, " AND "), args, nil
}

// Replay re-delivers retained outbox rows matching f by inserting copies (same id, destination, key,
// payload and headers) in one statement; they flow through the relay again as new deliveries, so
// consumers that dedupe by id see duplicates only. With dryRun it only counts. It returns the count.
// Rows older than the retention may have been pruned and are not found.
func Replay(ctx context.Context, conn Querier, schema string, f ReplayFilter, dryRun bool) (int64, error) {
	if err := ValidateSchemaName(schema); err != nil {
		return 0, err
	}
	where, args, err := f.where()
	if err != nil {
		return 0, err
	}
	table := TableName(schema)
	if dryRun {
		var n int64
		rows, err := conn.Query(ctx, "SELECT count(*) FROM "+table+" WHERE "+where, args...)
		if err != nil {
			return 0, fmt.Errorf("outbox: replay dry run: %w", err)
		}
		n, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
		if err != nil {
			return 0, fmt.Errorf("outbox: replay dry run: %w", err)
		}
		return n, nil
	}
	tag, err := conn.Exec(ctx, "INSERT INTO "+table+` (id, destination, route, key, type, payload, headers)
		SELECT id, destination, route, key, type, payload, headers FROM `+table+" WHERE "+where+" ORDER BY seq", args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: replay: %w", err)
	}
	return tag.RowsAffected(), nil
}
