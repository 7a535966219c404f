package natstest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
)

// headerID and headerKey are the NATS sink's header names (sink/nats), repeated here so that this
// package does not depend on the sink it tests.
const (
	headerID  = "pgoutbox-id"
	headerKey = "pgoutbox-key"
)

// Deliveries converts a stream's messages (in stream order) to the oracle's deliveries; a message
// without the id header is an error.
func Deliveries(msgs []jetstream.Msg) ([]oracle.Delivery, error) {
	out := make([]oracle.Delivery, 0, len(msgs))
	for _, m := range msgs {
		h := m.Headers()
		id := h.Get(headerID)
		if id == "" {
			return nil, fmt.Errorf("message on %s has no %s header", m.Subject(), headerID)
		}
		pos := m.Subject()
		if md, err := m.Metadata(); err == nil {
			pos = fmt.Sprintf("%s seq %d", m.Subject(), md.Sequence.Stream)
		}
		out = append(out, oracle.Delivery{ID: id, Key: h.Get(headerKey), Payload: m.Data(), Pos: pos})
	}
	return out, nil
}

// Source reads every message of stream each time it is called.
func Source(t testing.TB, url, stream string) oracle.Source {
	_, js := Connect(t, url)
	return func(ctx context.Context) ([]oracle.Delivery, error) {
		msgs, err := ReadAll(ctx, js, stream)
		if err != nil {
			return nil, err
		}
		ds, err := Deliveries(msgs)
		if err != nil {
			t.Fatalf("stream %s: %v", stream, err)
		}
		return ds, nil
	}
}

// Watcher follows a stream and knows which message ids reached it. Safe for concurrent use.
type Watcher struct {
	js     jetstream.JetStream
	stream string

	mu      sync.Mutex
	seen    map[string]time.Time
	lastSeq uint64
}

// Watch consumes stream from its start (an ordered consumer) until t ends.
func Watch(t testing.TB, url, stream string) *Watcher {
	t.Helper()
	_, js := Connect(t, url)
	w := &Watcher{js: js, stream: stream, seen: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w.follow(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond): // the server went away: follow again
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *Watcher) follow(ctx context.Context) {
	st, err := w.js.Stream(ctx, w.stream)
	if err != nil {
		return
	}
	w.mu.Lock()
	from := w.lastSeq + 1
	w.mu.Unlock()
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			return
		}
		now := time.Now()
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			w.mu.Lock()
			if id := m.Headers().Get(headerID); id != "" {
				if _, dup := w.seen[id]; !dup {
					w.seen[id] = now
				}
			}
			w.lastSeq = max(w.lastSeq, md.Sequence.Stream)
			w.mu.Unlock()
		}
		if batch.Error() != nil && ctx.Err() == nil {
			if _, err := st.Info(ctx); err != nil {
				return
			}
		}
	}
}

// Has reports whether id reached the stream.
func (w *Watcher) Has(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.seen[id]
	return ok
}

// WaitFor waits until id is in the stream; it returns false after timeout.
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

// CaughtUp waits until the watcher has read everything the stream held when it was called.
func (w *Watcher) CaughtUp(ctx context.Context) bool {
	st, err := w.js.Stream(ctx, w.stream)
	if err != nil {
		return false
	}
	info, err := st.Info(ctx)
	if err != nil {
		return false
	}
	for {
		w.mu.Lock()
		behind := w.lastSeq < info.State.LastSeq
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

// I4 returns the I4 watcher configuration for a slot whose sink publishes to the watched stream.
func (w *Watcher) I4(slot string) oracle.I4Config {
	return oracle.I4Config{Slot: slot, Delivered: w.Has, CaughtUp: w.CaughtUp, Every: 150 * time.Millisecond}
}
