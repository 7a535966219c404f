package outbox

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
)

// PositionSink is a [Sink] that stores the relay's delivered position together with what it delivers,
// atomically, so that a restarted relay skips what it already delivered instead of delivering it again
// (exactly-once delivery, e.g. the Kafka sink with transactions). The relay finds it among the sinks
// given with [WithSink] and [WithDefaultSink]; a plain Sink is at-least-once.
//
// The position a sink stores must describe a set of records, not a prefix: lanes deliver different keys
// out of commit order and a parked key holds its records while later ones are delivered. A position is
// correct when every record it reports delivered is either below a watermark the relay reported (see
// [ResumeInfo.Watermark]: acked, whatever its destination) or was delivered by this sink in the same
// atomic write as the position.
type PositionSink interface {
	Sink
	// Resume is called once per relay, when it holds the slot and before it routes any record (the
	// initial snapshot's included); a new relay with the same sink (one started again after a failure)
	// calls it again, and the sink then starts over from its stored position. It returns the predicate of the records the sink already delivered:
	// the relay skips them (neither sent nor counted in flight, as if acked at once). A nil predicate skips
	// nothing. An error wrapping ErrUnavailable is retried with backoff; any other error stops the relay.
	// The predicate is called from the relay's decode goroutine only.
	Resume(ctx context.Context, info ResumeInfo) (delivered func(*Record) bool, err error)
	// Confirmable is called each time the relay would confirm w to the slot (every record with a commit
	// LSN below w is acked) and returns what the relay confirms instead: the largest watermark the sink
	// has stored durably, at most w. The slot thus never passes the stored position. It must be safe for
	// concurrent use and must not block.
	Confirmable(w pglogrepl.LSN) pglogrepl.LSN
}

// ResumeInfo is what [PositionSink.Resume] learns of the relay.
type ResumeInfo struct {
	// Slot is the replication slot's name.
	Slot string
	// SystemID is the database cluster's system identifier (pg_control_system()), the same on a physical
	// standby: with Slot it names the stream the positions are positions in. Empty when the relay's role
	// may not read it.
	SystemID string
	// Timeline is the server's current timeline (0 when unknown). It changes when a standby is promoted
	// or a backup is restored: positions stored on another timeline may name transactions this one never
	// had at the same LSNs.
	Timeline uint32
	// Confirmed is the slot's confirmed_flush_lsn when the relay resumed: PostgreSQL sends every
	// transaction that ends after it again, and none that ends at or before it.
	Confirmed pglogrepl.LSN
	// Snapshot says the relay resumes in the initial snapshot of a slot it just created (or re-created
	// because an earlier snapshot never completed): a stored position of an earlier slot is then behind
	// the new one, and the snapshot's rows carry the new slot's consistent point as commit LSN.
	Snapshot bool
	// Watermark returns the relay's current watermark w: every record whose CommitLSN is below w is acked
	// (delivered by its sink or handler, dead-lettered, or skipped). It is monotonic and safe to call from
	// any goroutine at any time.
	Watermark func() pglogrepl.LSN
}

// positions is the relay's side of its PositionSinks.
type positions struct {
	sinks   []PositionSink
	mu      sync.Mutex // held by resume
	resumed atomic.Bool
	skip    []func(*Record) bool // written once by resume, before resumed is set
	skipped atomic.Int64
}

// collectPositionSinks returns the PositionSinks among the relay's sinks, each once.
func collectPositionSinks(cfg *relayConfig) []PositionSink {
	var out []PositionSink
	add := func(s Sink) {
		ps, ok := s.(PositionSink)
		if !ok {
			return
		}
		comparable := reflect.TypeOf(ps).Comparable() // == on a func or map type would panic
		for _, have := range out {
			if comparable && reflect.TypeOf(have) == reflect.TypeOf(ps) && have == ps {
				return
			}
		}
		out = append(out, ps)
	}
	for _, s := range cfg.sinks {
		add(s)
	}
	if cfg.defaultSink != nil {
		add(cfg.defaultSink)
	}
	return out
}

// resume calls Resume on every PositionSink once, before the first record is routed; sinks that are
// unavailable are retried with backoff until ctx ends.
func (r *Relay) resume(ctx context.Context, snapshot bool) error {
	p := &r.positions
	if len(p.sinks) == 0 || p.resumed.Load() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed.Load() {
		return nil
	}
	done := make([]bool, len(p.sinks)) // resumed already: a retry resumes only the others
	for attempt := 1; ; attempt++ {
		info, err := r.resumeInfo(ctx)
		info.Snapshot = snapshot
		for i, s := range p.sinks {
			if err != nil {
				break
			}
			if done[i] {
				continue
			}
			var d func(*Record) bool
			if d, err = s.Resume(ctx, info); err == nil {
				done[i] = true
				if d != nil {
					p.skip = append(p.skip, d)
				}
			}
		}
		switch {
		case err == nil:
			p.resumed.Store(true)
			r.log.Info("resumed from the sinks' stored positions", zap.String("slot", info.Slot),
				zap.String("confirmed_lsn", info.Confirmed.String()), zap.Int("sinks", len(p.sinks)))
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case IsFatal(err) || !IsUnavailable(err): // Fatal also wraps ErrUnavailable
			err = fmt.Errorf("outbox: resume from the sink's stored position: %w", err)
			r.fail(err)
			return err
		}
		wait := max(r.backoff(attempt), RetryAfterOf(err))
		r.log.Warn("resume: sink unavailable, retrying", zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// resumeInfo reads the slot's confirmed position and the system identifier (left empty, with a
// warning, when pg_control_system() is not executable by the relay's role).
func (r *Relay) resumeInfo(ctx context.Context) (ResumeInfo, error) {
	info := ResumeInfo{Slot: r.cfg.slot, Watermark: r.tracker.Flushed}
	if err := r.pool.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&info.SystemID); err != nil {
		if ctx.Err() != nil {
			return info, ctx.Err()
		}
		r.log.Warn("resume: cannot read the database system identifier (pg_control_system())", zap.Error(err))
	}
	var walFile string // its first 8 hex digits are the timeline
	if err := r.pool.QueryRow(ctx, `SELECT pg_walfile_name(pg_current_wal_lsn())`).Scan(&walFile); err == nil && len(walFile) >= 8 {
		if tl, err := strconv.ParseUint(walFile[:8], 16, 32); err == nil {
			info.Timeline = uint32(tl)
		}
	}
	var confirmed *string
	err := r.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.slot).Scan(&confirmed)
	if err != nil {
		return info, Unavailable(fmt.Errorf("outbox: read the confirmed position of slot %s: %w", r.cfg.slot, err))
	}
	if confirmed == nil {
		return info, fmt.Errorf("outbox: slot %s has no confirmed position", r.cfg.slot)
	}
	if info.Confirmed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
		return info, fmt.Errorf("outbox: slot %s: confirmed_flush_lsn %q: %w", r.cfg.slot, *confirmed, err)
	}
	return info, nil
}

// skipDelivered reports whether a PositionSink already delivered rec; the router then drops it.
func (r *Relay) skipDelivered(rec *Record) bool {
	p := &r.positions
	for _, d := range p.skip {
		if d(rec) {
			p.skipped.Add(1)
			return true
		}
	}
	return false
}

// positionSettle bounds how long Stop waits for the PositionSinks to store the final watermark.
const positionSettle = 2 * time.Second

// awaitConfirmable lets Stop confirm the final watermark: it waits, until ctx ends or positionSettle
// passes, for the PositionSinks to have stored it (they are asked through Confirmable).
func (r *Relay) awaitConfirmable(ctx context.Context) {
	p := &r.positions
	if len(p.sinks) == 0 || !p.resumed.Load() {
		return
	}
	w := r.tracker.Flushed()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for deadline := time.Now().Add(positionSettle); r.confirmable(w) < w && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// confirmable returns what the relay may confirm of the watermark w: w itself without PositionSinks,
// otherwise the smallest of what they stored durably (nothing before they resumed).
func (r *Relay) confirmable(w pglogrepl.LSN) pglogrepl.LSN {
	p := &r.positions
	if len(p.sinks) == 0 {
		return w
	}
	if !p.resumed.Load() {
		return 0
	}
	for _, s := range p.sinks {
		w = min(w, s.Confirmable(w))
	}
	return w
}
