package outbox

import (
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Option configures a Relay started with Start.
type Option func(*relayConfig)

type relayConfig struct {
	maxAttempts     int
	backoffMin      time.Duration
	backoffMax      time.Duration
	slot            string
	createSlot      bool
	sinks           map[Destination]Sink
	defaultSink     Sink
	logger          *zap.Logger
	lanes           int
	maxInFlight     int
	maxParkedPerKey int
	maxParked       int
	batchSize       int
	streaming       bool
	failover        bool
	instanceID      string
	statusInterval  time.Duration
	readTimeout     time.Duration
	initialSnapshot bool
	retention       time.Duration
	pruneInterval   time.Duration
	pruneBatch      int
	handlerTimeout  time.Duration
	spillDir        string
	streamMemory    int
	maxPayloadBytes int
	observer        Observer
	logicalMessages bool
}

func defaultRelayConfig() relayConfig {
	return relayConfig{
		maxAttempts:     10,
		backoffMin:      100 * time.Millisecond,
		backoffMax:      30 * time.Second,
		createSlot:      true,
		initialSnapshot: true,
		sinks:           map[Destination]Sink{},
		logger:          zap.NewNop(),
		lanes:           16,
		maxInFlight:     20_000,
		maxParkedPerKey: 5_000,
		maxParked:       10_000,
		batchSize:       500,
		statusInterval:  time.Second,
		retention:       24 * time.Hour,
		pruneInterval:   time.Minute,
		pruneBatch:      1000,
		handlerTimeout:  30 * time.Second,
		streamMemory:    16 << 20,
	}
}

func (c *relayConfig) validate() error {
	switch {
	case c.maxAttempts < 1:
		return fmt.Errorf("outbox: WithMaxAttempts(%d): must be at least 1", c.maxAttempts)
	case c.backoffMin <= 0 || c.backoffMax < c.backoffMin:
		return fmt.Errorf("outbox: WithRetryBackoff(%s, %s): need 0 < min <= max", c.backoffMin, c.backoffMax)
	case c.lanes < 1 || c.lanes > 4096:
		return fmt.Errorf("outbox: WithLanes(%d): must be between 1 and 4096", c.lanes)
	case c.maxInFlight < 1:
		return fmt.Errorf("outbox: WithMaxInFlight(%d): must be at least 1", c.maxInFlight)
	case c.maxParkedPerKey < 1:
		return fmt.Errorf("outbox: WithMaxParkedPerKey(%d): must be at least 1", c.maxParkedPerKey)
	case c.maxParked < 1:
		return fmt.Errorf("outbox: WithMaxParked(%d): must be at least 1", c.maxParked)
	case c.batchSize < 1:
		return fmt.Errorf("outbox: WithBatchSize(%d): must be at least 1", c.batchSize)
	case c.statusInterval < 10*time.Millisecond:
		return fmt.Errorf("outbox: WithStatusInterval(%s): must be at least 10ms", c.statusInterval)
	case c.readTimeout < 0 || (c.readTimeout > 0 && c.readTimeout < 2*c.statusInterval):
		return fmt.Errorf("outbox: WithReadTimeout(%s): must be at least twice the status interval (%s)", c.readTimeout, c.statusInterval)
	case c.readTimeout == 0 && 2*c.statusInterval > 30*time.Second:
		return fmt.Errorf("outbox: WithStatusInterval(%s): above 15s needs WithReadTimeout of at least twice it (the default read timeout is 30s)", c.statusInterval)
	case c.retention < 0:
		return fmt.Errorf("outbox: WithRetention(%s): must not be negative", c.retention)
	case c.streamMemory < 1:
		return fmt.Errorf("outbox: WithStreamMemoryLimit(%d): must be at least 1 byte", c.streamMemory)
	}
	return nil
}

// WithMaxAttempts sets how many times a message is tried before it is dead-lettered (default 10).
func WithMaxAttempts(n int) Option { return func(c *relayConfig) { c.maxAttempts = n } }

// WithRetryBackoff sets the capped exponential backoff between attempts (defaults 100ms and 30s);
// each wait gets up to 20% jitter.
func WithRetryBackoff(min, max time.Duration) Option {
	return func(c *relayConfig) { c.backoffMin, c.backoffMax = min, max }
}

// WithSlotName sets the replication slot (default "pgoutbox_<schema>" in lower case); it must match
// ^[a-z0-9_]{1,63}$.
func WithSlotName(name string) Option { return func(c *relayConfig) { c.slot = name } }

// WithCreateSlot(false) forbids creating the slot: Start fails when it does not exist (default true).
func WithCreateSlot(create bool) Option { return func(c *relayConfig) { c.createSlot = create } }

// WithSink routes destination dest to sink s (a Kafka topic, a webhook, stdout). A destination with
// both a handler and a sink uses the sink.
func WithSink(dest Destination, s Sink) Option { return func(c *relayConfig) { c.sinks[dest] = s } }

// WithDefaultSink sends messages whose destination has no handler or sink to s, instead of
// dead-lettering them as unknown. Meant for development (print everything); in production an
// unknown destination is usually a bug that the dead-letter table should show.
func WithDefaultSink(s Sink) Option { return func(c *relayConfig) { c.defaultSink = s } }

// WithLogger sets the logger (default zap.NewNop()); the relay names its children "relay", "replication".
func WithLogger(l *zap.Logger) Option {
	return func(c *relayConfig) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithLanes sets how many keys are delivered in parallel (default 16). Messages of one key always
// share a lane, so they are delivered in commit order.
func WithLanes(n int) Option { return func(c *relayConfig) { c.lanes = n } }

// WithMaxInFlight bounds the messages received but not yet acked (default 20,000): past it the relay
// stops reading the WAL until acks catch up, which bounds memory.
func WithMaxInFlight(n int) Option { return func(c *relayConfig) { c.maxInFlight = n } }

// WithMaxParkedPerKey bounds the records one parked key holds back (default 5,000). A key is parked
// while a record of it waits for its next attempt after a retryable failure: its later records wait
// behind it, in order, and every other key keeps flowing. When one key holds back this many records,
// its lane takes no more and the relay soon stops reading the WAL, rather than let memory grow.
func WithMaxParkedPerKey(n int) Option { return func(c *relayConfig) { c.maxParkedPerKey = n } }

// WithMaxParked bounds the records held back by all parked keys together (default 10,000): past it
// the lanes take no more records until a parked key is released, and the relay stops reading the WAL.
// Parked records also count toward WithMaxInFlight; keeping this below it leaves room for the keys
// that flow.
func WithMaxParked(n int) Option { return func(c *relayConfig) { c.maxParked = n } }

// WithBatchSize sets the most messages a lane hands a Sink in one Send (default 500).
func WithBatchSize(n int) Option { return func(c *relayConfig) { c.batchSize = n } }

// WithStreaming turns on pgoutput protocol v2 streaming of large in-progress transactions (default
// off): PostgreSQL sends a large transaction in chunks while it runs, instead of decoding it after its
// commit; the relay buffers the chunks (WithStreamMemoryLimit, then WithSpillDir) until the
// transaction commits, and drops them when it aborts.
func WithStreaming(on bool) Option { return func(c *relayConfig) { c.streaming = on } }

// WithFailover makes the slot a failover slot (default off; PostgreSQL 17+): a physical standby with
// sync_replication_slots = on keeps a copy of it, so that after the standby's promotion the relay
// continues there from the synchronized position (transactions after it come again, with their ids).
// An existing slot without failover gets it. Give Start a pool on every host with
// target_session_attrs=read-write so that the relay reconnects to whichever is the primary; after each
// reconnect the slot is checked again (missing or invalidated: *replication.SlotLostError). On an older
// server the relay stops with replication.ErrFailoverUnsupported. See docs/daemon.md, "Failover".
func WithFailover(on bool) Option { return func(c *relayConfig) { c.failover = on } }

// WithStreamMemoryLimit bounds the bytes of streamed, uncommitted chunks held in memory (default
// 16 MiB); past it they spill to disk. It matters only with WithStreaming(true).
func WithStreamMemoryLimit(bytes int) Option { return func(c *relayConfig) { c.streamMemory = bytes } }

// WithSpillDir sets the directory where streamed chunks spill (default os.TempDir()). It matters only
// with WithStreaming(true).
func WithSpillDir(dir string) Option { return func(c *relayConfig) { c.spillDir = dir } }

// WithInstanceID names this relay instance; the replication connection's application_name is
// "pgoutbox-<id>" (default: host name and process id).
func WithInstanceID(id string) Option { return func(c *relayConfig) { c.instanceID = id } }

// WithStatusInterval sets how often the confirmed position is reported to PostgreSQL (default 1s).
func WithStatusInterval(d time.Duration) Option { return func(c *relayConfig) { c.statusInterval = d } }

// WithRetention sets how long delivered outbox rows are kept for replay (default 24h; 0 keeps them
// forever), counted from the commit time when track_commit_timestamp is on, else from created_at. A row
// whose transaction committed after the slot's confirmed position is never pruned, so a row goes only
// once it was delivered or dead-lettered.
func WithRetention(d time.Duration) Option { return func(c *relayConfig) { c.retention = d } }

// WithHandlerTimeout bounds one Handler call or Sink.Send (default 30s); a timeout counts as a failure.
// A Handler's ctx is cancelled when its call overruns (context.Cause(ctx) is context.DeadlineExceeded).
func WithHandlerTimeout(d time.Duration) Option { return func(c *relayConfig) { c.handlerTimeout = d } }

// WithObserver receives delivery events, for metrics (see Observer).
func WithObserver(o Observer) Option { return func(c *relayConfig) { c.observer = o } }

// WithReadTimeout sets how long the replication connection may stay silent (not even answering a
// keepalive request) before it counts as dead and is re-established (default 30s; at least twice
// the status interval). It bounds how long a silently broken network path stalls the relay.
func WithReadTimeout(d time.Duration) Option { return func(c *relayConfig) { c.readTimeout = d } }

// WithInitialSnapshot controls what the first start, the one that creates the slot, does with the
// rows already in the outbox table. On (the default) it delivers them first, read from the snapshot
// the slot exports at its creation, so that a message committed before the relay ever ran is
// delivered too (I1); what commits later is streamed, each row exactly once across the two. Off, a
// new slot delivers only what commits after its creation (use it when those rows were delivered by
// other means). A relay that stops before every snapshot row is acked takes the snapshot again at
// its next start (rows of the snapshot may then come twice).
func WithInitialSnapshot(on bool) Option { return func(c *relayConfig) { c.initialSnapshot = on } }
