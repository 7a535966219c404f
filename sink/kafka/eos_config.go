package kafka

import (
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/sink/kafka/topicname"
)

// ExactlyOnceConfig turns on exactly-once delivery: the sink produces in Kafka transactions and stores
// the relay's delivered position in each, so a restarted relay skips what a read_committed consumer
// already sees (see docs/design.md, "Exactly-once into Kafka"). The Sink then implements
// [outbox.PositionSink]; the relay calls its Resume before the first record. A wrapper around the Sink
// (metrics, tracing) must implement outbox.PositionSink too, forwarding Resume and Confirmable: a relay
// that does not see one never resumes the sink, and every Send fails as unavailable (the destination
// blocks, saying so) until it does.
type ExactlyOnceConfig struct {
	// Enable turns the mode on (default off: at-least-once).
	Enable bool
	// PositionTopic holds one position record per relay, keyed by the transactional.id (default
	// "pgoutbox.positions"). Create it with cleanup.policy=compact; the sink never creates topics.
	PositionTopic string
	// TransactionalID is the producer's transactional.id, the same for every instance of one relay
	// (default "pgoutbox-<database system identifier>-<slot>"): a second instance fences the first.
	TransactionalID string
	// CommitInterval is how long a Kafka transaction stays open after its first record (default 0: it is
	// committed as soon as the previous commit is done, so transactions grow with the load).
	CommitInterval time.Duration
	// CommitRecords closes a transaction once it holds this many records (default 50,000).
	CommitRecords int
	// PositionMaxBytes bounds the encoded position (default 900,000; at most MaxMessageBytes - 1,000).
	// When records parked for long hold the relay's watermark back so far that the position would be
	// larger, the newest records committed above it are left out of it (counted, with a warning): after a
	// crash in that state they are produced again (at least once for them, never lost).
	PositionMaxBytes int
	// TransactionTimeout is transaction.timeout.ms: the broker aborts a transaction open longer (default
	// 60s; at most the broker's transaction.max.timeout.ms).
	TransactionTimeout time.Duration
}

// DefaultPositionTopic is the default ExactlyOnceConfig.PositionTopic.
const DefaultPositionTopic = "pgoutbox.positions"

func defaultExactlyOnce() ExactlyOnceConfig {
	return ExactlyOnceConfig{PositionTopic: DefaultPositionTopic, CommitRecords: 50_000, PositionMaxBytes: 900_000,
		TransactionTimeout: time.Minute}
}

// validate checks the exactly-once settings of c, when enabled.
func (c Config) validateExactlyOnce() []error {
	e := c.ExactlyOnce
	if !e.Enable {
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("kafka: config: ExactlyOnce."+format, args...))
	}
	if err := topicname.Validate(e.PositionTopic); err != nil {
		bad("PositionTopic: %v", err)
	}
	if e.TransactionalID != "" && len(e.TransactionalID) > 249 {
		bad("TransactionalID is %d bytes; at most 249", len(e.TransactionalID))
	}
	if e.CommitInterval < 0 {
		bad("CommitInterval is %v; it must be >= 0", e.CommitInterval)
	}
	if e.CommitRecords < 1 {
		bad("CommitRecords is %d; it must be >= 1", e.CommitRecords)
	}
	if e.PositionMaxBytes < 1000 || e.PositionMaxBytes > c.MaxMessageBytes-1000 {
		bad("PositionMaxBytes is %d; it must be in [1000, MaxMessageBytes-1000 = %d]", e.PositionMaxBytes, c.MaxMessageBytes-1000)
	}
	if e.TransactionTimeout <= 0 {
		bad("TransactionTimeout is %v; it must be positive", e.TransactionTimeout)
	}
	if v, err := sarama.ParseKafkaVersion(c.KafkaVersion); err == nil && !v.IsAtLeast(sarama.V2_5_0_0) {
		bad("Enable needs KafkaVersion 2.5.0 or later (an abort bumps the producer epoch instead of failing for good), not %q", c.KafkaVersion)
	}
	return errs
}
