package nats_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/natstest"
	"github.com/pgoutbox/pgoutbox/outbox"
	natssink "github.com/pgoutbox/pgoutbox/sink/nats"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// streamReader reads a stream back as the suite's deliveries.
type streamReader struct {
	js     jetstream.JetStream
	stream string
}

func (r *streamReader) Read(t testing.TB) []sinktest.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := natstest.ReadAll(ctx, r.js, r.stream)
	if err != nil {
		t.Fatalf("read stream %s: %v", r.stream, err)
	}
	out := make([]sinktest.Delivery, 0, len(msgs))
	for _, m := range msgs {
		h := m.Headers()
		if h.Get(natssink.HeaderMsgID) != h.Get(natssink.HeaderID) {
			t.Fatalf("message %s: %s = %q, want the message id", h.Get(natssink.HeaderID), natssink.HeaderMsgID, h.Get(natssink.HeaderMsgID))
		}
		own := map[string]string{}
		for k, v := range h {
			own[k] = v[0]
		}
		out = append(out, sinktest.Delivery{ID: h.Get(natssink.HeaderID), Key: h.Get(natssink.HeaderKey), Type: h.Get(natssink.HeaderType),
			Destination: h.Get(natssink.HeaderDestination), Payload: m.Data(), Headers: own})
	}
	return out
}

// Poison makes the record larger than the stream's max_msg_size (the stream refuses it: permanent).
func (r *streamReader) Poison(rec *outbox.Record) { rec.Payload = bytes.Repeat([]byte{'x'}, 100_000) }

// newSink returns a sink publishing the suite's destination to a fresh subject with its own stream
// (max_msg_size 64 KiB) on the real server.
func newSink(t *testing.T, edit func(*natssink.Config)) (*natssink.Sink, *streamReader, string) {
	t.Helper()
	url := natstest.URL(t)
	subj := "pgoutbox.test." + natstest.Name(t)
	stream := natstest.CreateStream(t, url, jetstream.StreamConfig{MaxMsgSize: 64 << 10, Duplicates: 2 * time.Minute}, subj)
	cfg := natssink.DefaultConfig()
	cfg.URLs = []string{url}
	cfg.Subjects = map[string]string{string(sinktest.Destination): subj}
	if edit != nil {
		edit(&cfg)
	}
	s, err := natssink.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	_, js := natstest.Connect(t, url)
	return s, &streamReader{js: js, stream: stream}, subj
}

func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (outbox.Sink, sinktest.Reader) {
		s, r, _ := newSink(t, nil)
		return s, r
	})
}
