package outbox

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox/internal/watermark"
	"github.com/pgoutbox/pgoutbox/replication"
)

// Relay streams committed outbox messages from the WAL and delivers them to handlers and sinks.
// The slot's confirmed position moves only past messages that were acked (delivered or dead-lettered),
// so a relay that stops or crashes resumes without loss. Its methods are safe for concurrent use.
type Relay struct {
	cfg      relayConfig
	schema   string
	pool     *pgxpool.Pool
	handlers map[Destination]Handler
	log      *zap.Logger

	stream  *replication.Stream
	dec     *decoder.Decoder
	tracker *watermark.Tracker
	commits commitLog
	lanes   []*lane
	seed    maphash.Seed
	gate    gate // messages in flight (MaxInFlight)

	// decode-goroutine state
	cols          map[*decoder.Relation]*columnIndex
	cur           *watermark.Tx
	curCommit     time.Time
	curLSN        pglogrepl.LSN
	sentAt        time.Time      // when the walsender sent the event being decoded
	source        SourceObserver // cfg.observer, when it follows the source delay
	skipping      bool
	lastCommitLSN pglogrepl.LSN
	batch         *batcher
	msgPrefix     string // the prefix of this schema's logical messages

	stopDecode  context.CancelFunc // stops reading the WAL at once
	stopReading chan struct{}      // closed by Stop: stop reading at the next transaction boundary
	decodeDone  chan struct{}      // closed when the decode loop has returned
	cancel      context.CancelFunc // stops everything
	done        chan struct{}
	err         error
	stopOnce    sync.Once
	stopped     atomic.Bool

	blockedMu sync.Mutex
	blocked   map[Destination]string

	delivered, deadLettered, failures atomic.Int64
	ignoredPrefix, ignoredNonTx       atomic.Int64 // logical messages not ours
	parkedRecords                     atomic.Int64 // records held back by parked keys, in all lanes
	parkedReport                      parkedReport // status goroutine only
	// writeDeadLetter writes a dead letter and acks it (deadLetter; tests replace it).
	writeDeadLetter func(ctx context.Context, it *item) bool
	snapshotAt      atomic.Uint64 // consistent point of an initial snapshot not yet complete
	positions       positions     // the PositionSinks among the sinks (exactly-once)
	fatal           chan error    // a failure that must end the relay (fail)
}

// Start starts a relay for the outbox in schema: it creates (first start) or reuses the replication
// slot, starts streaming from the slot's confirmed position and delivers each message to the handler
// or sink of its destination. Start returns once the relay streams or waits as a standby; slot, schema
// and publication problems are returned right away. The relay runs until Stop, or until ctx is
// cancelled (a hard stop: nothing is drained; what was not confirmed is re-delivered on the next start).
func Start(ctx context.Context, pool *pgxpool.Pool, schema string, handlers map[Destination]Handler, opts ...Option) (*Relay, error) {
	cfg, err := startConfig(pool, schema, handlers, opts)
	if err != nil {
		return nil, err
	}
	if err := checkMigrated(ctx, pool, schema); err != nil {
		return nil, err
	}
	r, err := newRelay(pool, schema, handlers, cfg)
	if err != nil {
		return nil, err
	}
	streamErr := r.run(ctx)
	if err := r.awaitStreaming(ctx, streamErr); err != nil {
		return nil, err
	}
	return r, nil
}

// startConfig checks Start's arguments and returns the relay settings: defaults, then opts, then the
// names derived from schema.
func startConfig(pool *pgxpool.Pool, schema string, handlers map[Destination]Handler, opts []Option) (relayConfig, error) {
	cfg := defaultRelayConfig()
	if err := validateSchema(schema); err != nil {
		return cfg, err
	}
	if pool == nil {
		return cfg, errors.New("outbox: Start: nil pool")
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	if cfg.slot == "" {
		cfg.slot = names.Slot(schema)
	}
	if cfg.instanceID == "" {
		cfg.instanceID = names.DefaultInstanceID() // always valid, whatever the host name
	}
	if err := names.ValidateInstanceID(cfg.instanceID); err != nil {
		return cfg, fmt.Errorf("outbox: Start: WithInstanceID: %w", err)
	}
	for dest, h := range handlers {
		if h == nil {
			return cfg, fmt.Errorf("outbox: Start: handler for destination %q is nil", dest)
		}
	}
	return cfg, nil
}

// checkMigrated returns ErrNotMigrated when the outbox table of schema does not exist.
func checkMigrated(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	table := names.Table(schema, names.OutboxTable)
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		return fmt.Errorf("outbox: Start: check outbox table: %w", err)
	}
	if !exists {
		return fmt.Errorf("%w: %s does not exist: run outbox.Migrate or apply outbox.GetSchemaSQL(%q) first", ErrNotMigrated, table, schema)
	}
	return nil
}

// newRelay builds a relay that is not running yet: its replication stream, decoder, lanes and batcher.
func newRelay(pool *pgxpool.Pool, schema string, handlers map[Destination]Handler, cfg relayConfig) (*Relay, error) {
	r := &Relay{
		cfg: cfg, schema: schema, pool: pool, handlers: handlers, log: cfg.logger.Named("relay"),
		tracker: watermark.New(0),
		seed:    maphash.MakeSeed(), gate: gate{max: cfg.maxInFlight},
		cols: map[*decoder.Relation]*columnIndex{}, done: make(chan struct{}), blocked: map[Destination]string{},
		stopReading: make(chan struct{}), decodeDone: make(chan struct{}),
		msgPrefix: names.MessagePrefix(schema),
	}
	stream, err := r.newStream()
	if err != nil {
		return nil, err
	}
	dec, err := decoder.New(decoder.Config{Streaming: cfg.streaming, MemoryLimit: cfg.streamMemory, SpillDir: cfg.spillDir})
	if err != nil {
		return nil, err
	}
	r.stream, r.dec = stream, dec
	r.writeDeadLetter = r.deadLetter
	r.positions.sinks, r.fatal = collectPositionSinks(&r.cfg), make(chan error, 1)
	for range cfg.lanes {
		r.lanes = append(r.lanes, newLane(r))
	}
	r.batch = newBatcher(r)
	r.source, _ = cfg.observer.(SourceObserver)
	return r, nil
}

// newStream builds the replication stream. Its connections use the pool's parsed configuration (TLS,
// password, hooks; not its connection string, which lacks what was set in code and holds pool_*
// parameters).
func (r *Relay) newStream() (*replication.Stream, error) {
	cfg := r.cfg
	poolCfg := r.pool.Config()
	streamOpts := []replication.Option{replication.WithLogger(cfg.logger), replication.WithBeforeConnect(poolCfg.BeforeConnect)}
	if cfg.initialSnapshot {
		streamOpts = append(streamOpts, replication.WithSnapshot(r.snapshot))
	}
	return replication.NewFromConfig(poolCfg.ConnConfig, replication.Config{
		Slot:           cfg.slot,
		Publication:    names.Publication(r.schema),
		Schema:         r.schema,
		InstanceID:     cfg.instanceID,
		CreateSlot:     cfg.createSlot,
		Streaming:      cfg.streaming,
		Failover:       cfg.failover,
		Messages:       cfg.logicalMessages,
		StatusInterval: cfg.statusInterval,
		ReadTimeout:    cfg.readTimeout,
	}, streamOpts...)
}

// run starts the relay's goroutines: the replication stream, the decode loop, the lanes, the status
// loop and (with a retention) the prune loop. It returns the channel on which the stream reports how
// its Run ended. The relay runs until Stop, a fatal error or the end of ctx, then closes r.done.
func (r *Relay) run(ctx context.Context) <-chan error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	events := make(chan []replication.Event, 4)
	streamErr := make(chan error, 1)

	g, gctx := errgroup.WithContext(runCtx)
	// Reading stops first on Stop (then the lanes drain), and with everything else when any goroutine
	// fails (a lost slot mid-stream must end the relay, not leave the decoder waiting for events).
	decodeCtx, stopDecode := context.WithCancel(gctx)
	r.stopDecode = stopDecode
	g.Go(func() error {
		err := r.stream.Run(gctx, events)
		streamErr <- err
		if errors.Is(err, replication.ErrClosed) {
			err = nil
		}
		if err != nil && gctx.Err() == nil {
			return fmt.Errorf("outbox: %w", err)
		}
		return nil
	})
	g.Go(func() error { return r.decodeLoop(decodeCtx, events) })
	for _, l := range r.lanes {
		g.Go(func() error { l.run(gctx); return nil })
	}
	g.Go(func() error { r.statusLoop(gctx); return nil })
	g.Go(func() error { return r.failed(gctx) })
	if r.cfg.retention > 0 {
		g.Go(func() error { r.pruneLoop(gctx); return nil })
	}
	go func() {
		select {
		case <-ctx.Done(): // the caller's context ends the relay without draining
			cancel()
		case <-r.done:
		}
	}()
	go func() {
		r.err = g.Wait()
		cancel()
		_ = r.dec.Close()
		close(r.done)
	}()
	return streamErr
}

// fail ends the relay with err (the first one wins), from any goroutine: a PositionSink's Resume that
// failed for good, or a sink that failed itself ([Fatal]).
func (r *Relay) fail(err error) {
	select {
	case r.fatal <- err:
	default:
	}
}

// failed returns the error given to fail, or nil when ctx ends first. It is one of the relay's
// goroutines, so that a failure in the initial snapshot (run by the stream, which would retry it) or in
// a lane ends the relay like one in the decode loop.
func (r *Relay) failed(ctx context.Context) error {
	select {
	case err := <-r.fatal:
		return err
	case <-ctx.Done():
		return nil
	}
}

// awaitStreaming waits until the relay streams, takes its initial snapshot or stands by; if the
// relay fails or ctx ends first, it stops the relay and returns why.
func (r *Relay) awaitStreaming(ctx context.Context, streamErr <-chan error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		switch st := r.stream.State(); st {
		case replication.Streaming, replication.Standby, replication.Snapshot:
			r.log.Info("relay started", zap.String("schema", r.schema), zap.String("slot", r.cfg.slot),
				zap.String("instance", r.cfg.instanceID), zap.String("state", st.String()))
			return nil
		}
		select {
		case err := <-streamErr:
			r.cancel()
			<-r.done
			if err == nil {
				err = r.err // e.g. a PositionSink's Resume failed in the initial snapshot
			}
			if err == nil {
				err = errors.New("outbox: relay stopped before streaming")
			}
			return err
		case <-r.done:
			return r.err
		case <-ctx.Done():
			r.cancel()
			<-r.done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Stop stops reading the WAL, waits until every message in flight is acked (or ctx ends), confirms
// the final position and closes the relay. Messages not acked by then are re-delivered on the next start.
func (r *Relay) Stop(ctx context.Context) error {
	r.stopOnce.Do(func() {
		r.stopped.Store(true)
		close(r.stopReading) // finish the open transaction, then stop reading
		select {
		case <-r.decodeDone:
		case <-ctx.Done():
		}
		r.stopDecode()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
	drain:
		for r.gate.inFlight() > 0 {
			select {
			case <-ctx.Done():
				r.log.Warn("stop: drain timed out, unacked messages will be re-delivered", zap.Int("in_flight", r.gate.inFlight()))
				break drain
			case <-r.done:
				break drain
			case <-t.C:
			}
		}
		r.awaitConfirmable(ctx)
		lsn := r.confirm()
		if err := r.stream.Close(ctx); err != nil {
			r.log.Warn("stop: final status update", zap.Error(err))
		}
		r.log.Info("relay stopped", zap.String("confirmed_lsn", lsn.String()))
		r.cancel()
	})
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return r.err
}

// Wait blocks until the relay has stopped and returns why: nil after Stop, an error after a fatal
// failure (slot lost, publication dropped, decoding error).
func (r *Relay) Wait() error {
	<-r.done
	return r.err
}

// State is what a relay is doing, as [Relay.State] reports it.
type State string

// The states of a relay.
const (
	// StateConnecting: opening connections, checking the slot and the publication.
	StateConnecting State = "connecting"
	// StateSnapshot: the start that created the slot delivers the rows already in the outbox
	// (WithInitialSnapshot).
	StateSnapshot State = "snapshot"
	// StateStreaming: reading the slot and delivering.
	StateStreaming State = "streaming"
	// StateStandby: another instance holds the slot; this one takes over when it is free.
	StateStandby State = "standby"
	// StateBackoff: the connection was lost; reconnecting after a pause.
	StateBackoff State = "backoff"
	// StateStopped: the relay has stopped (Stop, a fatal error, or the end of Start's ctx).
	StateStopped State = "stopped"
)

// State reports what the relay is doing.
func (r *Relay) State() State { return State(r.stream.State().String()) }
