package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EnvBrokers names the environment variable that points tests at a running broker.
const EnvBrokers = "PGOUTBOX_TEST_KAFKA_BROKERS"

// Brokers returns the seed brokers of a real Kafka for t, or skips t (fails it under CI=true) when
// there is none. See the package documentation for the lookup order.
func Brokers(t testing.TB) []string {
	t.Helper()
	if v := strings.TrimSpace(os.Getenv(EnvBrokers)); v != "" {
		var out []string
		for _, b := range strings.Split(v, ",") {
			if b = strings.TrimSpace(b); b != "" {
				out = append(out, b)
			}
		}
		return out
	}
	brokers, reason := containerBrokers(t)
	if len(brokers) > 0 {
		return brokers
	}
	msg := fmt.Sprintf("no Kafka broker: %s is unset and %s; run `eval \"$(scripts/kafka.sh up)\"` to start one", EnvBrokers, reason)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: integration tests may not skip)")
	}
	t.Skip(msg)
	return nil
}

var unsafeTopicChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// TopicName returns a topic name unique to this test run, derived from t.Name().
func TopicName(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := unsafeTopicChars.ReplaceAllString(t.Name(), "_")
	if len(name) > 200 {
		name = name[:200]
	}
	return fmt.Sprintf("pgoutbox-test.%s.%s", name, hex.EncodeToString(b[:]))
}

// Client returns a franz-go client for brokers that is closed when t ends.
func Client(t testing.TB, brokers []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: new client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// CreateTopic creates topic name with the given partitions (replication factor 1 unless
// configs sets nothing else to do so) and topic configs, and waits until its leaders are known.
// The topic is deleted when t ends.
func CreateTopic(t testing.TB, brokers []string, name string, partitions int, configs map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(Client(t, brokers))
	cfg := make(map[string]*string, len(configs))
	for k, v := range configs {
		cfg[k] = &v
	}
	resp, err := adm.CreateTopic(ctx, int32(partitions), -1, cfg, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatalf("kafkatest: create topic %q: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
		if err != nil {
			return
		}
		defer cl.Close()
		_, _ = kadm.NewClient(cl).DeleteTopics(ctx, name)
	})
	for {
		md, err := adm.Metadata(ctx, name)
		if err == nil {
			if td, ok := md.Topics[name]; ok && td.Err == nil && len(td.Partitions) == partitions {
				ready := true
				for _, p := range td.Partitions {
					if p.Err != nil || p.Leader < 0 {
						ready = false
					}
				}
				if ready {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: topic %q has no leaders after 30s (last error %v)", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReadAll returns every record of topic up to the end offsets at the time of the call, ordered by
// partition then offset. It fails t when the records cannot be read within 30 seconds.
func ReadAll(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	recs, err := ReadAllErr(context.Background(), brokers, topic)
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	return recs
}

// ReadAllErr is ReadAll returning an error instead of failing a test, for use from other goroutines.
func ReadAllErr(ctx context.Context, brokers []string, topic string) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	defer admCl.Close()
	ends, err := kadm.NewClient(admCl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %q: %w", topic, err)
	}
	want := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			parts[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	byPart := map[int32][]*kgo.Record{}
	if len(want) > 0 {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
			kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(32<<20))
		if err != nil {
			return nil, fmt.Errorf("new consumer: %w", err)
		}
		defer cl.Close()
		for len(want) > 0 {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("read %q: %w (still waiting for partitions %v)", topic, ctx.Err(), want)
			}
			var ferr error
			fs.EachError(func(_ string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", topic, p, err) })
			if ferr != nil {
				return nil, ferr
			}
			fs.EachRecord(func(r *kgo.Record) {
				end, ok := want[r.Partition]
				if !ok || r.Offset >= end {
					return
				}
				byPart[r.Partition] = append(byPart[r.Partition], r)
				if r.Offset+1 >= end {
					delete(want, r.Partition)
				}
			})
		}
	}
	var out []*kgo.Record
	for p := int32(0); len(byPart) > 0; p++ {
		out = append(out, byPart[p]...)
		delete(byPart, p)
	}
	return out, nil
}

// Header returns the value of the first header named key of r, and whether there was one.
func Header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}
