package observe

import "github.com/prometheus/client_golang/prometheus"

// KafkaTxn is what the Kafka sink counts of its transactions in exactly-once mode (kafka.TxnStats,
// copied here so that this package does not need sarama).
type KafkaTxn struct {
	Committed, PositionOnly, Aborted, Records, Fenced, PositionOverflow uint64
	Seconds                                                             float64
}

// KafkaTransactions exports read, the exactly-once Kafka sink's counters:
// pgoutbox_kafka_transactions_total{outcome=committed|position_only|aborted}, pgoutbox_kafka_transaction_records_total,
// pgoutbox_kafka_transaction_seconds_total (first record to commit, summed: divide by the committed
// count for the mean), pgoutbox_kafka_producer_fenced_total (producers that failed for good; each
// stopped its relay) and pgoutbox_kafka_position_overflow_total.
func (m *Metrics) KafkaTransactions(read func() KafkaTxn) {
	const txnHelp = "Kafka transactions of the exactly-once mode: committed with records (and the position), with the position only, or aborted (their records are sent again)."
	counter := func(name, help string, labels prometheus.Labels, v func(KafkaTxn) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return v(read()) })
	}
	m.reg.MustRegister(
		counter("pgoutbox_kafka_transactions_total", txnHelp,
			prometheus.Labels{"outcome": "committed"}, func(s KafkaTxn) float64 { return float64(s.Committed) }),
		counter("pgoutbox_kafka_transactions_total", txnHelp,
			prometheus.Labels{"outcome": "position_only"}, func(s KafkaTxn) float64 { return float64(s.PositionOnly) }),
		counter("pgoutbox_kafka_transactions_total", txnHelp,
			prometheus.Labels{"outcome": "aborted"}, func(s KafkaTxn) float64 { return float64(s.Aborted) }),
		counter("pgoutbox_kafka_transaction_records_total", "Records committed in Kafka transactions (exactly-once mode).",
			nil, func(s KafkaTxn) float64 { return float64(s.Records) }),
		counter("pgoutbox_kafka_transaction_seconds_total", "Time from a committed Kafka transaction's first record to its commit, summed over the transactions with records (exactly-once mode).",
			nil, func(s KafkaTxn) float64 { return s.Seconds }),
		counter("pgoutbox_kafka_producer_fenced_total", "Transactional producers that failed for good (fenced by another instance, or a transaction older than transaction_timeout aborted by the broker); each stopped its relay.",
			nil, func(s KafkaTxn) float64 { return float64(s.Fenced) }),
		counter("pgoutbox_kafka_position_overflow_total", "Records left out of a stored position that would not fit position_max_bytes (delivered again after a crash).",
			nil, func(s KafkaTxn) float64 { return float64(s.PositionOverflow) }),
	)
}
