// Package kafka is the Kafka implementation of [outbox.Sink], built on the IBM/sarama AsyncProducer.
//
// The producer runs with the settings the transactional outbox needs: acks=all, idempotence, one request
// in flight per broker (so retries never reorder a partition), no automatic topic creation, and
// Successes/Errors drained by dedicated goroutines. Throughput comes from batching (see [Config.Linger],
// [Config.BatchBytes]), never from producing one record at a time: [Sink.Send] feeds a whole batch to the
// producer and then waits for every ack.
//
// Routing: a topic configured for the record's destination ([Config.Topics]) always wins, whatever the
// record's Route says. Only a destination without one takes its topic from each record's Route, which
// [Config.AllowedTopics] can restrict to exact names and prefixes ("orders.*"). The Kafka key is
// the message Key, partitioned with murmur2 like the Java client's default partitioner, so Java and Go
// producers agree on a key's partition. Headers are [HeaderID], [HeaderType], [HeaderDestination] and
// then the message's own headers, sorted by name. The payload is sent byte-exact.
//
// Formats: [Config.Formats] lays out a destination's records in another format than raw (see
// [recordformat]); only the configuration picks it, never a message. [FormatCloudEventsBinary] and
// [FormatCloudEventsStructured] follow the CloudEvents 1.0 Kafka protocol binding (ce_… headers and
// content-type, or the JSON envelope of [github.com/pgoutbox/pgoutbox/sink/cloudevents] as the value);
// [FormatDebeziumOutbox] follows Debezium's outbox event router (an "id" header holding the message id,
// the type in an "eventType" header). Every format keeps the key, the sink's own headers and the
// message's headers, except those that would set what the format owns. The size check applies to the
// record as sent.
//
// Errors are classified in one place:
//   - broker down, no leader, not enough replicas, timeouts: the whole Send fails with
//     [outbox.ErrUnavailable], so the relay blocks and retries without dead-lettering;
//   - a missing configured topic: [outbox.ErrUnavailable] before anything is sent, logged, counted and
//     listed by [Sink.Blocked] for readiness checks;
//   - a missing topic named by a Route: a failure of that record only, retried by the relay and
//     dead-lettered after its attempts (later records of its key in the batch wait behind it with
//     [outbox.ErrNotAttempted]); a message can never block its destination;
//   - a record larger than its topic's max.message.bytes (looked up with DescribeConfigs and cached):
//     [outbox.ErrPermanent] for that record only, with both sizes in the message; when the broker rejects
//     a whole batch as too large, its records are re-sent one at a time first, so neighbours of a poison
//     record are delivered rather than dead-lettered;
//   - a record with no topic, a Route outside the destination's allow-list or that is not a legal topic
//     name, or a record the broker rejects as invalid: [outbox.ErrPermanent].
//
// Order: records of one key keep their order across Send calls made one after the other (the relay's
// lanes do that). After a fault (a Send that failed as unavailable and is retried, or a batch re-sent
// record by record after MESSAGE_TOO_LARGE) a record may be delivered again after later records of its key;
// each copy carries the same [HeaderID], so consumers dedupe on it.
//
// Exactly-once ([Config.ExactlyOnce]): the sink produces in Kafka transactions, one open at a time and
// joined by every concurrent Send, and writes the relay's delivered position (its watermark plus the
// records committed above it) into each, to a compacted position topic keyed by the transactional.id.
// The Sink is an [outbox.PositionSink]: the relay calls [Sink.Resume] when it takes the slot, which starts
// the transactional producer (fencing a previous instance) and returns what the last committed position
// says was delivered, so the relay skips it; [Sink.Confirmable] keeps the slot from passing the position
// stored in Kafka. A read_committed consumer then sees each message once across crashes, restarts and
// takeovers. Without ExactlyOnce, Resume skips nothing and Confirmable changes nothing.
//
// TLS and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) are configured in [Config.TLS] and [Config.SASL].
package kafka
