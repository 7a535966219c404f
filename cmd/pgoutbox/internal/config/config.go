// Package config loads the pgoutbox daemon's configuration from a YAML file, PGOUTBOX_* environment
// variables and command-line settings (precedence: flags > env > file > defaults), and validates it.
// Every error names the offending key (for example "delivery.backoff_min") and where the value came from.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/replication"
	"github.com/pgoutbox/pgoutbox/sink/kafka/topicname"
)

// ErrInvalid wraps every configuration error.
var ErrInvalid = errors.New("config")

// Config is the daemon's whole configuration. The yaml tags are the key names; the environment
// variable of a key is PGOUTBOX_ followed by the key upper-cased with dots as underscores.
type Config struct {
	Database   Database `yaml:"database"`
	Schema     string   `yaml:"schema"`
	Slot       string   `yaml:"slot"`
	InstanceID string   `yaml:"instance_id"`
	CreateSlot bool     `yaml:"create_slot"`
	StartLSN   LSN      `yaml:"start_lsn"`
	Snapshot   bool     `yaml:"initial_snapshot"`
	// LogicalMessages delivers the messages of Enqueue's LogicalMessage transport too (PostgreSQL 14+).
	LogicalMessages bool             `yaml:"logical_messages"`
	Replication     Replication      `yaml:"replication"`
	Streaming       Streaming        `yaml:"streaming"`
	Delivery        Delivery         `yaml:"delivery"`
	Retention       Duration         `yaml:"retention"`
	HTTP            HTTP             `yaml:"http"`
	Readiness       Readiness        `yaml:"readiness"`
	DrainTimeout    Duration         `yaml:"drain_timeout"`
	SlotPoll        Duration         `yaml:"slot_poll_interval"`
	Log             Log              `yaml:"log"`
	Routes          map[string]Route `yaml:"routes"`
	Kafka           Kafka            `yaml:"kafka"`
	NATS            NATS             `yaml:"nats"`
	RabbitMQ        RabbitMQ         `yaml:"rabbitmq"`
	// Name names the outbox in metrics (the outbox label), logs, /readyz and --outbox; default: the
	// schema. Required in each entry of `outboxes`.
	Name string `yaml:"name"`
	// Outboxes is every outbox the daemon runs, each a whole configuration: the entries of the
	// `outboxes` list decoded over the top level, or the top level alone (see outboxes.go). It has no
	// key of its own: Load fills it.
	Outboxes []Config
}

// Database says how to reach PostgreSQL.
type Database struct {
	URL          string `yaml:"url"`
	URLFile      string `yaml:"url_file"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// Streaming configures pgoutput v2 streaming of large in-progress transactions.
type Streaming struct {
	Enabled     bool     `yaml:"enabled"`
	MemoryLimit ByteSize `yaml:"memory_limit"`
	SpillDir    string   `yaml:"spill_dir"`
}

// Replication configures the replication connection.
type Replication struct {
	// StatusInterval is the period of standby status updates (confirming acked positions).
	StatusInterval Duration `yaml:"status_interval"`
	// ReadTimeout: a connection silent this long (not even answering a keepalive request) is re-established.
	ReadTimeout Duration `yaml:"read_timeout"`
	// Failover creates the slot as a PostgreSQL 17 failover slot (synchronized to a standby with
	// sync_replication_slots = on); refused by a server older than 17.
	Failover bool `yaml:"failover"`
}

// Delivery configures retries and concurrency of the relay.
type Delivery struct {
	MaxAttempts    int      `yaml:"max_attempts"`
	BackoffMin     Duration `yaml:"backoff_min"`
	BackoffMax     Duration `yaml:"backoff_max"`
	Lanes          int      `yaml:"lanes"`
	MaxInFlight    int      `yaml:"max_in_flight"`
	BatchSize      int      `yaml:"batch_size"`
	HandlerTimeout Duration `yaml:"handler_timeout"`
	// MaxParkedPerKey and MaxParked bound the messages held back behind a failed message of their key
	// (one key, all keys); past them the relay stops reading the WAL.
	MaxParkedPerKey int `yaml:"max_parked_per_key"`
	MaxParked       int `yaml:"max_parked"`
}

// HTTP configures the metrics and health server.
type HTTP struct {
	Listen string `yaml:"listen"`
}

// Readiness configures /readyz.
type Readiness struct {
	// MaxLagBytes: the slot's lag (current WAL − confirmed_flush_lsn) above it makes /readyz fail; 0 disables.
	MaxLagBytes ByteSize `yaml:"max_lag_bytes"`
	// StandbyReady makes a standby instance report ready (default false: only the streaming one is).
	StandbyReady bool `yaml:"standby_ready"`
	// MaxParkedAge: a key parked (held back behind a failed message) longer than this makes /readyz
	// fail; 0 disables.
	MaxParkedAge Duration `yaml:"max_parked_age"`
}

// Log configures the logger.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Route says where the messages of one destination go: exactly one of Kafka, Webhook, NATS, RabbitMQ,
// Stdout.
type Route struct {
	Kafka    *KafkaRoute    `yaml:"kafka"`
	Webhook  *WebhookRoute  `yaml:"webhook"`
	Stdout   *StdoutRoute   `yaml:"stdout"`
	NATS     *NATSRoute     `yaml:"nats"`
	RabbitMQ *RabbitMQRoute `yaml:"rabbitmq"`
}

// KafkaRoute sends to a topic. A configured Topic always wins over the message's Route; without one,
// each message's Route is the topic, restricted to AllowedTopics when set (exact topic names, or a
// prefix followed by '*' such as "orders.*"). Topic and AllowedTopics are exclusive.
type KafkaRoute struct {
	Topic         string   `yaml:"topic"`
	AllowedTopics []string `yaml:"allowed_topics"`
	// Format, CloudEventsSource, CloudEventsType and DebeziumTypeHeader: see RecordFormat (kafka.go).
	Format             string `yaml:"format"`
	CloudEventsSource  string `yaml:"cloudevents_source"`
	CloudEventsType    string `yaml:"cloudevents_type"`
	DebeziumTypeHeader string `yaml:"debezium_type_header"`
}

// WebhookRoute posts each message to URL (with AppendRoute, plus the message's Route as one escaped
// path segment); see webhook.go.
type WebhookRoute struct {
	URL               string            `yaml:"url"`
	AppendRoute       bool              `yaml:"append_route"`
	Timeout           Duration          `yaml:"timeout"`
	Headers           map[string]string `yaml:"headers"`
	Concurrency       int               `yaml:"concurrency"`
	SigningSecretFile string            `yaml:"signing_secret_file"`
	SigningSecretEnv  string            `yaml:"signing_secret_env"`
	// SigningSecret is read at load from SigningSecretFile or the variable SigningSecretEnv names;
	// it has no key of its own, so it is never written in a configuration file.
	SigningSecret string
	// Format, CloudEventsSource and CloudEventsType: see RecordFormat (nats.go).
	Format            string `yaml:"format"`
	CloudEventsSource string `yaml:"cloudevents_source"`
	CloudEventsType   string `yaml:"cloudevents_type"`
}

// StdoutRoute writes JSON lines to standard output.
type StdoutRoute struct{}

// Kind returns "kafka", "webhook", "stdout", "nats", "rabbitmq" or "" (none set).
func (r Route) Kind() string {
	switch {
	case r.NATS != nil:
		return "nats"
	case r.RabbitMQ != nil:
		return "rabbitmq"
	case r.Kafka != nil:
		return "kafka"
	case r.Webhook != nil:
		return "webhook"
	case r.Stdout != nil:
		return "stdout"
	}
	return ""
}

// Kafka configures the Kafka producer shared by every kafka route of an outbox (each outbox of an
// outboxes list has its own producer).
type Kafka struct {
	Brokers         []string  `yaml:"brokers"`
	ClientID        string    `yaml:"client_id"`
	Acks            string    `yaml:"acks"`
	Version         string    `yaml:"version"`
	Linger          Duration  `yaml:"linger"`
	BatchBytes      ByteSize  `yaml:"batch_bytes"`
	BatchMessages   int       `yaml:"batch_messages"`
	MaxMessageBytes ByteSize  `yaml:"max_message_bytes"`
	Compression     string    `yaml:"compression"`
	ProduceTimeout  Duration  `yaml:"produce_timeout"`
	Retries         int       `yaml:"retries"`
	RetryBackoff    Duration  `yaml:"retry_backoff"`
	DialTimeout     Duration  `yaml:"dial_timeout"`
	ReadTimeout     Duration  `yaml:"read_timeout"`
	WriteTimeout    Duration  `yaml:"write_timeout"`
	TLS             KafkaTLS  `yaml:"tls"`
	SASL            KafkaSASL `yaml:"sasl"`
	// ExactlyOnce turns on Kafka transactions with the position stored in PositionTopic (see
	// docs/daemon.md, "Exactly-once into Kafka"); TransactionalID defaults to one derived from the
	// database and the slot.
	ExactlyOnce     bool     `yaml:"exactly_once"`
	PositionTopic   string   `yaml:"position_topic"`
	TransactionalID string   `yaml:"transactional_id"`
	CommitInterval  Duration `yaml:"commit_interval"`
	CommitRecords   int      `yaml:"commit_records"`
	// TransactionTimeout is transaction.timeout.ms of the exactly-once producer.
	TransactionTimeout Duration `yaml:"transaction_timeout"`
}

// KafkaTLS enables TLS to the brokers.
type KafkaTLS struct {
	Enable             bool   `yaml:"enable"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// KafkaSASL enables SASL: mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
type KafkaSASL struct {
	Mechanism    string `yaml:"mechanism"`
	User         string `yaml:"user"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// Duration is a time.Duration written as "250ms", "5s", "1h30m".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ByteSize is a byte count written as 1048576, "64MiB", "512KiB", "1GB".
type ByteSize int64

// LSN is a WAL position written as "16/B374D848".
type LSN pglogrepl.LSN

// Default returns the configuration every source starts from.
func Default() Config {
	return Config{
		Schema:     "public",
		CreateSlot: true,
		Snapshot:   true,
		Replication: Replication{StatusInterval: Duration(replication.DefaultStatusInterval),
			ReadTimeout: Duration(replication.DefaultReadTimeout)},
		Streaming: Streaming{MemoryLimit: 16 << 20},
		Delivery: Delivery{
			MaxAttempts: 10, BackoffMin: Duration(100 * time.Millisecond), BackoffMax: Duration(30 * time.Second),
			Lanes: 16, MaxInFlight: 20_000, BatchSize: 500, HandlerTimeout: Duration(30 * time.Second),
			MaxParkedPerKey: 5_000, MaxParked: 10_000,
		},
		Retention:    Duration(24 * time.Hour),
		HTTP:         HTTP{Listen: ":9090"},
		Readiness:    Readiness{MaxLagBytes: 256 << 20, MaxParkedAge: Duration(5 * time.Minute)},
		DrainTimeout: Duration(30 * time.Second),
		SlotPoll:     Duration(5 * time.Second),
		Log:          Log{Level: "info", Format: "json"},
		Kafka: Kafka{
			ClientID: "pgoutbox", Acks: "all", Version: "3.0.0", Linger: 0,
			BatchBytes: 1 << 20, MaxMessageBytes: 1_000_000, Compression: "none",
			ProduceTimeout: Duration(10 * time.Second), Retries: 0, RetryBackoff: Duration(250 * time.Millisecond),
			DialTimeout: Duration(10 * time.Second), ReadTimeout: Duration(30 * time.Second), WriteTimeout: Duration(30 * time.Second),
			PositionTopic: "pgoutbox.positions", CommitRecords: 50_000, TransactionTimeout: Duration(time.Minute),
		},
		NATS:     defaultNATS(),
		RabbitMQ: defaultRabbitMQ(),
	}
}

// keyError is an error about one key.
func keyError(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, key, fmt.Sprintf(format, args...))
}

// Validate checks every key that does not need the database. It does not require routes; see
// ValidateRun for what `pgoutbox run` needs on top.
func (c *Config) Validate() error {
	var errs []error
	errs = append(errs, c.validateDatabase()...)
	errs = append(errs, c.validateReplication()...)
	errs = append(errs, c.validateDelivery()...)
	errs = append(errs, c.validateService()...)
	errs = append(errs, c.validateKafka()...)
	errs = append(errs, c.validateNATS()...)
	errs = append(errs, c.validateRabbitMQ()...)
	errs = append(errs, c.validateRoutes()...)
	return errors.Join(errs...)
}

// validateDatabase checks the connection settings and the names: database, schema, slot, instance_id.
func (c *Config) validateDatabase() []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	if c.Database.URL == "" && c.Database.URLFile == "" {
		bad("database.url", "required (or database.url_file; env PGOUTBOX_DATABASE_URL)")
	}
	if c.Database.URL != "" && c.Database.URLFile != "" {
		bad("database.url_file", "set only one of database.url and database.url_file")
	}
	if c.Database.Password != "" && c.Database.PasswordFile != "" {
		bad("database.password_file", "set only one of database.password and database.password_file")
	}
	if err := names.ValidateSchema(c.Schema); err != nil {
		bad("schema", "%v", err)
	}
	if c.Slot != "" {
		if err := replication.ValidateSlotName(c.Slot); err != nil {
			bad("slot", "%q must be 1 to 63 of a-z, 0-9 and _", c.Slot)
		}
	}
	if c.InstanceID != "" {
		if err := names.ValidateInstanceID(c.InstanceID); err != nil {
			bad("instance_id", "%v", err)
		}
	}
	return errs
}

// validateReplication checks the streaming and replication keys.
func (c *Config) validateReplication() []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	if c.Streaming.Enabled && c.Streaming.MemoryLimit <= 0 {
		bad("streaming.memory_limit", "must be positive when streaming.enabled is true")
	}
	if c.Replication.StatusInterval < Duration(10*time.Millisecond) {
		bad("replication.status_interval", "%s: must be at least 10ms", c.Replication.StatusInterval.D())
	}
	if c.Replication.ReadTimeout < 2*c.Replication.StatusInterval {
		bad("replication.read_timeout", "%s: must be at least twice replication.status_interval (%s)",
			c.Replication.ReadTimeout.D(), c.Replication.StatusInterval.D())
	}
	return errs
}

// validateDelivery checks the delivery keys.
func (c *Config) validateDelivery() []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	d := c.Delivery
	if d.MaxAttempts < 1 {
		bad("delivery.max_attempts", "%d: must be at least 1", d.MaxAttempts)
	}
	if d.BackoffMin <= 0 {
		bad("delivery.backoff_min", "%s: must be positive", d.BackoffMin.D())
	}
	if d.BackoffMax < d.BackoffMin {
		bad("delivery.backoff_max", "%s: must be at least delivery.backoff_min (%s)", d.BackoffMax.D(), d.BackoffMin.D())
	}
	if d.Lanes < 1 || d.Lanes > 4096 {
		bad("delivery.lanes", "%d: must be between 1 and 4096", d.Lanes)
	}
	if d.MaxInFlight < 1 {
		bad("delivery.max_in_flight", "%d: must be at least 1", d.MaxInFlight)
	}
	if d.MaxParkedPerKey < 1 {
		bad("delivery.max_parked_per_key", "%d: must be at least 1", d.MaxParkedPerKey)
	}
	if d.MaxParked < 1 {
		bad("delivery.max_parked", "%d: must be at least 1", d.MaxParked)
	}
	if d.BatchSize < 1 {
		bad("delivery.batch_size", "%d: must be at least 1", d.BatchSize)
	}
	if d.HandlerTimeout <= 0 {
		bad("delivery.handler_timeout", "%s: must be positive", d.HandlerTimeout.D())
	}
	return errs
}

// validateService checks how the daemon runs: retention, http, readiness, drain, slot polling, logs.
func (c *Config) validateService() []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	if c.Retention < 0 {
		bad("retention", "%s: must not be negative (0 keeps rows forever)", c.Retention.D())
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		bad("http.listen", "%q is not host:port (for example \":9090\" or \"127.0.0.1:9090\")", c.HTTP.Listen)
	}
	if c.Readiness.MaxLagBytes < 0 {
		bad("readiness.max_lag_bytes", "must not be negative (0 disables the check)")
	}
	if c.Readiness.MaxParkedAge < 0 {
		bad("readiness.max_parked_age", "%s: must not be negative (0 disables the check)", c.Readiness.MaxParkedAge.D())
	}
	if c.DrainTimeout <= 0 {
		bad("drain_timeout", "%s: must be positive", c.DrainTimeout.D())
	}
	if c.SlotPoll < Duration(100*time.Millisecond) {
		bad("slot_poll_interval", "%s: must be at least 100ms", c.SlotPoll.D())
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "%q is not json or console", c.Log.Format)
	}
	return errs
}

func (c *Config) validateKafka() []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	k := c.Kafka
	switch strings.ToLower(k.Acks) {
	case "all", "-1":
	default:
		bad("kafka.acks", "%q is unsafe: only \"all\" (-1) is supported, a message is acked only once every in-sync replica has it", k.Acks)
	}
	for i, b := range k.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil || strings.TrimSpace(b) == "" {
			bad(fmt.Sprintf("kafka.brokers[%d]", i), "%q is not host:port", b)
		}
	}
	switch strings.ToLower(k.Compression) {
	case "", "none", "gzip", "snappy", "lz4", "zstd":
	default:
		bad("kafka.compression", "%q is not none, gzip, snappy, lz4 or zstd", k.Compression)
	}
	switch k.SASL.Mechanism {
	case "":
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if k.SASL.User == "" {
			bad("kafka.sasl.user", "required with kafka.sasl.mechanism %s", k.SASL.Mechanism)
		}
	default:
		bad("kafka.sasl.mechanism", "%q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.SASL.Mechanism)
	}
	if k.SASL.Password != "" && k.SASL.PasswordFile != "" {
		bad("kafka.sasl.password_file", "set only one of kafka.sasl.password and kafka.sasl.password_file")
	}
	if (k.TLS.CertFile == "") != (k.TLS.KeyFile == "") {
		bad("kafka.tls.cert_file", "kafka.tls.cert_file and kafka.tls.key_file must be set together")
	}
	for _, kv := range []struct {
		key string
		d   Duration
	}{{"kafka.produce_timeout", k.ProduceTimeout}, {"kafka.dial_timeout", k.DialTimeout}, {"kafka.read_timeout", k.ReadTimeout}, {"kafka.write_timeout", k.WriteTimeout}} {
		if kv.d <= 0 {
			bad(kv.key, "%s: must be positive", kv.d.D())
		}
	}
	if k.Linger < 0 {
		bad("kafka.linger", "must not be negative")
	}
	if k.Retries < 0 {
		bad("kafka.retries", "must not be negative")
	}
	if k.BatchBytes < 0 {
		bad("kafka.batch_bytes", "must not be negative")
	}
	if k.MaxMessageBytes <= 0 {
		bad("kafka.max_message_bytes", "must be positive")
	}
	return errs
}

func (c *Config) validateRoutes() []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	for _, dest := range c.Destinations() {
		r := c.Routes[dest]
		key := "routes." + dest
		if dest == "" {
			bad("routes", "empty destination name")
			continue
		}
		n := 0
		for _, set := range []bool{r.Kafka != nil, r.Webhook != nil, r.Stdout != nil, r.NATS != nil, r.RabbitMQ != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			bad(key, "set exactly one of kafka, webhook, nats, rabbitmq or stdout (found %d)", n)
			continue
		}
		switch {
		case r.Kafka != nil:
			errs = append(errs, validateKafkaRoute(key+".kafka", r.Kafka)...)
			if len(c.Kafka.Brokers) == 0 {
				bad("kafka.brokers", "required by route %s (env PGOUTBOX_KAFKA_BROKERS, comma-separated)", key)
			}
		case r.Webhook != nil:
			errs = append(errs, validateWebhook(key+".webhook", r.Webhook, c.Delivery.HandlerTimeout)...)
			errs = append(errs, validateFormat(key+".webhook", r.Webhook.Format, r.Webhook.CloudEventsSource)...)
		case r.NATS != nil:
			errs = append(errs, c.validateNATSRoute(key+".nats", r.NATS)...)
		case r.RabbitMQ != nil:
			errs = append(errs, c.validateRabbitMQRoute(key+".rabbitmq", r.RabbitMQ)...)
		}
	}
	return errs
}

// validateKafkaRoute checks a kafka route's topic and allowed_topics (key is "routes.<dest>.kafka").
func validateKafkaRoute(key string, k *KafkaRoute) []error {
	errs := validateKafkaFormat(key, k)
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	if k.Topic != "" {
		if err := topicname.Validate(k.Topic); err != nil {
			bad(key+".topic", "%v", err)
		}
		if k.AllowedTopics != nil {
			bad(key+".allowed_topics", "set only one of %s.topic and %s.allowed_topics: the configured topic always wins, "+
				"allowed_topics restricts the message's Route when no topic is configured", key, key)
		}
		return errs
	}
	if k.AllowedTopics != nil && len(k.AllowedTopics) == 0 {
		bad(key+".allowed_topics", "empty: it would dead-letter every message; leave it out to take any Route as the topic")
	}
	for i, p := range k.AllowedTopics {
		if err := topicname.ValidatePattern(p); err != nil {
			bad(fmt.Sprintf("%s.allowed_topics[%d]", key, i), "%v", err)
		}
	}
	return errs
}

// ValidateRun adds what `pgoutbox run` needs: at least one route, unless dev mode routes to stdout.
func (c *Config) ValidateRun(dev bool) error {
	if len(c.Routes) == 0 && !dev {
		return keyError("routes", "no route configured: map each destination to kafka, webhook, nats, rabbitmq or stdout "+
			"(see docs/daemon.md), or pass --dev to print every message to stdout")
	}
	return nil
}

// Destinations returns the configured destinations, sorted.
func (c *Config) Destinations() []string {
	out := make([]string, 0, len(c.Routes))
	for d := range c.Routes {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// SlotName returns the configured slot or the default for the schema.
func (c *Config) SlotName() string {
	if c.Slot != "" {
		return c.Slot
	}
	return names.Slot(c.Schema)
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}
