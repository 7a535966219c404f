package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Prune deletes outbox rows older than both retention and the slot's last confirmed commit time minus
// margin, in batches of batch rows, and returns how many it deleted. Rows the relay has not confirmed
// yet are never deleted. It does nothing when the slot has no confirmed commit time yet.
func Prune(ctx context.Context, conn Execer, schema, slot string, retention, margin time.Duration, batch int) (int64, error) {
	if err := ValidateSchemaName(schema); err != nil {
		return 0, err
	}
	if batch <= 0 {
		batch = 1000
	}
	q := `DELETE FROM ` + TableName(schema) + ` WHERE seq IN (
		SELECT seq FROM ` + TableName(schema) + ` o
		WHERE o.created_at < now() - $1::interval
		  AND o.created_at < (SELECT r.confirmed_commit_time - $2::interval FROM ` +
		pgx.Identifier{schema, "pkg_outbox_relay"}.Sanitize() + ` r WHERE r.slot_name = $3)
		ORDER BY o.created_at LIMIT $4)`
	var total int64
	for {
		tag, err := conn.Exec(ctx, q, retention.String(), margin.String(), slot, batch)
		if err != nil {
			return total, fmt.Errorf("outbox: prune %s: %w", TableName(schema), err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
	}
}

func (r *Relay) pruneLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.pruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := Prune(ctx, r.pool, r.schema, r.cfg.slot, r.cfg.retention, r.cfg.retentionMargin, r.cfg.pruneBatch)
			if err != nil && ctx.Err() == nil {
				r.log.Warn("prune outbox", zap.Error(err))
			} else if n > 0 {
				r.log.Info("pruned outbox rows", zap.Int64("rows", n))
			}
		}
	}
}
