package replication

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
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
	MaxInstanceIDLen = 63 - len(appNamePrefix)
	// MaxIdentifierLen is PostgreSQL's identifier limit (NAMEDATALEN-1).
	MaxIdentifierLen = 63

	appNamePrefix  = "pgoutbox-"
	connectTimeout = 10 * time.Second
)

var (
	slotNameRE   = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	schemaNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Config holds the settings of a Stream. Zero durations and sizes get the defaults above when
// Validate (called by New) runs; negative ones are errors.
type Config struct {
	// Slot is the logical replication slot; it must match ^[a-z0-9_]{1,63}$ (it is interpolated into
	// replication commands). Default: "pgoutbox_" + lower(Schema).
	Slot string
	// Publication is the pgoutput publication (quoted in START_REPLICATION). Default: "pgoutbox_" + Schema.
	Publication string
	// Schema is the schema holding pkg_outbox and pkg_outbox_relay. Required.
	Schema string
	// InstanceID names this process: application_name is "pgoutbox-" + InstanceID. It must be unique
	// among running instances and stable across restarts of one instance (a pod or host name), so that
	// a stale walsender of our own is recognised and terminated. Default: hostname-pid.
	InstanceID string
	// CreateSlot lets the first start create the permanent pgoutput slot and record it in
	// pkg_outbox_relay. DefaultConfig sets it; the zero Config does not create slots (ErrSlotMissing).
	CreateSlot bool
	// Streaming asks pgoutput for protocol v2 with streaming of in-progress transactions; otherwise v1.
	Streaming bool
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
	if !slotNameRE.MatchString(name) {
		return fmt.Errorf("%w: Slot %q must match %s (1 to 63 of a-z, 0-9, _)", ErrInvalidConfig, truncate(name, 80), slotNameRE)
	}
	return nil
}

// Validate fills zero fields with their defaults and returns an error naming the first invalid
// field and its limit. It wraps ErrInvalidConfig.
func (c *Config) Validate() error {
	switch {
	case c.Schema == "":
		return fmt.Errorf("%w: Schema is required", ErrInvalidConfig)
	case len(c.Schema) > MaxIdentifierLen || !schemaNameRE.MatchString(c.Schema):
		return fmt.Errorf("%w: Schema %q must match %s and be at most %d bytes", ErrInvalidConfig, truncate(c.Schema, 80), schemaNameRE, MaxIdentifierLen)
	}
	if c.Slot == "" {
		c.Slot = strings.ToLower("pgoutbox_" + c.Schema)
	}
	if err := ValidateSlotName(c.Slot); err != nil {
		return err
	}
	if c.Publication == "" {
		c.Publication = "pgoutbox_" + c.Schema
	}
	if len(c.Publication) > MaxIdentifierLen || strings.ContainsRune(c.Publication, 0) {
		return fmt.Errorf("%w: Publication %q must be at most %d bytes without NUL", ErrInvalidConfig, truncate(c.Publication, 80), MaxIdentifierLen)
	}
	if c.InstanceID == "" {
		c.InstanceID = defaultInstanceID()
	}
	if len(c.InstanceID) > MaxInstanceIDLen {
		return fmt.Errorf("%w: InstanceID %q is %d bytes, the limit is %d", ErrInvalidConfig, truncate(c.InstanceID, 80), len(c.InstanceID), MaxInstanceIDLen)
	}
	for _, r := range c.InstanceID {
		if r < 0x20 || r > 0x7e {
			return fmt.Errorf("%w: InstanceID %q must be printable ASCII (application_name)", ErrInvalidConfig, c.InstanceID)
		}
	}
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
func (c *Config) appName() string { return appNamePrefix + c.InstanceID }

func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	pid := fmt.Sprintf("-%d", os.Getpid())
	if len(host)+len(pid) > MaxInstanceIDLen {
		host = host[:MaxInstanceIDLen-len(pid)]
	}
	return host + pid
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
