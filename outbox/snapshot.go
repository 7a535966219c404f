package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/replication"
)

// snapshot is the relay's replication.SnapshotFunc: when the first start creates the slot, it hands
// every row committed before the slot's creation to the lanes, in seq order, as one transaction
// committed at the slot's consistent point. The slot streams what commits after that point and the
// watermark orders those transactions behind this one, so nothing is confirmed past the snapshot
// before all its rows are acked; confirm then records the snapshot as complete (WithInitialSnapshot).
func (r *Relay) snapshot(ctx context.Context, tx pgx.Tx, at pglogrepl.LSN) error {
	began := time.Now()
	if err := r.resume(ctx, true); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT seq, id::text, destination, route, key, type, payload, headers, created_at
		FROM `+names.Table(r.schema, names.OutboxTable)+` ORDER BY seq`)
	if err != nil {
		return fmt.Errorf("outbox: read %s in the snapshot: %w", names.Table(r.schema, names.OutboxTable), err)
	}
	defer rows.Close()
	wtx := r.tracker.Begin()
	b := newBatcher(r)
	var (
		n              int
		dest           string
		route, key, tp *string
	)
	for rows.Next() {
		it := &item{tx: wtx}
		if err := rows.Scan(&it.rec.Seq, &it.rec.ID, &dest, &route, &key, &tp, &it.rec.Payload, &it.rec.Headers, &it.rec.CreatedAt); err != nil {
			b.drop()
			r.tracker.Abandon(wtx)
			return fmt.Errorf("outbox: snapshot row %d: %w", n+1, err)
		}
		it.rec.Destination = Destination(dest)
		it.rec.Route, it.rec.Key, it.rec.Type = deref(route), deref(key), deref(tp)
		it.rec.CommitLSN = at
		it.rec.CommitTime = it.rec.CreatedAt // the commit time is not kept; created_at is the transaction's start
		select {
		case <-r.stopReading: // Stop: hand on no more; the stream's Close ends this (the snapshot is taken again at the next start)
			b.drop()
			r.tracker.Abandon(wtx)
			<-ctx.Done()
			return ctx.Err()
		default:
		}
		if r.skipDelivered(&it.rec) {
			continue
		}
		wtx.Add(1)
		if err := b.add(ctx, it); err != nil {
			b.drop()
			r.tracker.Abandon(wtx)
			return err
		}
		n++
	}
	err = rows.Err()
	if err == nil {
		err = b.flush(ctx)
	}
	if err != nil {
		b.drop()
		r.tracker.Abandon(wtx)
		return fmt.Errorf("outbox: read %s in the snapshot: %w", names.Table(r.schema, names.OutboxTable), err)
	}
	r.tracker.Commit(wtx, at)
	r.snapshotAt.Store(uint64(at))
	r.log.Info("initial snapshot: rows committed before the slot's creation handed to delivery",
		zap.Int("rows", n), zap.String("consistent_point", at.String()), zap.Duration("took", time.Since(began)))
	return nil
}

// completeSnapshot records the initial snapshot as complete once all its rows are acked; until then
// the stream confirms nothing past the slot's creation. A failure is retried on the next confirm.
func (r *Relay) completeSnapshot() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.stream.CompleteSnapshot(ctx)
	switch {
	case err == nil:
		r.snapshotAt.Store(0)
	case errors.Is(err, replication.ErrSnapshotTaken):
		r.snapshotAt.Store(0)
		r.log.Warn("initial snapshot delivered, but another instance re-created the slot meanwhile (it takes its own snapshot)", zap.Error(err))
	default:
		r.log.Warn("record the completed initial snapshot (retried)", zap.Error(err))
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
