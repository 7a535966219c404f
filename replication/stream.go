package replication

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Stream reads a pgoutput replication slot and sends its messages, in batches, on Run's channel.
//
// One goroutine (Run's) owns the replication connection; SetFlushed, State, Stats and Close are safe
// for concurrent use from any goroutine. Run may be called once.
type Stream struct {
	cfg   Config
	conns *connConfigs
	log   *zap.Logger

	state            atomic.Int32
	reconnects       atomic.Uint64
	lastStatusLSN    atomic.Uint64
	lastStatusTime   atomic.Int64
	lastServerWALEnd atomic.Uint64

	flushMu     sync.Mutex
	flushed     pglogrepl.LSN
	flushedTime time.Time     // commit time of flushed, zero when unknown
	flushVer    uint64        // bumped on every change, for persistence
	snapshotAt  pglogrepl.LSN // own initial snapshot not yet complete: confirm at most this

	snapshotFn    SnapshotFunc
	beforeConnect func(context.Context, *pgx.ConnConfig) error

	// Owned by Run's goroutine.
	startLSNDone    bool
	delivered       bool          // a batch was sent since the last Disconnected event
	received        pglogrepl.LSN // highest WALStart of the XLogData handed over, on timeline
	systemID        string        // IDENTIFY_SYSTEM of the server streamed last
	timeline        int32
	warnedSyncSlots bool

	mu       sync.Mutex
	started  bool
	closed   bool
	cancel   context.CancelFunc
	done     chan struct{}
	finalErr error
}

// Option sets an optional dependency of a Stream.
type Option func(*Stream)

// WithLogger sets the logger (default zap.NewNop()); the stream logs under the name "replication".
func WithLogger(l *zap.Logger) Option {
	return func(s *Stream) {
		if l != nil {
			s.log = l
		}
	}
}

// WithCreateSlot overrides Config.CreateSlot.
func WithCreateSlot(create bool) Option { return func(s *Stream) { s.cfg.CreateSlot = create } }

// WithBeforeConnect sets a hook called before every connection the stream opens (regular and
// replication) with a copy of its configuration, like pgxpool.Config.BeforeConnect: for example to set
// a fresh password or token. replication and application_name are set after it returns.
func WithBeforeConnect(fn func(context.Context, *pgx.ConnConfig) error) Option {
	return func(s *Stream) { s.beforeConnect = fn }
}

// New validates cfg and returns a Stream for the database of connString (a postgres URL or DSN for a
// regular connection; the replication connection is derived from it). New does no I/O.
func New(connString string, cfg Config, opts ...Option) (*Stream, error) {
	conn, err := pgx.ParseConfig(connString)
	if err != nil {
		// pgx's parse errors never include the password.
		return nil, fmt.Errorf("%w: connection string: %w", ErrInvalidConfig, err)
	}
	return NewFromConfig(conn, cfg, opts...)
}

// NewFromConfig validates cfg and returns a Stream for the database conn connects to, for example a
// pgxpool's ConnConfig. conn is copied: its TLS settings, password, dialer, pgconn hooks
// (ValidateConnect, AfterConnect, OnNotice, ...) and run-time parameters reach every connection the
// stream opens; the stream sets application_name ("pgoutbox-" + InstanceID) on all of them and
// replication=database on the replication connection. New does no I/O.
func NewFromConfig(conn *pgx.ConnConfig, cfg Config, opts ...Option) (*Stream, error) {
	if conn == nil {
		return nil, fmt.Errorf("%w: nil connection config", ErrInvalidConfig)
	}
	s := &Stream{cfg: cfg, log: zap.NewNop(), done: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if err := s.cfg.Validate(); err != nil {
		return nil, err
	}
	s.conns = newConnConfigs(conn, s.cfg.appName(), s.beforeConnect)
	s.log = s.log.Named("replication").With(zap.String("slot", s.cfg.Slot), zap.String("instance", s.cfg.InstanceID))
	s.state.Store(int32(Stopped))
	return s, nil
}

// Config returns the validated configuration (defaults filled in).
func (s *Stream) Config() Config { return s.cfg }

// Run streams the slot and sends batches of events on out until ctx is done (Run returns nil), Close
// is called (nil), or a fatal error happens: *SlotLostError, ErrPublicationMissing, ErrSlotMissing,
// ErrSlotMismatch, ErrBehindConfirmed, ErrRelayTableMissing, ErrFailoverUnsupported, ErrDiverged, an
// authentication or permission error. A server in recovery (a standby) is transient.
// Transient errors (network, server restart, walsender terminated, read timeout) make it send a
// Disconnected event and reconnect with backoff, resuming from the slot's confirmed position.
//
// Batches are handed over: the receiver owns each slice and its Data. While out is blocked, status
// updates keep the connection alive.
func (s *Stream) Run(ctx context.Context, out chan<- []Event) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.started = true
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.mu.Unlock()
	defer func() {
		cancel()
		s.setState(Stopped)
		close(s.done)
	}()

	s.log.Info("replication stream starting", zap.String("publication", s.cfg.Publication),
		zap.String("schema", s.cfg.Schema), zap.String("server", s.conns.redacted))
	attempt := 0
	for {
		s.setState(Connecting)
		streamed, err := s.session(ctx, out)
		if isFatal(err) {
			s.log.Error("replication stream stopped by a fatal error", zap.Error(err))
			return err
		}
		if ctx.Err() != nil {
			s.log.Info("replication stream stopped")
			return nil
		}
		if streamed {
			attempt = 0
		}
		s.reconnects.Add(1)
		wait := backoff(attempt, s.cfg.ReconnectMin, s.cfg.ReconnectMax)
		attempt++
		s.setState(Backoff)
		s.log.Warn("replication connection lost, reconnecting", zap.Error(err), zap.Duration("backoff", wait),
			zap.Int("attempt", attempt))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			s.log.Info("replication stream stopped")
			return nil
		case <-t.C:
		}
	}
}

// Close stops Run: it sends a last status update with SetFlushed's position, records it in
// pkg_outbox_relay, closes the connections and waits for Run to return (or ctx). It returns the error
// of that last status update, if any. Close is idempotent; after it, Run returns ErrClosed.
func (s *Stream) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	started, cancel := s.started, s.cancel
	s.mu.Unlock()
	if !started {
		return nil
	}
	cancel()
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finalErr
}

// SetFlushed sets the position the next status update confirms (write = flush = apply = lsn) and
// that is recorded in pkg_outbox_relay with commitTime (the commit time of the transaction ending at
// lsn; zero when unknown). Everything up to lsn must be durably handled: PostgreSQL may discard it.
// It is monotonic: a position at or behind the current one is ignored.
func (s *Stream) SetFlushed(lsn pglogrepl.LSN, commitTime time.Time) { s.raiseFlushed(lsn, commitTime) }

// raiseFlushed moves the flushed position forward. At connect it is also raised to the slot's
// confirmed position, so that no status update ever reports less than PostgreSQL already has.
func (s *Stream) raiseFlushed(lsn pglogrepl.LSN, commitTime time.Time) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if lsn <= s.flushed {
		return
	}
	s.flushed, s.flushedTime = lsn, commitTime
	s.flushVer++
}

// flushedPos is the position status updates confirm: SetFlushed's, but never past the slot's
// creation while this stream's initial snapshot is not complete.
func (s *Stream) flushedPos() (pglogrepl.LSN, time.Time, uint64) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.snapshotAt != 0 && s.flushed > s.snapshotAt {
		return s.snapshotAt, time.Time{}, s.flushVer
	}
	return s.flushed, s.flushedTime, s.flushVer
}

// State returns the current state.
func (s *Stream) State() State { return State(s.state.Load()) }

func (s *Stream) setState(st State) { s.state.Store(int32(st)) }

// Stats returns the stream's counters.
func (s *Stream) Stats() Stats {
	st := Stats{
		Reconnects:       s.reconnects.Load(),
		LastStatusLSN:    pglogrepl.LSN(s.lastStatusLSN.Load()),
		LastServerWALEnd: pglogrepl.LSN(s.lastServerWALEnd.Load()),
	}
	if ns := s.lastStatusTime.Load(); ns != 0 {
		st.LastStatusTime = time.Unix(0, ns)
	}
	st.FlushedLSN, _, _ = s.flushedPos()
	return st
}

// backoff returns the wait before reconnect attempt n: min·2ⁿ capped at max, with jitter over its
// upper half.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1) //nolint:gosec // jitter needs no cryptographic randomness
}
