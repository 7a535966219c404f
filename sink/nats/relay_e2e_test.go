package nats_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/natstest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	natssink "github.com/pgoutbox/pgoutbox/sink/nats"
)

// PostgreSQL → relay → the real NATS server: every committed message reaches the stream once, in
// order per key, nothing rolled back does, the slot never confirms past an unacked message (I4), and a
// graceful stop and restart re-delivers nothing the stream does not drop.
func TestRelayToNATS(t *testing.T) {
	url := natstest.URL(t)
	db := pgtest.New(t)
	if err := outbox.Migrate(context.Background(), db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	subj := "pgoutbox.e2e." + natstest.Name(t)
	stream := natstest.CreateStream(t, url, jetstream.StreamConfig{Duplicates: 2 * time.Minute}, subj)
	cfg := natssink.DefaultConfig()
	cfg.URLs = []string{url}
	cfg.Subjects = map[string]string{string(outbox.EventBus): subj}
	s, err := natssink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	l := oracle.New(db.Pool, "app")
	slot := "t_" + pgtest.RandomSuffix()
	start := func() *outbox.Relay {
		r, err := outbox.Start(context.Background(), db.Pool, "app", nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, s),
			outbox.WithLogger(zaptest.NewLogger(t)), outbox.WithStatusInterval(100*time.Millisecond),
			outbox.WithRetryBackoff(20*time.Millisecond, time.Second))
		if err != nil {
			t.Fatalf("outbox.Start: %v", err)
		}
		return r
	}
	r := start()
	w := natstest.Watch(t, url, stream)
	i4 := l.WatchI4(t, w.I4(slot))
	if err := l.Generate(oracle.GenConfig{Workers: 1, Keys: 40, MaxMsgs: 10, Payload: 200, MaxTx: 400}).Wait(); err != nil {
		t.Fatal(err)
	}
	l.WaitAll(t, 60*time.Second, natstest.Source(t, url, stream))
	stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Stop(stopCtx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	r = start()
	if err := l.Generate(oracle.GenConfig{Workers: 1, Keys: 40, MaxMsgs: 10, Payload: 200, MaxTx: 100}).Wait(); err != nil {
		t.Fatal(err)
	}
	v := l.Verify(t, 60*time.Second, false, natstest.Source(t, url, stream))
	if v.Dead != 0 {
		t.Errorf("%d committed messages were dead-lettered", v.Dead)
	}
	time.Sleep(500 * time.Millisecond)
	if i4.Stop(); i4.Polls() == 0 {
		t.Error("the I4 watcher never judged a confirmed_flush_lsn")
	}
	if st := s.Stats(); st.Permanent+st.Unavailable != 0 {
		t.Errorf("sink stats %+v: no failure expected", st)
	}
	_ = r.Stop(stopCtx)
}
