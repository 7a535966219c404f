package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq"
)

// PostgreSQL → relay → the real RabbitMQ: every committed message reaches the queue, in order per key,
// nothing rolled back does, no duplicate without a fault, and the slot never confirms past an
// unconfirmed message (I4).
func TestRelayToRabbitMQ(t *testing.T) {
	url := rabbitmqtest.URL(t)
	db := pgtest.New(t)
	if err := outbox.Migrate(context.Background(), db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	ex, queues := rabbitmqtest.Topology(t, url, "direct", "events")
	cfg := rabbitmq.DefaultConfig()
	cfg.URL = url
	cfg.Destinations = map[string]rabbitmq.Destination{string(outbox.EventBus): {Exchange: ex, RoutingKey: "events"}}
	s, err := rabbitmq.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	l := oracle.New(db.Pool, "app")
	slot := "t_" + pgtest.RandomSuffix()
	r, err := outbox.Start(context.Background(), db.Pool, "app", nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, s),
		outbox.WithLogger(zaptest.NewLogger(t)), outbox.WithStatusInterval(100*time.Millisecond),
		outbox.WithRetryBackoff(20*time.Millisecond, time.Second))
	if err != nil {
		t.Fatalf("outbox.Start: %v", err)
	}
	cons := rabbitmqtest.Consume(t, url, queues[0])
	i4 := l.WatchI4(t, cons.I4(url, queues[0], slot))
	if err := l.Generate(oracle.GenConfig{Workers: 1, Keys: 40, MaxMsgs: 10, Payload: 200, MaxTx: 400}).Wait(); err != nil {
		t.Fatal(err)
	}
	v := l.Verify(t, 60*time.Second, false, cons.Source())
	if v.Dead != 0 {
		t.Errorf("%d committed messages were dead-lettered", v.Dead)
	}
	time.Sleep(500 * time.Millisecond)
	if i4.Stop(); i4.Polls() == 0 {
		t.Error("the I4 watcher never judged a confirmed_flush_lsn")
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Stop(stopCtx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if st := s.Stats(); st.Permanent+st.Unavailable != 0 {
		t.Errorf("sink stats %+v: no failure expected", st)
	}
}
