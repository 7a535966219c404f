package oracle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Slot is one reading of a replication slot and of its relay record.
type Slot struct {
	Confirmed       pglogrepl.LSN // the slot's confirmed_flush_lsn
	Created         pglogrepl.LSN // the relay record's created_lsn; 0 unknown (no record yet)
	SnapshotPending bool          // the relay record's snapshot_pending
}

// Err reports the I4 violation a slot whose initial snapshot is pending can show on its own: the
// messages committed before the slot's creation lie below its confirmed position without being acked
// (the pending snapshot, taken again if the relay stops, covers them), so the slot must not confirm
// anything past its creation.
func (s Slot) Err() error {
	if s.SnapshotPending && s.Created != 0 && s.Confirmed != s.Created {
		return fmt.Errorf("I4: confirmed_flush_lsn %s moved past the slot's creation %s while its initial snapshot was pending", s.Confirmed, s.Created)
	}
	return nil
}

// ReadSlot reads slot and its relay record; ok is false while the slot does not exist.
func (l *Ledger) ReadSlot(ctx context.Context, slot string) (s Slot, ok bool, err error) {
	var confirmed *string
	var created string
	err = l.db.QueryRow(ctx, `SELECT s.confirmed_flush_lsn::text, COALESCE(r.snapshot_pending, false),
		COALESCE(r.created_lsn::text, '0/0') FROM pg_replication_slots s
		LEFT JOIN `+l.table("pkg_outbox_relay")+` r ON r.slot_name = s.slot_name WHERE s.slot_name = $1`, slot).
		Scan(&confirmed, &s.SnapshotPending, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return Slot{}, false, nil
	}
	if err != nil || confirmed == nil {
		return Slot{}, false, err
	}
	if s.Confirmed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
		return Slot{}, false, err
	}
	if s.Created, err = pglogrepl.ParseLSN(created); err != nil {
		return Slot{}, false, err
	}
	return s, true, nil
}

// Unacked returns the committed messages known to lie at or below confirmed that delivered says were
// not delivered: each is an I4 violation unless it was dead-lettered.
func (l *Ledger) Unacked(confirmed pglogrepl.LSN, delivered func(id string) bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id, m := range l.committed {
		if m.Upper != 0 && m.Upper <= confirmed && !delivered(id) {
			out = append(out, id)
		}
	}
	return out
}

// countDead returns how many of ids are in the dead-letter table.
func (l *Ledger) countDead(ctx context.Context, ids []string) (int, error) {
	var n int
	err := l.db.QueryRow(ctx, "SELECT count(*) FROM "+l.table("pkg_outbox_dead_letter")+" WHERE id = ANY($1::uuid[])", ids).Scan(&n)
	return n, err
}

// I4Config says what [Ledger.WatchI4] watches.
type I4Config struct {
	Slot string
	// Delivered says whether the sink acked id (delivered it durably).
	Delivered func(id string) bool
	// CaughtUp, when set, is called after each read of the slot and before judging it: it returns once
	// Delivered knows everything the sink acked so far (a topic consumer read up to the end offsets), or
	// false to skip the poll (the sink cannot be read).
	CaughtUp func(ctx context.Context) bool
	// Every is the pause between polls (0: 15ms).
	Every time.Duration
}

// I4Watch is a running I4 watcher; see [Ledger.WatchI4]. Safe for concurrent use.
type I4Watch struct {
	polls, violations atomic.Int64
	cancel            context.CancelFunc
	done              chan struct{}
	stop              sync.Once
}

// WatchI4 polls the slot's confirmed_flush_lsn until [I4Watch.Stop] (or the end of t) and fails t for
// every committed message at or below it that was neither delivered nor dead-lettered (I4, "ack means
// delivered"), and for a slot that confirms past its creation while its initial snapshot is pending.
// Messages whose WAL position is unknown are not judged.
func (l *Ledger) WatchI4(t T, c I4Config) *I4Watch {
	return l.watchI4(t, c, l.ReadSlot, l.countDead)
}

func (l *Ledger) watchI4(t T, c I4Config, read func(context.Context, string) (Slot, bool, error),
	countDead func(context.Context, []string) (int, error)) *I4Watch {
	if c.Every == 0 {
		c.Every = 15 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &I4Watch{cancel: cancel, done: make(chan struct{})}
	poll := func() {
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		s, ok, err := read(qctx, c.Slot)
		qcancel()
		if err != nil || !ok {
			return
		}
		if s.SnapshotPending {
			if err := s.Err(); err != nil {
				w.violations.Add(1)
				t.Errorf("%v", err)
			}
			w.polls.Add(1)
			return
		}
		if c.CaughtUp != nil {
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			ok := c.CaughtUp(cctx)
			ccancel()
			if !ok {
				return // the sink cannot be read: nothing to judge by
			}
		}
		if suspects := l.Unacked(s.Confirmed, c.Delivered); len(suspects) > 0 {
			// Acked by being dead-lettered is fine.
			dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
			n, err := countDead(dctx, suspects)
			dcancel()
			if err != nil {
				return
			}
			if missing := len(suspects) - n; missing > 0 {
				w.violations.Add(int64(missing))
				t.Errorf("I4: confirmed_flush_lsn %s passed %d committed messages that were neither delivered nor dead-lettered (e.g. %s)",
					s.Confirmed, missing, suspects[0])
			}
		}
		w.polls.Add(1)
	}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			poll()
			sleep(ctx, c.Every)
		}
	}()
	t.Cleanup(w.Stop)
	return w
}

// Stop ends the watcher and waits for it. It is idempotent.
func (w *I4Watch) Stop() {
	w.stop.Do(func() {
		w.cancel()
		<-w.done
	})
}

// Polls returns how many readings of the slot were judged.
func (w *I4Watch) Polls() int64 { return w.polls.Load() }

// Violations returns how many I4 violations were found (messages, or pending-snapshot readings).
func (w *I4Watch) Violations() int64 { return w.violations.Load() }

func (w *I4Watch) String() string {
	return fmt.Sprintf("I4 polls %d, violations %d", w.Polls(), w.Violations())
}
