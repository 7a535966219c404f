package stdout_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
	"github.com/pgoutbox/pgoutbox/sink/stdout"
)

// syncBuffer is a bytes.Buffer safe for concurrent Write and read.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Read(t testing.TB) []sinktest.Delivery {
	b.mu.Lock()
	data := bytes.Clone(b.buf.Bytes())
	b.mu.Unlock()
	var out []sinktest.Delivery
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var l stdout.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		d := sinktest.Delivery{ID: l.ID, Key: l.Key, Type: l.Type, Destination: l.Destination, Headers: l.Headers, Payload: l.PayloadBase64}
		if l.Payload != nil {
			d.Payload = []byte(*l.Payload)
		}
		out = append(out, d)
	}
	return out
}

func TestConformance(t *testing.T) {
	sinktest.RunWithoutPermanentFailures(t, func(t *testing.T) (outbox.Sink, sinktest.Reader) {
		b := &syncBuffer{}
		return stdout.New(b), b
	})
}

// Large lines written from many goroutines never interleave.
func TestLinesDoNotInterleave(t *testing.T) {
	b := &syncBuffer{}
	s := stdout.New(b)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				r := sinktest.Record(fmt.Sprintf("g%d", g), i)
				r.Payload = bytes.Repeat([]byte{'a' + byte(g)}, 10000)
				if err := s.Send(context.Background(), []outbox.Record{r}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if n := len(b.Read(t)); n != 400 {
		t.Fatalf("read %d lines, want 400", n)
	}
}
