package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/sink/internal/routes"
	"github.com/pgoutbox/pgoutbox/sink/internal/tlsconfig"
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
	"github.com/pgoutbox/pgoutbox/sink/kafka/topicname"
)

// Config holds the Kafka sink's settings. Start from [DefaultConfig]; [New] calls [Config.Validate].
type Config struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// ClientID identifies the producer to the brokers (default "pgoutbox").
	ClientID string
	// Acks must be "all" (the default): a record is acked only once every in-sync replica has it.
	Acks string
	// Topics maps a Destination to its topic. A configured topic always wins: every record of the
	// destination goes there, whatever its Route says. A destination without one takes its topic from
	// each record's Route (see AllowedTopics).
	Topics map[string]string
	// AllowedTopics restricts, per Destination, the topics a record's Route may name when Topics has no
	// topic for the destination: exact topic names, or a prefix followed by '*' ("orders.*" matches
	// "orders.v1" but neither "orders" nor "ordersX"; see [topicname.AllowList]). A Route outside the
	// list fails permanently (the record is dead-lettered with the list in the error). A destination
	// with neither a topic nor an allow-list takes any Route that is a legal topic name. Setting both a
	// topic and an allow-list for one destination is an error: the topic would always win.
	AllowedTopics map[string][]string
	// Formats sets, per Destination, how its records are laid out (see [recordformat]): raw (the
	// default: the payload as the value, the Key as the key, pgoutbox headers), CloudEvents 1.0 in binary
	// mode (ce_… headers, content-type) or structured mode (a JSON envelope as the value) per the Kafka
	// protocol binding, or debezium-outbox (the layout of Debezium's outbox event router: "id" and
	// "eventType" headers). Only the configuration picks a format; a message never does.
	Formats map[string]recordformat.Format
	// KafkaVersion is the lowest broker version the producer assumes (default "3.0.0"; at least 0.11.0,
	// which idempotent producing needs).
	KafkaVersion string

	// Linger is how long records wait to fill a batch (sarama Producer.Flush.Frequency; default 0).
	// With 0 a record goes out as soon as no request is in flight for its partition, and the records
	// that arrive while one is in flight go together in the next request (sarama sends one batch per
	// partition at a time): batches grow with the load by themselves, and BatchBytes and BatchMessages do
	// not apply. A positive linger holds even a lone record that long. Measured here with the relay's
	// pipelined lanes (bench W2/W3): at 5k msgs/s the commit → consumer p50 was 11–15 ms with 0 against
	// 17–24 ms with 10ms, and the 300k-message drain ran at 164k against 137k msgs/s (median of 3).
	// Without the relay (a few large synchronous Sends, BenchmarkKafkaSendLinger) a linger of 10ms still
	// builds larger requests; raise it when the brokers, not the relay, are the bottleneck.
	Linger time.Duration
	// BatchBytes flushes a partition's batch once it holds this many bytes (Flush.Bytes; default 1 MiB).
	BatchBytes int
	// BatchMessages flushes a batch once it holds this many records (Flush.Messages; default 0: no count
	// trigger).
	BatchMessages int
	// MaxMessageBytes is the largest batch the producer builds for one partition, and so the largest
	// record it accepts (Producer.MaxMessageBytes; default 1,000,000, just under the broker default
	// message.max.bytes). Keep it at or below the smallest max.message.bytes of the topics written to.
	MaxMessageBytes int
	// Compression is none (default), gzip, snappy, lz4 or zstd.
	Compression string

	// ProduceTimeout is how long the broker waits for in-sync replicas before answering (default 10s).
	ProduceTimeout time.Duration
	// Retries is how often the producer retries a retriable error before it reports the record failed.
	// The default 0 retries until the broker takes the record (in practice 1000 tries with the backoff
	// doubling from RetryBackoff up to 5s: over an hour of outage), which is what keeps a key's records in
	// order across an outage: with a finite count the producer may give up on one record while later
	// records of its partition, queued behind it, go through once the broker is back. RetryBackoff is the
	// wait between tries (default 250ms).
	Retries      int
	RetryBackoff time.Duration
	// DialTimeout, ReadTimeout and WriteTimeout bound network operations (defaults 10s, 30s, 30s).
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// TopicConfigTTL is how long a topic's max.message.bytes stays cached (default 1m).
	TopicConfigTTL time.Duration

	TLS  TLSConfig
	SASL SASLConfig

	// ExactlyOnce turns on Kafka transactions with the position stored in Kafka (default off).
	ExactlyOnce ExactlyOnceConfig
}

// TLSConfig enables TLS to the brokers.
type TLSConfig struct {
	Enable bool
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for mutual TLS.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the broker certificates.
	ServerName string
	// InsecureSkipVerify disables certificate checks. For tests only.
	InsecureSkipVerify bool
}

// SASLConfig enables SASL authentication. Mechanism is "" (off), PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
// The password is never logged.
type SASLConfig struct {
	Mechanism string
	User      string
	Password  string
}

// DefaultConfig returns a Config with every default filled in and no brokers.
func DefaultConfig() Config {
	return Config{
		ClientID:        "pgoutbox",
		Acks:            "all",
		KafkaVersion:    "3.0.0",
		Linger:          0,
		BatchBytes:      1 << 20,
		MaxMessageBytes: 1_000_000,
		Compression:     "none",
		ProduceTimeout:  10 * time.Second,
		Retries:         0,
		RetryBackoff:    250 * time.Millisecond,
		DialTimeout:     10 * time.Second,
		ReadTimeout:     30 * time.Second,
		WriteTimeout:    30 * time.Second,
		TopicConfigTTL:  time.Minute,
		ExactlyOnce:     defaultExactlyOnce(),
	}
}

// Validate reports the first invalid setting, naming its field.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("kafka: config: "+format, args...)) }
	if len(c.Brokers) == 0 {
		bad("Brokers is empty")
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" || !strings.Contains(b, ":") {
			bad("Brokers: %q is not host:port", b)
		}
	}
	if c.Acks != "all" && c.Acks != "-1" {
		bad("Acks is %q; only \"all\" is supported (pgoutbox acks a record only when every in-sync replica has it)", c.Acks)
	}
	if _, err := sarama.ParseKafkaVersion(c.KafkaVersion); err != nil {
		bad("KafkaVersion %q: %v", c.KafkaVersion, err)
	} else if v, _ := sarama.ParseKafkaVersion(c.KafkaVersion); !v.IsAtLeast(sarama.V0_11_0_0) {
		bad("KafkaVersion %q is below 0.11.0, which idempotent producing needs", c.KafkaVersion)
	}
	errs = append(errs, topicRoutes.Check(c.Topics, c.AllowedTopics)...)
	errs = append(errs, c.validateExactlyOnce()...)
	errs = append(errs, c.validateFormats()...)
	durations := []struct {
		name string
		d    time.Duration
		zero bool // zero allowed
	}{
		{"Linger", c.Linger, true}, {"ProduceTimeout", c.ProduceTimeout, false}, {"RetryBackoff", c.RetryBackoff, true},
		{"DialTimeout", c.DialTimeout, false}, {"ReadTimeout", c.ReadTimeout, false}, {"WriteTimeout", c.WriteTimeout, false},
		{"TopicConfigTTL", c.TopicConfigTTL, false},
	}
	for _, d := range durations {
		if d.d < 0 || (d.d == 0 && !d.zero) {
			bad("%s is %v; it must be positive", d.name, d.d)
		}
	}
	if c.BatchBytes < 0 {
		bad("BatchBytes is %d; it must be >= 0", c.BatchBytes)
	}
	if c.BatchMessages < 0 {
		bad("BatchMessages is %d; it must be >= 0", c.BatchMessages)
	}
	if c.MaxMessageBytes <= 0 || c.MaxMessageBytes >= int(sarama.MaxRequestSize) {
		bad("MaxMessageBytes is %d; it must be in (0, %d)", c.MaxMessageBytes, sarama.MaxRequestSize)
	}
	if c.Retries < 0 {
		bad("Retries is %d; it must be >= 0", c.Retries)
	}
	if _, err := compressionCodec(c.Compression); err != nil {
		bad("Compression: %v", err)
	}
	switch c.SASL.Mechanism {
	case "":
	case sarama.SASLTypePlaintext, sarama.SASLTypeSCRAMSHA256, sarama.SASLTypeSCRAMSHA512:
		if c.SASL.User == "" {
			bad("SASL.User is empty with SASL.Mechanism %s", c.SASL.Mechanism)
		}
	default:
		bad("SASL.Mechanism %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASL.Mechanism)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("TLS.CertFile and TLS.KeyFile must be set together")
	}
	return errors.Join(errs...)
}

// topicRoutes checks Topics and AllowedTopics.
var topicRoutes = routes.Spec{Prefix: "kafka: config: ", Field: "Topics", Allowed: "AllowedTopics", Noun: "topic",
	Valid: topicname.Validate,
	Allow: func(pats []string) []error {
		if len(pats) == 0 {
			return []error{errors.New(" is empty: it would reject every record; leave the destination out to allow any Route")}
		}
		var errs []error
		for i, p := range pats {
			if err := topicname.ValidatePattern(p); err != nil {
				errs = append(errs, fmt.Errorf("[%d]: %w", i, err))
			}
		}
		return errs
	}}

func compressionCodec(s string) (sarama.CompressionCodec, error) {
	switch strings.ToLower(s) {
	case "", "none":
		return sarama.CompressionNone, nil
	case "gzip":
		return sarama.CompressionGZIP, nil
	case "snappy":
		return sarama.CompressionSnappy, nil
	case "lz4":
		return sarama.CompressionLZ4, nil
	case "zstd":
		return sarama.CompressionZSTD, nil
	}
	return 0, fmt.Errorf("%q is not none, gzip, snappy, lz4 or zstd", s)
}

// saramaConfig translates c (already validated) into the producer settings pgoutbox relies on.
func (c Config) saramaConfig() (*sarama.Config, error) {
	sc := sarama.NewConfig()
	sc.ClientID = c.ClientID
	sc.Version, _ = sarama.ParseKafkaVersion(c.KafkaVersion)
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Metadata.Retry.Max = 2
	sc.Metadata.Retry.Backoff = 100 * time.Millisecond

	p := &sc.Producer
	p.RequiredAcks = sarama.WaitForAll
	p.Idempotent = true
	sc.Net.MaxOpenRequests = 1 // idempotent producing allows one request in flight per broker
	p.Return.Successes = true
	p.Return.Errors = true
	p.Partitioner = sarama.NewMurmur2Partitioner // same partition as the Java client's default for a key
	p.Flush.Frequency = c.Linger
	p.Flush.Bytes = c.BatchBytes
	p.Flush.Messages = c.BatchMessages
	if c.Linger == 0 {
		// sarama sends at once only when no flush trigger is set: a byte or count trigger without a
		// timer would hold a lone record until the batch fills, which may be never.
		p.Flush.Bytes, p.Flush.Messages = 0, 0
	}
	p.MaxMessageBytes = c.MaxMessageBytes
	p.Compression, _ = compressionCodec(c.Compression)
	p.Timeout = c.ProduceTimeout
	p.Retry.Max = c.Retries
	if c.Retries == 0 {
		// "Until the broker takes it": sarama keeps per-retry-level state, so the count must stay
		// finite; 1000 tries with the backoff doubling up to 5s cover an outage of over an hour.
		p.Retry.Max = outageRetries
		base := c.RetryBackoff
		p.Retry.BackoffFunc = func(retries, _ int) time.Duration {
			d := base
			for i := 1; i < retries && d < maxRetryBackoff; i++ {
				d *= 2
			}
			return min(d, maxRetryBackoff)
		}
	}
	p.Retry.Backoff = c.RetryBackoff

	sc.Net.DialTimeout = c.DialTimeout
	sc.Net.ReadTimeout = c.ReadTimeout
	sc.Net.WriteTimeout = c.WriteTimeout

	if c.TLS.Enable {
		tc, err := c.TLS.build()
		if err != nil {
			return nil, err
		}
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = tc
	}
	if c.SASL.Mechanism != "" {
		sc.Net.SASL.Enable = true
		sc.Net.SASL.Handshake = true
		sc.Net.SASL.Mechanism = sarama.SASLMechanism(c.SASL.Mechanism)
		sc.Net.SASL.User = c.SASL.User
		sc.Net.SASL.Password = c.SASL.Password
		switch c.SASL.Mechanism {
		case sarama.SASLTypeSCRAMSHA256:
			sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return newSCRAMClient(sha256Hash) }
		case sarama.SASLTypeSCRAMSHA512:
			sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return newSCRAMClient(sha512Hash) }
		}
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka: config: %w", err)
	}
	return sc, nil
}

// build reads the TLS files (sink/internal/tlsconfig, shared with the NATS and RabbitMQ sinks).
func (t TLSConfig) build() (*tls.Config, error) {
	tc, err := tlsconfig.Files{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify}.Build("")
	if err != nil {
		return nil, fmt.Errorf("kafka: config: %w", err)
	}
	return tc, nil
}

const (
	outageRetries   = 1000
	maxRetryBackoff = 5 * time.Second
)

// producerConfig returns the configuration of the producer's own client. In outage mode (Retries 0) its
// metadata refresh retries until the broker answers: while a partition has no known leader, sarama's
// partition producer fails the record it is dispatching at once (whatever Retry.Max says) and a later
// record of the same partition can succeed after the outage — a reorder. A refresh that waits instead
// keeps every record of the partition queued behind the first, in order. The admin client used for topic
// lookups keeps the bounded retries, so an outage is still reported quickly.
func producerConfig(sc *sarama.Config, c Config) *sarama.Config {
	if c.Retries != 0 {
		return sc
	}
	pc := *sc
	pc.Metadata.Retry.Max = outageRetries
	base := c.RetryBackoff
	pc.Metadata.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		d := base
		for i := 1; i < retries && d < maxRetryBackoff; i++ {
			d *= 2
		}
		return min(d, maxRetryBackoff)
	}
	return &pc
}
