package outbox

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/replication"
)

// parkedReport is what the relay last wrote about its parked keys to its record in pkg_outbox_relay,
// where `pgoutbox status` and any SQL client read it.
type parkedReport struct {
	written bool
	off     bool // the schema predates the parked_* columns: reported once, then not tried again
	last    ParkedStats
}

// reportParked writes the parked keys to the relay record when they changed. Only a streaming relay
// writes, so a standby never overwrites the active instance's report; a new active instance writes
// its own (none parked) at once. Called by the status goroutine only.
func (r *Relay) reportParked(ctx context.Context) {
	rep := &r.parkedReport
	if rep.off || r.stream.State() != replication.Streaming {
		return
	}
	var s ParkedStats
	for _, l := range r.lanes {
		l.park.stats(&s)
	}
	if rep.written && s == rep.last {
		return
	}
	var since *time.Time
	var lsn *string
	if s.Keys > 0 {
		since = &s.Since
		v := s.OldestLSN.String()
		lsn = &v
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := r.pool.Exec(ctx, `UPDATE `+pgx.Identifier{r.schema, "pkg_outbox_relay"}.Sanitize()+` SET
		parked_keys = $2, parked_messages = $3, parked_since = $4, parked_lsn = $5::pg_lsn WHERE slot_name = $1`,
		r.cfg.slot, s.Keys, s.Records, since, lsn)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedColumn:
		rep.off = true
		r.log.Warn("the outbox schema predates the parked_* columns of pkg_outbox_relay: parked keys are not recorded for `pgoutbox status`; run the migration",
			zap.Error(err))
	case err != nil:
		if ctx.Err() == nil {
			r.log.Debug("record parked keys (retried)", zap.Error(err))
		}
	default:
		rep.written, rep.last = true, s
	}
}
