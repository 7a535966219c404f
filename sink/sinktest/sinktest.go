package sinktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Destination is the destination of every record the suite sends; factories route it (a Kafka topic, a URL).
const Destination outbox.Destination = "sinktest"

// Delivery is one record as a Reader found it at the destination.
type Delivery struct {
	ID          string
	Key         string
	Type        string
	Destination string
	Payload     []byte
	Headers     map[string]string // the message's own headers; sinks may add their own names
}

// Reader reads back what a sink delivered. Read returns every delivery so far; deliveries of one key
// must be in the order the destination received them.
type Reader interface {
	Read(t testing.TB) []Delivery
}

// Poisoner is implemented by a Reader whose sink can be made to fail one record permanently: Poison
// changes r (for example makes its payload larger than the destination accepts) so that Send fails it
// with an error wrapping outbox.ErrPermanent.
type Poisoner interface {
	Poison(r *outbox.Record)
}

// Factory returns a new sink and its reader, isolated from other calls (a new topic, a new server).
// It registers its own cleanup on t.
type Factory func(t *testing.T) (outbox.Sink, Reader)

// Run runs the conformance suite against the sinks newSink makes; their Reader must be a Poisoner.
func Run(t *testing.T, newSink Factory) {
	RunWithoutPermanentFailures(t, newSink)
	t.Run("PermanentFailureIsolated", func(t *testing.T) { testPermanentIsolated(t, newSink) })
}

// RunWithoutPermanentFailures runs the suite for a sink that cannot fail one record permanently
// (stdout): everything but PermanentFailureIsolated.
func RunWithoutPermanentFailures(t *testing.T, newSink Factory) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, newSink) })
	t.Run("EmptyBatch", func(t *testing.T) { testEmptyBatch(t, newSink) })
	t.Run("AckMeansDurable", func(t *testing.T) { testAckMeansDurable(t, newSink) })
	t.Run("OrderPerKeyConcurrent", func(t *testing.T) { testOrderPerKey(t, newSink) })
}

// RecordErrors returns the per-record errors of err, what a Send of n records returned: n nils for
// nil, else the entries of its *outbox.BatchError. It fails t when err is another error or its
// BatchError does not have n entries.
func RecordErrors(t testing.TB, err error, n int) []error {
	t.Helper()
	if err == nil {
		return make([]error, n)
	}
	var be *outbox.BatchError
	if !errors.As(err, &be) || len(be.Errs) != n {
		t.Fatalf("Send = %v, want a *BatchError with %d entries", err, n)
	}
	return be.Errs
}

// Record returns a record of the suite with a deterministic id, key and payload.
func Record(key string, seq int) outbox.Record {
	id := fmt.Sprintf("%s-%06d", key, seq)
	return outbox.Record{
		Message: outbox.Message{
			ID:          id,
			Destination: Destination,
			Key:         key,
			Type:        "sinktest.v1",
			Payload:     []byte(fmt.Sprintf(`{"key":%q,"seq":%d}`, key, seq)),
			Headers:     map[string]string{"seq": fmt.Sprint(seq)},
		},
		Seq:     int64(seq),
		Attempt: 1,
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func testRoundTrip(t *testing.T, newSink Factory) {
	sink, reader := newSink(t)
	var batch []outbox.Record
	for i := range 5 {
		batch = append(batch, Record("rt", i))
	}
	// Bytes that are not valid UTF-8 and not JSON must arrive unchanged.
	batch[3].Payload = []byte{0x00, 0xff, 0xfe, '\n', '"', 0x80, 0x7f}
	batch[4].Payload = []byte(`{ "b":1,  "a":[2, 1] }`)
	batch[4].Headers = map[string]string{"traceparent": "00-abc-def-01", "content-type": "application/json"}
	if err := sink.Send(ctxFor(t), batch); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := byID(reader.Read(t))
	for _, r := range batch {
		d, ok := got[r.ID]
		if !ok {
			t.Errorf("record %s acked but not delivered", r.ID)
			continue
		}
		if d.Key != "" && d.Key != r.Key {
			t.Errorf("record %s key = %q, want %q", r.ID, d.Key, r.Key)
		}
		if !bytes.Equal(d.Payload, r.Payload) {
			t.Errorf("record %s payload = %q, want %q (byte-exact)", r.ID, d.Payload, r.Payload)
		}
		if d.Type != r.Type || d.Destination != string(r.Destination) {
			t.Errorf("record %s type/destination = %q/%q, want %q/%q", r.ID, d.Type, d.Destination, r.Type, r.Destination)
		}
		for k, v := range r.Headers {
			if d.Headers[k] != v {
				t.Errorf("record %s header %q = %q, want %q", r.ID, k, d.Headers[k], v)
			}
		}
	}
}

func testEmptyBatch(t *testing.T, newSink Factory) {
	sink, reader := newSink(t)
	if err := sink.Send(ctxFor(t), nil); err != nil {
		t.Fatalf("Send(nil) = %v", err)
	}
	if got := reader.Read(t); len(got) != 0 {
		t.Fatalf("empty batch delivered %d records", len(got))
	}
}

// Every Send that returned nil is readable at once: ack means durable.
func testAckMeansDurable(t *testing.T, newSink Factory) {
	sink, reader := newSink(t)
	ctx := ctxFor(t)
	seq := 0
	for round := range 4 {
		var batch []outbox.Record
		for range 1 + round*7 {
			batch = append(batch, Record(fmt.Sprintf("durable-%d", seq%3), seq))
			seq++
		}
		if err := sink.Send(ctx, batch); err != nil {
			t.Fatalf("round %d: Send: %v", round, err)
		}
		got := byID(reader.Read(t))
		for _, r := range batch {
			if _, ok := got[r.ID]; !ok {
				t.Fatalf("round %d: record %s acked but not readable right after Send returned", round, r.ID)
			}
		}
	}
}

// Several goroutines send interleaved keys at once; each key's records arrive in send order, and every
// acked record arrives (at least once).
func testOrderPerKey(t *testing.T, newSink Factory) {
	sink, reader := newSink(t)
	ctx := ctxFor(t)
	const (
		goroutines = 8
		keysPer    = 4
		batches    = 10
		perBatch   = 20
	)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	sent := make([][]outbox.Record, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq := map[string]int{}
			for b := range batches {
				batch := make([]outbox.Record, 0, perBatch)
				for i := range perBatch {
					key := fmt.Sprintf("g%d-k%d", g, (b*perBatch+i)%keysPer)
					batch = append(batch, Record(key, seq[key]))
					seq[key]++
				}
				if err := sink.Send(ctx, batch); err != nil {
					errs <- fmt.Errorf("goroutine %d batch %d: %w", g, b, err)
					return
				}
				sent[g] = append(sent[g], batch...)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := reader.Read(t)
	next := map[string]int{} // next expected first-delivery seq per key
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d.ID] {
			continue // a duplicate (allowed after faults) does not count for order
		}
		seen[d.ID] = true
		key, seq := splitID(d.ID)
		if seq != next[key] {
			t.Errorf("key %s: delivered seq %d, want %d (order per key broken)", key, seq, next[key])
		}
		next[key] = seq + 1
	}
	for g := range goroutines {
		for _, r := range sent[g] {
			if !seen[r.ID] {
				t.Errorf("record %s acked but not delivered", r.ID)
			}
		}
	}
	if want := goroutines * batches * perBatch; len(seen) != want {
		t.Errorf("delivered %d distinct records, want %d", len(seen), want)
	}
}

func testPermanentIsolated(t *testing.T, newSink Factory) {
	sink, reader := newSink(t)
	p, ok := reader.(Poisoner)
	if !ok {
		t.Fatalf("the Reader %T is not a Poisoner: use RunWithoutPermanentFailures for a sink without permanent per-record failures", reader)
	}
	var batch []outbox.Record
	for i := range 7 {
		batch = append(batch, Record(fmt.Sprintf("perm-%d", i%2), i))
	}
	const poisoned = 3
	p.Poison(&batch[poisoned])
	err := sink.Send(ctxFor(t), batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("Send = %v, want a *outbox.BatchError", err)
	}
	if outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v: a per-record failure must not mark the sink unavailable", err)
	}
	if len(be.Errs) != len(batch) {
		t.Fatalf("BatchError has %d entries, want %d", len(be.Errs), len(batch))
	}
	for i, e := range be.Errs {
		switch {
		case i == poisoned && !outbox.IsPermanent(e):
			t.Errorf("poisoned record error = %v, want permanent", e)
		case i != poisoned && e != nil:
			t.Errorf("record %d error = %v, want nil (neighbours of a poison record are delivered)", i, e)
		}
	}
	got := byID(reader.Read(t))
	for i, r := range batch {
		_, ok := got[r.ID]
		if i == poisoned && ok {
			t.Errorf("poisoned record %s was delivered", r.ID)
		}
		if i != poisoned && !ok {
			t.Errorf("record %s acked but not delivered", r.ID)
		}
	}
}

func splitID(id string) (string, int) {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '-' {
			var n int
			_, _ = fmt.Sscanf(id[i+1:], "%d", &n)
			return id[:i], n
		}
	}
	return id, 0
}

func byID(ds []Delivery) map[string]Delivery {
	m := make(map[string]Delivery, len(ds))
	for _, d := range ds {
		if _, ok := m[d.ID]; !ok {
			m[d.ID] = d
		}
	}
	return m
}
