package rabbitmq_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq"
)

// BenchmarkSend measures the sink against the real broker as the relay drives it: 16 goroutines (the
// relay's lanes) each sending batches of 500 200-byte records of distinct keys, into a direct exchange
// bound to one durable queue of each kind (see queueKinds), with the sink's defaults. One b.N unit is
// one confirmed record; compare msgs/s with BenchmarkBrokerCeiling's. Run with e.g.
// -benchtime=100000x.
func BenchmarkSend(b *testing.B) {
	for _, q := range queueKinds {
		b.Run("queue="+q.name, func(b *testing.B) { benchSend(b, q.args, 16, 500, 0, nil) })
	}
}

// BenchmarkSendKeys runs BenchmarkSend's load into a quorum queue with the keys of each goroutine's
// batches drawn from a pool of 625 (W3S's 10,000 keys over the relay's 16 lanes), so that a key has
// several records in a batch, each published once the one before it is confirmed; against distinct
// keys.
func BenchmarkSendKeys(b *testing.B) {
	for _, keys := range []int{0, 625} {
		b.Run(fmt.Sprint("keys=", keys), func(b *testing.B) { benchSend(b, queueKinds[3].args, 16, 500, keys, nil) })
	}
}

// BenchmarkSendChannels runs BenchmarkSend's load into a quorum queue for several Config.Channels.
func BenchmarkSendChannels(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprint("channels=", n), func(b *testing.B) {
			benchSend(b, queueKinds[3].args, 16, 500, 0, func(c *rabbitmq.Config) { c.Channels = n })
		})
	}
}

// BenchmarkSendSmall sends as the relay does while it drains a backlog of small transactions: each
// of its 16 lanes keeps 4 Sends in flight and starts one as soon as records are ready, so a Send holds
// the few records of a lane that arrived meanwhile (W3S: 100 per transaction over 16 lanes). 64
// senders each send batches of the size named, distinct keys, into a quorum and a classic queue.
func BenchmarkSendSmall(b *testing.B) {
	for _, q := range []int{3, 0} {
		for _, n := range []int{6, 25, 100} {
			b.Run(fmt.Sprintf("queue=%s/batch=%d", queueKinds[q].name, n), func(b *testing.B) {
				benchSend(b, queueKinds[q].args, 64, n, 0, nil)
			})
		}
	}
}

// benchKey is the key of record i of sender g's batch.
func benchKey(g, i, keys int) string {
	if keys > 0 {
		i = rand.IntN(keys)
	}
	return fmt.Sprintf("key-%d-%d", g, i)
}

// benchSend sends batches of batchSize 200-byte records from goroutines senders; the keys of a
// sender's batches are distinct, or drawn from keys of its own when keys > 0. configure (nil:
// defaults) adjusts the sink's config.
func benchSend(b *testing.B, args map[string]any, goroutines, batchSize, keys int, configure func(*rabbitmq.Config)) {
	url := rabbitmqtest.URL(b)
	ex, _ := rabbitmqtest.TopologyWith(b, url, "direct", args, "rk")
	cfg := rabbitmq.DefaultConfig()
	cfg.URL = url
	cfg.Destinations = map[string]rabbitmq.Destination{"bench": {Exchange: ex, RoutingKey: "rk"}}
	if configure != nil {
		configure(&cfg)
	}
	s, err := rabbitmq.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	payload := bytes.Repeat([]byte("x"), 200)
	batches := make([][]outbox.Record, goroutines)
	for g := range batches {
		for i := range batchSize {
			batches[g] = append(batches[g], outbox.Record{Message: outbox.Message{
				ID: fmt.Sprintf("0190b0f8-0000-7000-8000-%012d", g*batchSize+i), Destination: "bench",
				Key: benchKey(g, i, keys), Type: "bench", Payload: payload,
			}})
		}
	}
	total := int64((b.N + batchSize - 1) / batchSize)
	var next atomic.Int64
	ctx := context.Background()
	b.ResetTimer()
	cpu0, broker0, start := cpuTime(), brokerCPU(), time.Now()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if err := s.Send(ctx, batches[g]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	n := float64(total * int64(batchSize))
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/n, "client-CPU-µs/msg")
	if broker0 >= 0 {
		b.ReportMetric(float64((brokerCPU()-broker0).Microseconds())/n, "broker-CPU-µs/msg")
	}
}
