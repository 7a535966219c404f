// Package kafkatest gives integration tests a real Apache Kafka broker and small helpers around it.
//
// [Brokers] finds a broker in this order:
//  1. PGOUTBOX_TEST_KAFKA_BROKERS (comma-separated host:port list), as printed by `scripts/kafka.sh up`;
//  2. a single-node apache/kafka container started with testcontainers-go when a Docker engine answers
//     (one per test binary, removed by the testcontainers reaper when the binary exits);
//  3. otherwise the test is skipped with a message naming `scripts/kafka.sh up` — except under CI=true,
//     where a missing broker fails the test.
//
// [CreateTopic] creates a topic with explicit partitions and configs (brokers run with
// auto.create.topics.enable=false), [TopicName] makes a name unique to one test, and [ReadAll] reads back
// every record a topic holds, so tests can check exactly what was delivered.
//
// All functions are safe for concurrent use by parallel tests.
package kafkatest
