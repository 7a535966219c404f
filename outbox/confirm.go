package outbox

import (
	"context"
	"time"

	"github.com/jackc/pglogrepl"
)

// statusLoop moves the slot to the watermark on a timer.
func (r *Relay) statusLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.statusInterval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.confirm()
			r.reportParked(ctx)
		}
	}
}

func (r *Relay) confirm() pglogrepl.LSN {
	lsn := r.confirmable(r.tracker.Flushed())
	if at := pglogrepl.LSN(r.snapshotAt.Load()); at != 0 && lsn >= at {
		r.completeSnapshot()
	}
	if lsn != 0 {
		r.stream.SetFlushed(lsn, r.commits.timeAt(lsn))
	}
	return lsn
}
