package kafka

import (
	"errors"

	"github.com/IBM/sarama"
)

type kind int

const (
	kindRetry        kind = iota // per record: retry with backoff, dead-letter after MaxAttempts
	kindUnavailable              // systemic: block and retry the batch
	kindUnknownTopic             // systemic for the topic
	kindPermanent                // per record: retrying cannot help
)

// classify is the one place that sorts producer errors. Transport and client-state errors (broker down,
// no connection, circuit breaker open, timeouts) and broker verdicts about the cluster (no leader, not
// enough replicas) are systemic. Broker verdicts about the record itself are permanent. Any other broker
// error is retried per record.
func classify(err error) kind {
	var ce sarama.ConfigurationError
	if errors.As(err, &ce) {
		return kindPermanent // e.g. record larger than Producer.MaxMessageBytes
	}
	var ke sarama.KError
	if !errors.As(err, &ke) {
		return kindUnavailable
	}
	switch ke {
	case sarama.ErrUnknownTopicOrPartition:
		return kindUnknownTopic
	case sarama.ErrMessageSizeTooLarge, sarama.ErrInvalidRecord, sarama.ErrInvalidTopic, sarama.ErrMessageSetSizeTooLarge,
		sarama.ErrInvalidTimestamp:
		return kindPermanent
	case sarama.ErrLeaderNotAvailable, sarama.ErrNotLeaderForPartition, sarama.ErrRequestTimedOut,
		sarama.ErrBrokerNotAvailable, sarama.ErrNetworkException, sarama.ErrNotEnoughReplicas,
		sarama.ErrNotEnoughReplicasAfterAppend, sarama.ErrKafkaStorageError, sarama.ErrNotController,
		sarama.ErrTopicAuthorizationFailed, sarama.ErrClusterAuthorizationFailed, sarama.ErrSASLAuthenticationFailed,
		sarama.ErrOutOfOrderSequenceNumber, sarama.ErrUnknownProducerID, sarama.ErrInvalidProducerEpoch,
		sarama.ErrThrottlingQuotaExceeded, sarama.ErrFencedLeaderEpoch, sarama.ErrUnknownLeaderEpoch,
		sarama.ErrOffsetNotAvailable, sarama.ErrPolicyViolation:
		return kindUnavailable
	}
	return kindRetry
}

// tooLarge reports whether the broker rejected err's batch for its size.
func tooLarge(err error) bool {
	return errors.Is(err, sarama.ErrMessageSizeTooLarge) || errors.Is(err, sarama.ErrMessageSetSizeTooLarge)
}
