// Package topic is the oracle's view of a Kafka topic written by the Kafka sink: its records as
// [oracle.Delivery] values (by the message id header), read once ([Source]) or followed as they arrive
// ([Watch], for the I4 watcher and for "was it delivered yet" probes).
package topic

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
)

// Deliveries converts records (in partition/offset order) to deliveries; a record without the message
// id header is an error.
func Deliveries(recs []*kgo.Record) ([]oracle.Delivery, error) {
	out := make([]oracle.Delivery, 0, len(recs))
	for _, r := range recs {
		id, ok := kafkatest.Header(r, kafka.HeaderID)
		if !ok {
			return nil, fmt.Errorf("record %d/%d has no %s header", r.Partition, r.Offset, kafka.HeaderID)
		}
		out = append(out, oracle.Delivery{ID: id, Key: string(r.Key), Payload: r.Value,
			Pos: fmt.Sprintf("partition %d offset %d (appended %s)", r.Partition, r.Offset, r.Timestamp.Format("15:04:05.000"))})
	}
	return out, nil
}

// Source reads every record of topic each time it is called (a key lives in one partition, read in
// offset order). A record without the message id header fails t at once; a failed read is returned
// (and retried by the oracle).
func Source(t oracle.T, brokers []string, topic string) oracle.Source {
	return func(ctx context.Context) ([]oracle.Delivery, error) {
		recs, err := kafkatest.ReadAllErr(ctx, brokers, topic)
		if err != nil {
			return nil, fmt.Errorf("read topic %s: %w", topic, err)
		}
		ds, err := Deliveries(recs)
		if err != nil {
			t.Fatalf("topic %s: %v", topic, err)
		}
		return ds, nil
	}
}

// Watcher consumes a topic continuously and knows which message ids reached it. Safe for concurrent use.
type Watcher struct {
	adm   *kadm.Client
	topic string

	mu   sync.Mutex
	seen map[string]time.Time
	next map[int32]int64 // next offset to consume per partition
}

// Watch starts consuming topic from its start; it stops when t ends.
func Watch(t oracle.T, brokers []string, topic string) *Watcher {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(32<<20),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatalf("topic: new consumer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{adm: kadm.NewClient(cl), topic: topic, seen: map[string]time.Time{}, next: map[int32]int64{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			w.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				if id, ok := kafkatest.Header(r, kafka.HeaderID); ok {
					if _, dup := w.seen[id]; !dup {
						w.seen[id] = now
					}
				}
				if r.Offset+1 > w.next[r.Partition] {
					w.next[r.Partition] = r.Offset + 1
				}
			})
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return w
}

// Has reports whether id reached the topic.
func (w *Watcher) Has(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.seen[id]
	return ok
}

// Count returns how many distinct ids reached the topic.
func (w *Watcher) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

// WaitFor waits until id is in the topic; it returns false after timeout.
func (w *Watcher) WaitFor(id string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !w.Has(id) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// CaughtUp waits until the consumer has read everything the topic held when it was called; it returns
// false when the end offsets cannot be listed or ctx ends first.
func (w *Watcher) CaughtUp(ctx context.Context) bool {
	ends, err := w.adm.ListEndOffsets(ctx, w.topic)
	if err != nil || ends.Error() != nil {
		return false
	}
	for {
		behind := false
		w.mu.Lock()
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset > w.next[o.Partition] {
				behind = true
			}
		})
		w.mu.Unlock()
		if !behind {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// I4 returns the I4 watcher configuration for a slot whose sink writes to the watched topic.
func (w *Watcher) I4(slot string) oracle.I4Config {
	return oracle.I4Config{Slot: slot, Delivered: w.Has, CaughtUp: w.CaughtUp, Every: 150 * time.Millisecond}
}

// CommittedSource is Source as a read_committed consumer sees the topic (exactly-once mode): records
// of aborted Kafka transactions are not returned, and each read waits for the transactions open on the
// topic to end (see [kafkatest.ReadCommitted]).
func CommittedSource(t oracle.T, brokers []string, topic string) oracle.Source {
	return func(ctx context.Context) ([]oracle.Delivery, error) {
		recs, err := kafkatest.ReadCommittedErr(ctx, brokers, topic)
		if err != nil {
			return nil, fmt.Errorf("read topic %s read_committed: %w", topic, err)
		}
		ds, err := Deliveries(recs)
		if err != nil {
			t.Fatalf("topic %s: %v", topic, err)
		}
		return ds, nil
	}
}
