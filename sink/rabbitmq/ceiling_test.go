package rabbitmq_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq"
)

// queueKinds are the queue types the benchmarks publish into: the classic queue a plain
// queue.declare makes on RabbitMQ 3.10 (message store v1), classic with the v2 message store, classic
// lazy (messages to disk at once) and quorum (replicated log; one node here).
var queueKinds = []struct {
	name string
	args amqp.Table
}{
	{"classic", nil},
	{"classic-v2", amqp.Table{"x-queue-version": 2}},
	{"lazy", amqp.Table{"x-queue-mode": "lazy"}},
	{"quorum", amqp.Table{"x-queue-type": "quorum"}},
}

// BenchmarkBrokerCeiling measures what the broker itself takes, with no sink in the way: a minimal
// amqp091-go publisher sends 200-byte persistent, mandatory messages with a message id over several
// channels in confirm mode, each keeping many in flight and counting the confirms (multiple acks
// included) as NotifyPublish hands them over. One b.N unit is one confirmed message; run with e.g.
// -benchtime=100000x. client-CPU-µs/msg is this process's CPU per message (user + system).
func BenchmarkBrokerCeiling(b *testing.B) {
	for _, q := range queueKinds {
		for _, channels := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("queue=%s/channels=%d", q.name, channels), func(b *testing.B) {
				benchCeiling(b, ceiling{channels: channels, inFlight: 1024, args: q.args})
			})
		}
	}
}

// BenchmarkBrokerCeilingWrites is BenchmarkBrokerCeiling on a quorum queue with 16 channels, writing
// to the socket as amqp091-go does (a write per message, TCP_NODELAY), with TCP Nagle on, and through
// the sink's coalescing connection.
func BenchmarkBrokerCeilingWrites(b *testing.B) {
	nagle := func(network, addr string) (net.Conn, error) {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		if err == nil {
			_ = c.(*net.TCPConn).SetNoDelay(false)
		}
		return c, err
	}
	for _, d := range []struct {
		name string
		dial func(network, addr string) (net.Conn, error)
	}{{"amqp091", nil}, {"nagle", nagle}, {"coalesced", rabbitmq.Dialer(5 * time.Second)}} {
		b.Run("writes="+d.name, func(b *testing.B) {
			benchCeiling(b, ceiling{channels: 16, inFlight: 256, args: queueKinds[3].args, dial: d.dial})
		})
	}
}

// BenchmarkBrokerCeilingSinkShaped is BenchmarkBrokerCeiling on a quorum queue with 16 channels and
// coalesced writes, sending the message id alone or every property and header the sink sets: the
// broker's cost of the sink's layout.
func BenchmarkBrokerCeilingSinkShaped(b *testing.B) {
	for _, shaped := range []bool{false, true} {
		b.Run(fmt.Sprint("sink-shaped=", shaped), func(b *testing.B) {
			benchCeiling(b, ceiling{channels: 16, inFlight: 256, args: queueKinds[3].args, dial: rabbitmq.Dialer(5 * time.Second), sinkShaped: shaped})
		})
	}
}

// BenchmarkBrokerCeilingConnections is BenchmarkBrokerCeiling on a quorum queue with 16 channels,
// coalesced writes and the sink's messages, spread over 1 or 2 connections (the broker parses each
// connection's frames in a process of its own).
func BenchmarkBrokerCeilingConnections(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprint("connections=", n), func(b *testing.B) {
			benchCeiling(b, ceiling{channels: 16, inFlight: 256, args: queueKinds[3].args, dial: rabbitmq.Dialer(5 * time.Second), sinkShaped: true, conns: n})
		})
	}
}

// BenchmarkBrokerCeilingInFlight is BenchmarkBrokerCeiling on a quorum queue with 16 channels and
// coalesced writes, for several numbers of messages in flight per channel.
func BenchmarkBrokerCeilingInFlight(b *testing.B) {
	for _, n := range []int{64, 256, 1024} {
		b.Run(fmt.Sprint("per-channel=", n), func(b *testing.B) {
			benchCeiling(b, ceiling{channels: 16, inFlight: n, args: queueKinds[3].args, dial: rabbitmq.Dialer(5 * time.Second)})
		})
	}
}

// ceiling is one setup of the minimal publisher.
type ceiling struct {
	channels, inFlight int                                          // channels, and messages in flight on each
	args               amqp.Table                                   // of the queue
	dial               func(network, addr string) (net.Conn, error) // nil: amqp091-go's
	// sinkShaped sends the properties and headers the sink sets (type, timestamp, app id, its four
	// headers) instead of the message id alone.
	sinkShaped bool
	conns      int // connections the channels are spread over (default 1)
}

func benchCeiling(b *testing.B, cfg ceiling) {
	channels, inFlight := cfg.channels, cfg.inFlight
	url := rabbitmqtest.URL(b)
	ex, _ := rabbitmqtest.TopologyWith(b, url, "direct", cfg.args, "rk")
	conns := make([]*amqp.Connection, max(cfg.conns, 1))
	for i := range conns {
		var err error
		if conns[i], err = amqp.DialConfig(url, amqp.Config{Dial: cfg.dial}); err != nil {
			b.Fatal(err)
		}
		defer conns[i].Close()
	}
	payload := bytes.Repeat([]byte("x"), 200)
	var next atomic.Int64
	total := int64(b.N)
	b.ResetTimer()
	cpu0, broker0, start := cpuTime(), brokerCPU(), time.Now()
	var wg sync.WaitGroup
	for c := range channels {
		ch, err := conns[c%len(conns)].Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, inFlight))
		slots := make(chan struct{}, inFlight)
		go func() { // one Confirmation per tag: amqp091-go splits multiple acks
			for cf := range confirms {
				if !cf.Ack {
					b.Errorf("nack of %d", cf.DeliveryTag)
				}
				<-slots
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= total; i = next.Add(1) {
				slots <- struct{}{}
				err := ch.Publish(ex, "rk", true, false, ceilingMessage(i, payload, cfg.sinkShaped))
				if err != nil {
					b.Error(err)
					return
				}
			}
			for range inFlight { // every slot back: every message confirmed
				slots <- struct{}{}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(total), "client-CPU-µs/msg")
	if broker0 >= 0 {
		b.ReportMetric(float64((brokerCPU()-broker0).Microseconds())/float64(total), "broker-CPU-µs/msg")
	}
}

// brokerCPU is the CPU time so far of the node scripts/rabbitmq.sh started for PGOUTBOX_RABBITMQ_DIR
// (its pid file), or -1 when it cannot be read.
func brokerCPU() time.Duration {
	dir := os.Getenv("PGOUTBOX_RABBITMQ_DIR")
	pid, err := os.ReadFile(filepath.Join(dir, "rabbitmq.pid"))
	if dir == "" || err != nil {
		return -1
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(string(pid)), "stat"))
	if err != nil {
		return -1
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])) // fields from 3 on: utime is 14, stime 15
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func ceilingMessage(i int64, payload []byte, sinkShaped bool) amqp.Publishing {
	id := fmt.Sprintf("0190b0f8-0000-7000-8000-%012d", i)
	m := amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: id, Body: payload}
	if sinkShaped {
		m.Type, m.Timestamp, m.AppId = "bench", time.Now(), "pgoutbox"
		m.Headers = amqp.Table{rabbitmq.HeaderID: id, rabbitmq.HeaderType: "bench", rabbitmq.HeaderDestination: "bench",
			rabbitmq.HeaderKey: fmt.Sprint("key-", i)}
	}
	return m
}

// cpuTime is this process's CPU time so far (user + system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
