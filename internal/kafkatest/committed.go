package kafkatest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// HeaderSentinel marks the records ReadCommitted writes to find the end of each partition.
const HeaderSentinel = "pgoutbox-test-sentinel"

// ReadCommitted returns every record of topic that a read_committed consumer sees, ordered by
// partition then offset, without the sentinels. To know where a partition ends (aborted records and
// transaction markers take offsets but are never returned), it first appends one sentinel record,
// outside any transaction, to every partition and reads until it has seen each: a partition's
// sentinel is returned only once every transaction opened before it is committed or aborted, so a
// transaction still open (a paused producer's) is waited for until the broker aborts it or the
// context of 60 seconds ends.
func ReadCommitted(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	recs, err := ReadCommittedErr(context.Background(), brokers, topic)
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	return recs
}

// ReadCommittedErr is ReadCommitted returning an error instead of failing a test.
func ReadCommittedErr(ctx context.Context, brokers []string, topic string) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	defer prod.Close()
	md, err := kadm.NewClient(prod).Metadata(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("metadata of %q: %w", topic, err)
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return nil, fmt.Errorf("metadata of %q: %v", topic, td.Err)
	}
	sentinel := map[int32]int64{} // partition → offset of its sentinel
	for p := range td.Partitions {
		r := &kgo.Record{Topic: topic, Partition: p, Headers: []kgo.RecordHeader{{Key: HeaderSentinel, Value: []byte("1")}}}
		res, err := prod.ProduceSync(ctx, r).First()
		if err != nil {
			return nil, fmt.Errorf("produce sentinel to %s/%d: %w", topic, p, err)
		}
		sentinel[p] = res.Offset
	}
	parts := map[int32]kgo.Offset{}
	for p := range sentinel {
		parts[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(32<<20))
	if err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	defer cl.Close()
	byPart := map[int32][]*kgo.Record{}
	for len(sentinel) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read %q read_committed: %w (no sentinel yet from partitions %v: a transaction still open?)", topic, ctx.Err(), sentinel)
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", topic, p, err) })
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if _, ok := Header(r, HeaderSentinel); ok {
				if r.Offset >= sentinel[r.Partition] {
					delete(sentinel, r.Partition)
				}
				return
			}
			if _, ok := sentinel[r.Partition]; ok {
				byPart[r.Partition] = append(byPart[r.Partition], r)
			}
		})
	}
	var out []*kgo.Record
	for p := int32(0); len(byPart) > 0; p++ {
		out = append(out, byPart[p]...)
		delete(byPart, p)
	}
	return out, nil
}
