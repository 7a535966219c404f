package outbox

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/internal/retention"
)

// pruneLoop deletes confirmed outbox rows older than the retention on a timer (retention.Prune).
func (r *Relay) pruneLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.pruneInterval)
	defer t.Stop()
	opts := retention.Options{Schema: r.schema, Slot: r.cfg.slot, Retention: r.cfg.retention, Batch: r.cfg.pruneBatch}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := retention.Prune(ctx, r.pool, opts)
			if err != nil && ctx.Err() == nil {
				r.log.Warn("prune outbox", zap.Error(err))
			} else if n > 0 {
				r.log.Info("pruned outbox rows", zap.Int64("rows", n))
			}
		}
	}
}
