//go:build !nokafka

package main

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
)

// newKafkaSink builds the one Kafka producer shared by every kafka route of an outbox.
var newKafkaSink = func(k config.Kafka, routes map[string]config.KafkaRoute, log *zap.Logger) (kafkaSink, error) {
	kc := kafka.DefaultConfig()
	kc.Brokers = k.Brokers
	kc.ClientID = k.ClientID
	kc.Acks = k.Acks
	if kc.Acks == "-1" {
		kc.Acks = "all"
	}
	kc.Topics, kc.AllowedTopics, kc.Formats = map[string]string{}, map[string][]string{}, map[string]recordformat.Format{}
	for dest, r := range routes {
		kc.Formats[dest] = r.RecordFormat() // the operator's choice: a message never picks its format
		if r.Topic != "" {
			kc.Topics[dest] = r.Topic // always wins over the message's Route
		} else if r.AllowedTopics != nil {
			kc.AllowedTopics[dest] = r.AllowedTopics
		}
	}
	kc.KafkaVersion = k.Version
	kc.Linger = k.Linger.D()
	kc.BatchBytes = int(k.BatchBytes)
	kc.BatchMessages = k.BatchMessages
	kc.MaxMessageBytes = int(k.MaxMessageBytes)
	kc.Compression = k.Compression
	kc.ProduceTimeout = k.ProduceTimeout.D()
	kc.Retries = k.Retries
	kc.RetryBackoff = k.RetryBackoff.D()
	kc.DialTimeout = k.DialTimeout.D()
	kc.ReadTimeout = k.ReadTimeout.D()
	kc.WriteTimeout = k.WriteTimeout.D()
	kc.TLS = kafka.TLSConfig{Enable: k.TLS.Enable, CAFile: k.TLS.CAFile, CertFile: k.TLS.CertFile, KeyFile: k.TLS.KeyFile,
		ServerName: k.TLS.ServerName, InsecureSkipVerify: k.TLS.InsecureSkipVerify}
	kc.SASL = kafka.SASLConfig{Mechanism: k.SASL.Mechanism, User: k.SASL.User, Password: k.SASL.Password}
	kc.ExactlyOnce.Enable = k.ExactlyOnce
	kc.ExactlyOnce.PositionTopic = k.PositionTopic
	kc.ExactlyOnce.TransactionalID = k.TransactionalID
	kc.ExactlyOnce.CommitInterval = k.CommitInterval.D()
	kc.ExactlyOnce.CommitRecords = k.CommitRecords
	kc.ExactlyOnce.TransactionTimeout = k.TransactionTimeout.D()
	if err := kc.Validate(); err != nil {
		return nil, withCode(exitUsage, fmt.Errorf("%w: kafka: %w", config.ErrInvalid, err))
	}
	return kafka.New(kc, kafka.WithLogger(log))
}

// exportKafkaStats exports the exactly-once Kafka sink's transaction counters as metrics.
func (s *sinkSet) exportKafkaStats(m *observe.Metrics, exactlyOnce bool) {
	ks, ok := s.kafka.(*kafka.Sink)
	if !ok || !exactlyOnce {
		return
	}
	m.KafkaTransactions(func() observe.KafkaTxn {
		st := ks.Stats().Transactions
		return observe.KafkaTxn{Committed: st.Committed, PositionOnly: st.PositionOnly, Aborted: st.Aborted, Records: st.Records, Fenced: st.Fenced,
			PositionOverflow: st.PositionOverflow, Seconds: st.Seconds}
	})
}
