package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// consumeVisible reads every partition of topic from its current end with an independent sarama
// consumer and records, for each record, the time from the send time in its payload to its arrival
// here in probe's current window: what a consumer of the topic sees (with readCommitted, a
// read_committed one: what the exactly-once mode guarantees). stop ends it.
func consumeVisible(ctx context.Context, brokers []string, topic string, readCommitted bool, probe *w2Probe) (stop func(), err error) {
	var c sarama.Consumer
	var pcs []sarama.PartitionConsumer
	for try := 0; ; try++ { // a new topic's partition leaders take a moment to be known
		if c, pcs, err = openPartitions(brokers, topic, readCommitted); err == nil || try == 50 || ctx.Err() != nil {
			break
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, fmt.Errorf("W2 consumer: %w", err)
	}
	var wg sync.WaitGroup
	for _, pc := range pcs {
		wg.Go(func() {
			for m := range pc.Messages() {
				if sent, ok := sentAt(m.Value); ok {
					probe.cur.Load().visible.Record(time.Since(sent))
				}
			}
		})
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, pc := range pcs {
				pc.AsyncClose()
			}
			wg.Wait()
			_ = c.Close()
		})
	}, nil
}

// openPartitions starts a consumer of every partition of topic at its end.
func openPartitions(brokers []string, topic string, readCommitted bool) (sarama.Consumer, []sarama.PartitionConsumer, error) {
	cfg := sarama.NewConfig()
	if readCommitted {
		cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	cfg.Consumer.Fetch.Min = 1
	cfg.Consumer.MaxWaitTime = 10 * time.Millisecond
	c, err := sarama.NewConsumer(brokers, cfg)
	if err != nil {
		return nil, nil, err
	}
	parts, err := c.Partitions(topic)
	if err != nil {
		_ = c.Close()
		return nil, nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	var pcs []sarama.PartitionConsumer
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetNewest)
		if err != nil {
			_ = c.Close()
			return nil, nil, fmt.Errorf("partition %d: %w", p, err)
		}
		pcs = append(pcs, pc)
	}
	return c, pcs, nil
}
