package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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

// Concurrent Sends whose records fail in the producer at different positions each get exactly their
// own records' results: a failure or an ack credited to the wrong record or the wrong Send shows up
// as a wrong BatchError position or a Send returning before its records are in the log.
func TestFakeConcurrentSendsGetTheirOwnResults(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	const limit = 4000
	s := newRealSink(t, c.ListenAddrs(), nil, func(cfg *kafka.Config) {
		fastRetries(cfg)
		cfg.Compression = "lz4" // no pre-check: sarama itself fails records over MaxMessageBytes, through its Errors channel
		cfg.MaxMessageBytes = limit
	})
	const sends, per = 8, 60
	big := bytes.Repeat([]byte{'b'}, limit+100)
	var wg sync.WaitGroup
	var good atomic.Int64
	for g := range sends {
		batch := make([]outbox.Record, per)
		bad := map[int]bool{}
		for i := range batch {
			batch[i] = sinktest.Record(fmt.Sprintf("k%d", i%5), g*per+i)
			batch[i].Route = fakeTopic
			if (i+g)%(g+2) == 0 {
				bad[i] = true
				batch[i].Payload = big
			}
		}
		good.Add(int64(per - len(bad)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Send(ctx(t, 30*time.Second), batch)
			var be *outbox.BatchError
			if !errors.As(err, &be) || outbox.IsUnavailable(err) {
				t.Errorf("send %d = %v, want a BatchError", g, err)
				return
			}
			for i, e := range be.Errs {
				if bad[i] != (e != nil) || (e != nil && !outbox.IsPermanent(e)) {
					t.Errorf("send %d record %d (too large %v): %v", g, i, bad[i], e)
				}
			}
		}()
	}
	wg.Wait()
	got := kafkatest.ReadAll(t, c.ListenAddrs(), fakeTopic)
	seen := map[string]int{}
	for _, r := range got {
		id, _ := kafkatest.Header(r, kafka.HeaderID)
		seen[id]++
	}
	if int64(len(got)) != good.Load() || int64(len(seen)) != good.Load() {
		t.Fatalf("log holds %d records (%d ids), want each of the %d good ones once", len(got), len(seen), good.Load())
	}
	if st := s.Stats(); st.Delivered != uint64(good.Load()) || st.Permanent != uint64(sends*per)-uint64(good.Load()) {
		t.Fatalf("stats %+v, want %d delivered", st, good.Load())
	}
}

// holdProduce parks every Produce request until the returned release is called; answer, if not nil,
// then answers the first parked request itself. It returns how many requests were parked.
func holdProduce(c *kfake.Cluster, answer func(*kmsg.ProduceRequest) kmsg.Response) (release func(), parked *atomic.Int64) {
	parked = new(atomic.Int64)
	released := make(chan struct{})
	var holding, answered atomic.Bool
	holding.Store(true)
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !holding.Load() {
			return nil, nil, false
		}
		parked.Add(1)
		c.SleepControl(func() { <-released })
		if answer != nil && answered.CompareAndSwap(false, true) {
			return answer(r.(*kmsg.ProduceRequest)), nil, true
		}
		return nil, nil, false
	})
	var once sync.Once
	return func() { once.Do(func() { holding.Store(false); close(released) }) }, parked
}

// rejoinSink returns a connected sink whose producer collects records for linger before sending them.
func rejoinSink(t *testing.T, c *kfake.Cluster, linger time.Duration) *kafka.Sink {
	s := newRealSink(t, c.ListenAddrs(), nil, func(cfg *kafka.Config) {
		cfg.RetryBackoff = 20 * time.Millisecond
		cfg.DialTimeout = time.Second
		cfg.Linger = linger
	})
	warm := records(1)
	warm[0].ID = "warm-up"
	if err := s.Send(ctx(t, 30*time.Second), warm); err != nil { // connects, caches the topic
		t.Fatal(err)
	}
	return s
}

// sendUntilQueued sends batch with a short ctx while the broker holds every produce request: the Send
// gives up with the records still queued in the producer.
func sendUntilQueued(t *testing.T, s *kafka.Sink, batch []outbox.Record, parked *atomic.Int64) {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for parked.Load() == 0 && c.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	err := s.Send(c, batch)
	if !outbox.IsUnavailable(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Send with the broker holding requests = %v, want unavailable (ctx ended)", err)
	}
}

// waitRejoined waits until the sink counts want rejoined records.
func waitRejoined(t *testing.T, s *kafka.Sink, want uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.Stats().Rejoined < want {
		if time.Now().After(deadline) {
			t.Fatalf("rejoined %d records, want %d", s.Stats().Rejoined, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.Stats().Rejoined; got != want {
		t.Fatalf("rejoined %d records, want %d", got, want)
	}
}

// A Send whose ctx ends leaves its records queued; the retry of the batch (reordered and with new
// records added, as a relay lane's next batch may be) waits for the queued copies instead of
// producing them again, returns only once all of them are acked, and the log holds every record
// once, the first Send's in its order.
func TestFakeCancelledSendIsRejoinedNotCopied(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	s := rejoinSink(t, c, 10*time.Millisecond)
	release, parked := holdProduce(c, nil)
	defer release()

	first := records(12)
	sendUntilQueued(t, s, first, parked)

	retry := slices.Clone(first)
	slices.Reverse(retry)
	for i := range 3 {
		r := sinktest.Record("kd", 100+i)
		r.Route = fakeTopic
		retry = append(retry, r)
	}
	res := make(chan error, 1)
	go func() { res <- s.Send(ctx(t, 60*time.Second), retry) }()
	waitRejoined(t, s, uint64(len(first)))
	select {
	case err := <-res:
		t.Fatalf("retry returned %v while its rejoined records were still held by the broker", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if err := <-res; err != nil {
		t.Fatalf("retry: %v", err)
	}
	got := kafkatest.ReadAll(t, c.ListenAddrs(), fakeTopic)
	count := map[string]int{}
	last := map[string]int{}
	for _, r := range got {
		id, _ := kafkatest.Header(r, kafka.HeaderID)
		count[id]++
		v, _ := kafkatest.Header(r, "seq")
		var seq int
		fmt.Sscan(v, &seq)
		if prev, ok := last[string(r.Key)]; ok && seq < prev {
			t.Errorf("key %s: seq %d after %d", r.Key, seq, prev)
		}
		last[string(r.Key)] = seq
	}
	for _, r := range retry {
		if count[r.ID] != 1 {
			t.Errorf("record %s in the log %d times, want once", r.ID, count[r.ID])
		}
	}
	if len(got) != len(retry)+1 {
		t.Errorf("log holds %d records, want %d", len(got), len(retry)+1)
	}
}

// A queued record that finally fails reports its failure to the Send that rejoined it, at its position
// in that Send, while the Send's own records get their acks.
func TestFakeRejoinedRecordFailureReachesTheRetry(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	s := rejoinSink(t, c, 300*time.Millisecond) // the first Send's records all travel in the parked request
	release, parked := holdProduce(c, func(req *kmsg.ProduceRequest) kmsg.Response {
		return produceError(req, 87 /* INVALID_RECORD: not retried */)
	})
	defer release()

	first := records(6)
	sendUntilQueued(t, s, first, parked)
	// The retry: new records around the queued ones.
	var retry []outbox.Record
	isNew := map[int]bool{}
	for i, r := range first {
		if i%2 == 0 {
			n := sinktest.Record("kd", 200+i)
			n.Route = fakeTopic
			isNew[len(retry)] = true
			retry = append(retry, n)
		}
		retry = append(retry, r)
	}
	res := make(chan error, 1)
	go func() { res <- s.Send(ctx(t, 60*time.Second), retry) }()
	waitRejoined(t, s, uint64(len(first)))
	release()
	err := <-res
	var be *outbox.BatchError
	if !errors.As(err, &be) || outbox.IsUnavailable(err) {
		t.Fatalf("retry = %v, want a BatchError", err)
	}
	for i, e := range be.Errs {
		if isNew[i] && e != nil {
			t.Errorf("new record %d (%s): %v, want acked", i, retry[i].ID, e)
		}
		if !isNew[i] && (e == nil || !outbox.IsPermanent(e)) {
			t.Errorf("rejoined record %d (%s): %v, want its permanent failure", i, retry[i].ID, e)
		}
	}
	got := map[string]bool{}
	for _, r := range kafkatest.ReadAll(t, c.ListenAddrs(), fakeTopic) {
		id, _ := kafkatest.Header(r, kafka.HeaderID)
		got[id] = true
	}
	for i, r := range retry {
		if got[r.ID] != isNew[i] {
			t.Errorf("record %s in the log: %v, want %v", r.ID, got[r.ID], isNew[i])
		}
	}
}

func produceError(req *kmsg.ProduceRequest, errCode int16) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	resp.SetVersion(req.GetVersion())
	for _, tp := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = tp.Topic
		rt.TopicID = tp.TopicID
		for _, p := range tp.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p.Partition
			rp.ErrorCode = errCode
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// Linger 0 sends as soon as it can: a lone record is not held back waiting for BatchBytes to fill.
func TestFakeLingerZeroFlushesAtOnce(t *testing.T) {
	t.Parallel()
	c := newFake(t)
	s := newRealSink(t, c.ListenAddrs(), nil, func(cfg *kafka.Config) { fastRetries(cfg); cfg.Linger = 0 })
	for i := range 3 {
		if err := s.Send(ctx(t, 10*time.Second), records(1+i)); err != nil {
			t.Fatalf("Send %d with Linger 0: %v", i, err)
		}
	}
}
