//go:build nokafka

package main

import (
	"errors"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
)

// newKafkaSink fails: this binary was built with -tags nokafka (without sarama).
var newKafkaSink = func(config.Kafka, map[string]config.KafkaRoute, *zap.Logger) (kafkaSink, error) {
	return nil, withCode(exitUsage, errors.New("kafka routes are configured but this pgoutbox was built with -tags nokafka"))
}
