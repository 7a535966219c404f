package replication

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// Defaults applied by Config.Validate to zero fields.
const (
	DefaultStatusInterval           = time.Second
	DefaultReadTimeout              = 30 * time.Second
	DefaultReconnectMin             = 100 * time.Millisecond
	DefaultReconnectMax             = 10 * time.Second
	DefaultStandbyPoll              = time.Second
	DefaultMaxBatch                 = 512
	DefaultPublicationCheckInterval = 30 * time.Second

	// MaxBatchLimit is the largest MaxBatch accepted.
	MaxBatchLimit = 1 << 16
	// MaxInstanceIDLen keeps application_name ("pgoutbox-" + InstanceID) within PostgreSQL's 63 bytes.
	MaxInstanceIDLen = names.MaxInstanceIDLen
	// MaxIdentifierLen is PostgreSQL's identifier limit (NAMEDATALEN-1).
	MaxIdentifierLen = names.MaxIdentifierLen

	connectTimeout = 10 * time.Second
)

// Config holds the settings of a Stream. Zero durations and sizes get the defaults above when
// Validate (called by New) runs; negative ones are errors.
type Config struct {
	// Slot is the logical replication slot; it must match ^[a-z0-9_]{1,63}$ (it is interpolated into
	// replication commands). Default: "pgoutbox_" + lower(Schema).
	Slot string
	// Publication is the pgoutput publication (quoted in START_REPLICATION). Default: "pgoutbox_" + Schema.
	Publication string
	// Schema is the schema holding pkg_outbox and pkg_outbox_relay. Required; the same rule as
	// names.ValidateSchema (at most 54 bytes, so that "pgoutbox_<schema>" fits 63).
	Schema string
	// InstanceID names this process: application_name is "pgoutbox-" + InstanceID. It must be unique
	// among running instances and stable across restarts of one instance (a pod or host name), so that
	// a stale walsender of our own is recognised and terminated. At most MaxInstanceIDLen bytes of
	// printable ASCII without spaces. Default: hostname-pid (a long host name is cut and hashed, the
	// pid kept).
	InstanceID string
	// CreateSlot lets the first start create the permanent pgoutput slot and record it in
	// pkg_outbox_relay. DefaultConfig sets it; the zero Config does not create slots (ErrSlotMissing).
	CreateSlot bool
	// Failover creates the slot as a failover slot (PostgreSQL 17+), which a physical standby with
	// sync_replication_slots = on keeps in sync, so that the relay continues on the standby after a
	// promotion; an existing slot without it gets it (ALTER_REPLICATION_SLOT). On an older server the
	// stream stops with ErrFailoverUnsupported.
	Failover bool
	// Streaming asks pgoutput for protocol v2 with streaming of in-progress transactions; otherwise v1.
	Streaming bool
	// Messages asks pgoutput for logical decoding messages (pg_logical_emit_message) besides the
	// publication's rows: START_REPLICATION gets messages 'true'. It needs PostgreSQL 14 or later;
	// an older server is ErrUnsupportedServer when the stream starts.
	Messages bool
	// StatusInterval is the period of standby status updates (also sent whenever the server asks)
	// and of persisting the confirmed position to pkg_outbox_relay.
	StatusInterval time.Duration
	// ReadTimeout: no message at all (not even a keepalive, which the stream requests when the
	// connection is quiet) for this long means the connection is dead; the stream reconnects.
	ReadTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff (with jitter) between reconnects.
	ReconnectMin, ReconnectMax time.Duration
	// StandbyPoll is how often a standby checks whether the slot became free.
	StandbyPoll time.Duration
	// MaxBatch is the most events in one batch sent on Run's channel.
	MaxBatch int
	// PublicationCheckInterval is how often the publication is checked while streaming.
	PublicationCheckInterval time.Duration
	// StartLSN, when non-zero, moves the slot forward to this position (pg_replication_slot_advance)
	// before the first START_REPLICATION; a position behind the slot's confirmed_flush_lsn is an error.
	// Zero streams from the slot's confirmed position.
	StartLSN pglogrepl.LSN
}

// DefaultConfig returns the defaults for schema, with CreateSlot set.
func DefaultConfig(schema string) Config {
	c := Config{Schema: schema, CreateSlot: true}
	_ = c.Validate() // fills the defaults; errors are reported again by New
	return c
}

// ValidateSlotName reports whether name is a slot name pgoutbox accepts: 1 to 63 characters out of
// lower-case letters, digits and underscores.
func ValidateSlotName(name string) error {
	if err := names.ValidateSlot(name); err != nil {
		return fmt.Errorf("%w: Slot: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Validate fills zero fields with their defaults and returns an error naming the first invalid
// field and its limit. It wraps ErrInvalidConfig.
func (c *Config) Validate() error {
	if err := names.ValidateSchema(c.Schema); err != nil {
		return fmt.Errorf("%w: Schema: %w", ErrInvalidConfig, err)
	}
	if c.Slot == "" {
		c.Slot = names.Slot(c.Schema)
	}
	if err := ValidateSlotName(c.Slot); err != nil {
		return err
	}
	if c.Publication == "" {
		c.Publication = names.Publication(c.Schema)
	}
	if err := names.ValidatePublication(c.Publication); err != nil {
		return fmt.Errorf("%w: Publication: %w", ErrInvalidConfig, err)
	}
	if c.InstanceID == "" {
		c.InstanceID = names.DefaultInstanceID()
	}
	if err := names.ValidateInstanceID(c.InstanceID); err != nil {
		return fmt.Errorf("%w: InstanceID: %w", ErrInvalidConfig, err)
	}
	return c.validateDurations()
}

// validateDurations fills and checks the durations and MaxBatch.
func (c *Config) validateDurations() error {
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"StatusInterval", &c.StatusInterval, DefaultStatusInterval},
		{"ReadTimeout", &c.ReadTimeout, DefaultReadTimeout},
		{"ReconnectMin", &c.ReconnectMin, DefaultReconnectMin},
		{"ReconnectMax", &c.ReconnectMax, DefaultReconnectMax},
		{"StandbyPoll", &c.StandbyPoll, DefaultStandbyPoll},
		{"PublicationCheckInterval", &c.PublicationCheckInterval, DefaultPublicationCheckInterval},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return fmt.Errorf("%w: %s is %s, it must not be negative", ErrInvalidConfig, d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.ReadTimeout < 2*c.StatusInterval {
		return fmt.Errorf("%w: ReadTimeout (%s) must be at least twice StatusInterval (%s)", ErrInvalidConfig, c.ReadTimeout, c.StatusInterval)
	}
	if c.ReconnectMin > c.ReconnectMax {
		return fmt.Errorf("%w: ReconnectMin (%s) must not exceed ReconnectMax (%s)", ErrInvalidConfig, c.ReconnectMin, c.ReconnectMax)
	}
	switch {
	case c.MaxBatch < 0 || c.MaxBatch > MaxBatchLimit:
		return fmt.Errorf("%w: MaxBatch is %d, it must be between 1 and %d", ErrInvalidConfig, c.MaxBatch, MaxBatchLimit)
	case c.MaxBatch == 0:
		c.MaxBatch = DefaultMaxBatch
	}
	return nil
}

// appName is the application_name of both connections.
func (c *Config) appName() string { return names.ApplicationName(c.InstanceID) }
