package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/replication"
)

// decodeLoop decodes WAL events and routes rows to lanes; it alone touches the decode state.
// After Stop it keeps reading only until the open transaction is complete, so that a graceful stop
// confirms every row it delivered (no duplicates after a restart).
func (r *Relay) decodeLoop(ctx context.Context, events <-chan []replication.Event) error {
	rt := router{r: r, ctx: ctx}
	defer close(r.decodeDone)
	defer r.abandonCurrent()
	stopCh, stopping := r.stopReading, false
	for {
		if stopping && r.cur == nil {
			return nil // at a transaction boundary: what follows is re-sent after the restart
		}
		select {
		case <-ctx.Done():
			return nil
		case <-stopCh:
			stopCh, stopping = nil, true
		case batch := <-events:
			if err := r.resume(ctx, false); err != nil { // once, before the first record (PositionSinks)
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			for _, ev := range batch {
				switch ev.Kind {
				case replication.XLogData:
					r.sentAt = ev.ServerTime
					if err := r.dec.Decode(ev.Data, rt); err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return fmt.Errorf("outbox: decode WAL at %s: %w", ev.WALStart, err)
					}
				case replication.Keepalive:
					r.tracker.Keepalive(ev.ServerWALEnd)
				case replication.Disconnected:
					r.dec.Reset()
					clear(r.cols)
					r.abandonCurrent()
					r.skipping = false
				}
				if stopping && r.cur == nil {
					return nil
				}
			}
		}
	}
}

// abandonCurrent gives up the transaction being decoded, if any (the stream broke or stopped before
// its commit): its rows not yet handed to a lane are dropped, the transaction confirms nothing and is
// sent again after a reconnect.
func (r *Relay) abandonCurrent() {
	if r.cur != nil {
		r.batch.drop()
		r.tracker.Abandon(r.cur)
		r.cur = nil
	}
}

// router is the decoder.Handler of the decode goroutine.
type router struct {
	r   *Relay
	ctx context.Context
}

func (rt router) Begin(tx decoder.TxInfo) error {
	r := rt.r
	// After a reconnect PostgreSQL re-sends from the confirmed position: skip what was already received.
	if tx.FinalLSN != 0 && tx.FinalLSN <= r.lastCommitLSN {
		r.skipping = true
		return nil
	}
	r.cur = r.tracker.Begin()
	r.curCommit = tx.CommitTime
	r.curLSN = tx.FinalLSN
	return nil
}

func (rt router) Insert(row decoder.Row) error {
	r := rt.r
	if r.skipping {
		return nil
	}
	if r.cur == nil {
		return errors.New("outbox: insert outside a transaction")
	}
	rel := row.Relation
	if rel.Namespace != r.schema || rel.Name != "pkg_outbox" {
		return nil // not the outbox table (the publication should not send it)
	}
	ci, ok := r.cols[rel]
	if !ok {
		var err error
		if ci, err = newColumnIndex(rel); err != nil {
			return err
		}
		r.cols[rel] = ci
	}
	it := &item{tx: r.cur}
	if err := ci.recordFromRow(row, &it.rec); err != nil {
		return err
	}
	it.rec.CommitLSN = r.curLSN
	it.rec.CommitTime = r.curCommit
	if r.skipDelivered(&it.rec) {
		return nil
	}
	r.cur.Add(1)
	return r.batch.add(rt.ctx, it)
}

func (rt router) Commit(c decoder.CommitInfo) error {
	r := rt.r
	if r.skipping {
		r.skipping = false
		return nil
	}
	if r.cur == nil {
		return errors.New("outbox: commit outside a transaction")
	}
	if err := r.batch.flush(rt.ctx); err != nil {
		return err
	}
	r.commits.add(c.EndLSN, c.CommitTime)
	if r.source != nil && !r.sentAt.IsZero() {
		r.source.Decoded(r.sentAt.Sub(c.CommitTime), time.Since(r.sentAt))
	}
	r.tracker.Commit(r.cur, c.EndLSN)
	r.cur = nil
	r.lastCommitLSN = max(r.lastCommitLSN, c.CommitLSN)
	return nil
}
