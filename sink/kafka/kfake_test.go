package kafka_test

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

const fakeTopic = "events"

func newFake(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(2, fakeTopic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func fastRetries(c *kafka.Config) {
	c.Retries = 1
	c.RetryBackoff = 20 * time.Millisecond
	c.ProduceTimeout = 2 * time.Second
	c.ReadTimeout = 3 * time.Second
	c.DialTimeout = time.Second
}

// failProduce answers Produce requests for which reject returns true with errCode on every partition.
func failProduce(c *kfake.Cluster, errCode int16, reject func(*kmsg.ProduceRequest) bool) *atomic.Int64 {
	var n atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.ProduceRequest)
		if !reject(req) {
			return nil, nil, false
		}
		n.Add(1)
		return produceError(req, errCode), nil, true
	})
	return &n
}

func records(n int) []outbox.Record {
	out := make([]outbox.Record, n)
	for i := range out {
		out[i] = sinktest.Record("k"+string(rune('a'+i%3)), i)
		out[i].Route = fakeTopic
	}
	return out
}

func TestFakeNotEnoughReplicasIsUnavailableThenRecovers(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	var failing atomic.Bool
	failing.Store(true)
	n := failProduce(c, 19 /* NOT_ENOUGH_REPLICAS */, func(*kmsg.ProduceRequest) bool { return failing.Load() })
	s := newRealSink(t, c.ListenAddrs(), nil, fastRetries)
	batch := records(10)
	err := s.Send(ctx(t, 30*time.Second), batch)
	if !outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want unavailable", err)
	}
	if n.Load() < 2 {
		t.Fatalf("producer tried %d times, want its own retries first", n.Load())
	}
	failing.Store(false)
	if err := s.Send(ctx(t, 30*time.Second), batch); err != nil {
		t.Fatalf("Send after recovery: %v", err)
	}
	if got := kafkatest.ReadAll(t, c.ListenAddrs(), fakeTopic); len(got) != len(batch) {
		t.Fatalf("delivered %d, want %d", len(got), len(batch))
	}
}

func TestFakeTransientErrorAbsorbedByRetry(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	var once atomic.Bool
	failProduce(c, 5 /* LEADER_NOT_AVAILABLE */, func(*kmsg.ProduceRequest) bool { return once.CompareAndSwap(false, true) })
	s := newRealSink(t, c.ListenAddrs(), nil, func(c *kafka.Config) { fastRetries(c); c.Retries = 3 })
	batch := records(6)
	if err := s.Send(ctx(t, 30*time.Second), batch); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := kafkatest.ReadAll(t, c.ListenAddrs(), fakeTopic)
	if len(got) != len(batch) {
		t.Fatalf("delivered %d, want %d exactly once", len(got), len(batch))
	}
}

// A broker MESSAGE_TOO_LARGE for a batch re-sends its records one at a time: only the record that is
// too large by itself fails, permanently; its neighbours are delivered.
func TestFakeBatchTooLargeRetriesRecordByRecord(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	const brokerLimit = 3000
	rejected := failProduce(c, 10 /* MESSAGE_TOO_LARGE */, func(req *kmsg.ProduceRequest) bool {
		for _, tp := range req.Topics {
			for _, p := range tp.Partitions {
				if len(p.Records) > brokerLimit {
					return true
				}
			}
		}
		return false
	})
	s := newRealSink(t, c.ListenAddrs(), nil, func(c *kafka.Config) { fastRetries(c); c.Linger = 50 * time.Millisecond })
	batch := records(40)
	for i := range batch {
		batch[i].Key = "same" // one partition, so the whole batch travels together
		batch[i].Payload = bytes.Repeat([]byte{'n'}, 100)
	}
	const poison = 17
	batch[poison].Payload = bytes.Repeat([]byte{'p'}, brokerLimit+100)
	err := s.Send(ctx(t, 30*time.Second), batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) || outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want a BatchError", err)
	}
	for i, e := range be.Errs {
		if (i == poison) != (e != nil) {
			t.Errorf("record %d: %v", i, e)
		}
	}
	if !outbox.IsPermanent(be.Errs[poison]) || !strings.Contains(be.Errs[poison].Error(), "too large") {
		t.Fatalf("poison error = %v, want permanent too large", be.Errs[poison])
	}
	if rejected.Load() == 0 || s.Stats().TooLargeRetried == 0 {
		t.Fatalf("no batch was rejected (%d) or retried (%+v)", rejected.Load(), s.Stats())
	}
	got := kafkatest.ReadAll(t, c.ListenAddrs(), fakeTopic)
	if len(got) != len(batch)-1 {
		t.Fatalf("delivered %d, want %d", len(got), len(batch)-1)
	}
	// The re-sent records keep their order.
	prev := -1
	for _, r := range got {
		v, _ := kafkatest.Header(r, "seq")
		seq, _ := strconv.Atoi(v)
		if seq <= prev {
			t.Fatalf("record seq %d delivered after %d", seq, prev)
		}
		prev = seq
	}
}

// A configured topic that is missing blocks: the whole batch is unavailable, even for a record whose
// Route names a topic that exists (the configured topic wins).
func TestFakeUnknownTopicIsUnavailable(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	s := newRealSink(t, c.ListenAddrs(), map[string]string{"lost": "nope"}, fastRetries)
	batch := records(3)
	batch[1].Destination = "lost" // Route fakeTopic exists, but the configured topic wins
	err := s.Send(ctx(t, 30*time.Second), batch)
	if !outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want unavailable", err)
	}
	if _, ok := s.Blocked()["nope"]; !ok {
		t.Fatalf("Blocked() = %v", s.Blocked())
	}
	if got := kafkatest.ReadAll(t, c.ListenAddrs(), fakeTopic); len(got) != 0 {
		t.Fatalf("delivered %d records of an unavailable batch", len(got))
	}
}

// A topic named by a Route that the broker reports unknown when producing (deleted after the lookup)
// fails those records only, retryably; a configured topic in the same state still blocks.
func TestFakeUnknownTopicAtProduce(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	failProduce(c, 3 /* UNKNOWN_TOPIC_OR_PARTITION */, func(*kmsg.ProduceRequest) bool { return true })
	s := newRealSink(t, c.ListenAddrs(), map[string]string{"configured": fakeTopic}, fastRetries)
	err := s.Send(ctx(t, 30*time.Second), records(3))
	var be *outbox.BatchError
	if !errors.As(err, &be) || outbox.IsUnavailable(err) {
		t.Fatalf("Send with Routes = %v, want a BatchError, not unavailable", err)
	}
	for i, e := range be.Errs {
		if e == nil || outbox.IsPermanent(e) || outbox.IsUnavailable(e) || !strings.Contains(e.Error(), "named by its Route") {
			t.Errorf("record %d: %v, want a retryable error naming the Route", i, e)
		}
	}
	if b := s.Blocked(); len(b) != 0 {
		t.Errorf("Blocked() = %v: a Route blocked the sink", b)
	}
	batch := records(1)
	batch[0].Destination = "configured"
	if err := s.Send(ctx(t, 30*time.Second), batch); !outbox.IsUnavailable(err) {
		t.Fatalf("Send to the configured topic = %v, want unavailable", err)
	}
}

func TestFakeNoTopicForDestinationIsPermanent(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	s := newRealSink(t, c.ListenAddrs(), map[string]string{"mapped": fakeTopic}, fastRetries)
	batch := records(3)
	batch[0].Route, batch[0].Destination = "", "mapped"
	batch[1].Route, batch[1].Destination = "", "unmapped"
	err := s.Send(ctx(t, 30*time.Second), batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) || !outbox.IsPermanent(be.Errs[1]) || be.Errs[0] != nil || be.Errs[2] != nil {
		t.Fatalf("Send = %v", err)
	}
}

func TestFakeBrokerGoneIsUnavailable(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	s := newRealSink(t, c.ListenAddrs(), nil, fastRetries)
	if err := s.Send(ctx(t, 30*time.Second), records(2)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	err := s.Send(ctx(t, 60*time.Second), records(2))
	if !outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want unavailable", err)
	}
	t.Logf("unavailable after %v: %v", time.Since(start), err)
}

func TestFakeSCRAM(t *testing.T) {
	t.Parallel()
	for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			c := newFake(t, kfake.EnableSASL(), kfake.Superuser(mech, "relay", "s3cret"))
			s := newRealSink(t, c.ListenAddrs(), nil, func(cfg *kafka.Config) {
				fastRetries(cfg)
				cfg.SASL = kafka.SASLConfig{Mechanism: mech, User: "relay", Password: "s3cret"}
			})
			if err := s.Send(ctx(t, 30*time.Second), records(3)); err != nil {
				t.Fatalf("Send with SASL: %v", err)
			}
			cfg := kafka.DefaultConfig()
			fastRetries(&cfg)
			cfg.Brokers = c.ListenAddrs()
			cfg.SASL = kafka.SASLConfig{Mechanism: mech, User: "relay", Password: "wrong"}
			if bad, err := kafka.New(cfg); err == nil {
				_ = bad.Close()
				t.Fatal("New with a wrong password succeeded")
			}
		})
	}
}

func TestFakeCloseIdempotentAndSendAfterClose(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	s := newRealSink(t, c.ListenAddrs(), nil, fastRetries)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx(t, 5*time.Second), records(1)); !errors.Is(err, kafka.ErrClosed) {
		t.Fatalf("Send after Close = %v", err)
	}
}
