//go:build nokafka

package main

import (
	"errors"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
)

// newKafkaSink fails: this binary was built with -tags nokafka (without sarama).
var newKafkaSink = func(config.Kafka, map[string]config.KafkaRoute, *zap.Logger) (kafkaSink, error) {
	return nil, withCode(exitUsage, errors.New("kafka routes are configured but this pgoutbox was built with -tags nokafka"))
}

// exportKafkaStats has nothing to export without Kafka.
func (s *sinkSet) exportKafkaStats(*observe.Metrics, bool) {}
