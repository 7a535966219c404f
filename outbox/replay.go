package outbox

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// commitTimeSlack widens a commit-time range on both sides. PostgreSQL takes a commit's timestamp just
// before it writes the commit record, so two transactions committing at about the same moment can carry
// timestamps in the opposite order of their commit records: one committed right after the transaction a
// SlotLostError names may have a slightly earlier timestamp. The slack also absorbs small clock steps.
const commitTimeSlack = time.Second

// ReplayFilter selects retained outbox rows to deliver again: by IDs, and/or by a commit-time range
// [From, To] (both ends inclusive, either may be zero), and/or by Destination. At least one of IDs,
// From or To must be set.
//
// The range refers to when a row's transaction committed. With track_commit_timestamp on, that is
// pg_xact_commit_timestamp(xmin), and the range is widened by one second on both sides (timestamps
// and commit order may disagree by a little). Without a commit time (track_commit_timestamp off, or a
// row committed before it was turned on) a row is matched by created_at, the start of its
// transaction, in [From - Margin, To]: a transaction that began before From and committed after it is
// replayed when it ran shorter than Margin, and one that began before To is replayed even when it
// committed after To. The range errs towards replaying more; consumers dedupe on the message id.
type ReplayFilter struct {
	IDs         []string
	From, To    time.Time
	Destination Destination
	// Margin widens the range backwards for rows without a commit time: 0 means one hour,
	// a negative value means no margin (then a transaction that began before From is missed).
	Margin time.Duration
}

// ReplayResult says what Replay selected.
type ReplayResult struct {
	// Rows is how many messages were replayed (in a dry run: would be).
	Rows int64
	// MarginRows is how many of Rows lie outside [From, To] (by commit time, or by created_at for rows
	// without one) and were selected only because the range was widened: mostly duplicates of messages
	// delivered before From, replayed so that none committed after it is missed.
	MarginRows int64
	// ByCommitTime reports that track_commit_timestamp was on, so the range applied to commit times.
	ByCommitTime bool
}

func (f ReplayFilter) validate() error {
	switch {
	case len(f.IDs) == 0 && f.From.IsZero() && f.To.IsZero():
		return fmt.Errorf("%w: replay filter selects nothing: give IDs or a time range", ErrInvalidMessage)
	case !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To):
		return fmt.Errorf("%w: replay range From %s is not before To %s", ErrInvalidMessage, f.From, f.To)
	}
	return nil
}

func (f ReplayFilter) margin() time.Duration {
	switch {
	case f.Margin == 0:
		return names.DefaultReplayMargin
	case f.Margin < 0:
		return 0
	}
	return f.Margin
}

// selection returns a query yielding the rows to replay, one per id (its earliest matching row, in
// the exact range if one is), with the columns to copy, seq, and exact: whether the row lies in
// [From, To] itself rather than only in the widened range. byCommit says track_commit_timestamp is on.
func (f ReplayFilter) selection(table string, byCommit bool) (string, []any) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	// within renders lo <= expr <= hi, leaving out a zero bound.
	within := func(expr string, lo, hi time.Time) string {
		conds := []string{"true"}
		if !lo.IsZero() {
			conds = append(conds, expr+" >= "+arg(lo))
		}
		if !hi.IsZero() {
			conds = append(conds, expr+" <= "+arg(hi))
		}
		return strings.Join(conds, " AND ")
	}
	shift := func(t time.Time, d time.Duration) time.Time {
		if t.IsZero() {
			return t
		}
		return t.Add(d)
	}
	base := []string{"true"}
	if len(f.IDs) > 0 {
		base = append(base, "id = ANY("+arg(f.IDs)+"::uuid[])")
	}
	if f.Destination != "" {
		base = append(base, "destination = "+arg(string(f.Destination)))
	}
	committed := "NULL::timestamptz"
	if byCommit {
		committed = "pg_xact_commit_timestamp(xmin)"
		// created_at is the transaction's start, never after its commit: this bound can use the index.
		base = append(base, within("created_at", time.Time{}, shift(f.To, commitTimeSlack)))
	} else {
		base = append(base, within("created_at", shift(f.From, -f.margin()), f.To))
	}
	wide := "CASE WHEN committed IS NOT NULL THEN " + within("committed", shift(f.From, -commitTimeSlack), shift(f.To, commitTimeSlack)) +
		" ELSE " + within("created_at", shift(f.From, -f.margin()), f.To) + " END"
	exact := "CASE WHEN committed IS NOT NULL THEN " + within("committed", f.From, f.To) +
		" ELSE " + within("created_at", f.From, f.To) + " END"
	return `SELECT DISTINCT ON (id) seq, id, destination, route, key, type, payload, headers, exact FROM (
		SELECT c.*, ` + exact + ` AS exact FROM (
			SELECT seq, id, destination, route, key, type, payload, headers, created_at, ` + committed + ` AS committed
			FROM ` + table + ` WHERE ` + strings.Join(base, " AND ") + `) c
		WHERE ` + wide + `) s
	ORDER BY id, exact DESC, seq`, args
}

// Replay re-delivers retained outbox rows matching f by inserting copies (same id, destination, route,
// key, type, payload and headers) in one statement; they flow through the relay again as new
// deliveries, so consumers that dedupe by id see duplicates only. A message whose id is in the table
// more than once (replayed or requeued before) is replayed once. With dryRun it only counts. The
// result says how many rows the margin added (see ReplayFilter).
//
// Rows older than the retention may have been pruned and are not found; a row committed after the
// relay's confirmed position is never pruned (see WithRetention), so replaying from the last confirmed commit
// time of a lost slot (SlotLostError) finds every message the slot did not deliver.
//
// Only the Table transport's rows can be replayed: a message written with the LogicalMessage transport
// lives in the WAL alone and is gone once the slot confirmed it (or lost it), so Replay never finds it.
func Replay(ctx context.Context, conn Querier, schema string, f ReplayFilter, dryRun bool) (ReplayResult, error) {
	var res ReplayResult
	if err := validateSchema(schema); err != nil {
		return res, err
	}
	if err := f.validate(); err != nil {
		return res, err
	}
	if !f.From.IsZero() || !f.To.IsZero() {
		on, err := commitTimestampsOn(ctx, conn)
		if err != nil {
			return res, fmt.Errorf("outbox: replay: %w", err)
		}
		res.ByCommitTime = on
	}
	table := names.Table(schema, names.OutboxTable)
	sel, args := f.selection(table, res.ByCommitTime)
	q := `SELECT count(*), count(*) FILTER (WHERE NOT exact) FROM (` + sel + `) r`
	if !dryRun {
		q = `WITH r AS (` + sel + `), ins AS (
			INSERT INTO ` + table + ` (id, destination, route, key, type, payload, headers)
			SELECT id, destination, route, key, type, payload, headers FROM r ORDER BY seq RETURNING 1)
		SELECT (SELECT count(*) FROM ins), count(*) FILTER (WHERE NOT exact) FROM r`
	}
	rows, err := conn.Query(ctx, q, args...)
	if err == nil {
		var n [2]int64
		n, err = pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) (n [2]int64, err error) {
			return n, r.Scan(&n[0], &n[1])
		})
		res.Rows, res.MarginRows = n[0], n[1]
	}
	if err != nil {
		if dryRun {
			return ReplayResult{}, fmt.Errorf("outbox: replay dry run: %w", err)
		}
		return ReplayResult{}, fmt.Errorf("outbox: replay: %w", err)
	}
	return res, nil
}

// commitTimestampsOn reports whether the server records commit timestamps (track_commit_timestamp,
// fixed until the server restarts).
func commitTimestampsOn(ctx context.Context, conn Querier) (bool, error) {
	rows, err := conn.Query(ctx, "SELECT current_setting('track_commit_timestamp')::bool")
	if err != nil {
		return false, fmt.Errorf("read track_commit_timestamp: %w", err)
	}
	on, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
	if err != nil {
		return false, fmt.Errorf("read track_commit_timestamp: %w", err)
	}
	return on, nil
}
