package kafka

import (
	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// JavaPartition is the partition the Java client's default partitioner picks for key.
func JavaPartition(key []byte, partitions int32) int32 {
	p, _ := sarama.NewMurmur2Partitioner("").Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(key)}, partitions)
	return p
}

// RecordBatchSize is the pre-check's size of r as a single-record batch.
func RecordBatchSize(r outbox.Record, topic string) int { return batchSize(newMessage(&r, topic)) }

// CachedTopics returns how many topics the topic cache holds.
func (s *Sink) CachedTopics() int { return s.topics.size() }

// SetTopicCacheLimit changes the topic cache's bound (maxCachedTopics).
func (s *Sink) SetTopicCacheLimit(n int) { s.topics.mu.Lock(); s.topics.max = n; s.topics.mu.Unlock() }
