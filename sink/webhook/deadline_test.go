package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// unfinished reports whether err is what a record the Send could not finish must get: not attempted
// or systemic, never a failed attempt.
func unfinished(err error) bool {
	return errors.Is(err, outbox.ErrNotAttempted) || outbox.IsUnavailable(err)
}

// A Send cut short by its deadline keeps per-record results: what the endpoint acknowledged is
// delivered (nil), what did not finish is not attempted or systemic — never a plain error for the batch.
func TestSendDeadlineKeepsPerRecordResults(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // a server notices a client gone only after the body
		if r.Header.Get("X-Pgoutbox-Id") == "slow-000000" {
			<-r.Context().Done() // until the sink gives up
			return
		}
		w.WriteHeader(204)
	}))
	defer hs.Close()
	s := newSink(t, hs.URL, func(c *webhook.Config) { c.Concurrency = 2 })
	batch := []outbox.Record{sinktest.Record("slow", 0), sinktest.Record("slow", 1)}
	for i := range 20 {
		batch = append(batch, sinktest.Record(fmt.Sprintf("fast%d", i%4), i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.Send(ctx, batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("Send = %v, want a *outbox.BatchError with per-record results", err)
	}
	if !unfinished(be.Errs[0]) || !errors.Is(be.Errs[1], outbox.ErrNotAttempted) {
		t.Errorf("slow records: %v / %v, want not attempted or unavailable", be.Errs[0], be.Errs[1])
	}
	for i, e := range be.Errs[2:] {
		if e != nil {
			t.Errorf("record %s acknowledged by the endpoint but reported %v", batch[i+2].ID, e)
		}
	}
}

// An endpoint that takes 2 s per request while the send deadline is 1 s (the relay's handler timeout,
// or the sink's own Timeout) answers nothing: systemic, so the relay blocks instead of counting attempts.
func TestTwoSecondEndpointOneSecondDeadline(t *testing.T) {
	t.Parallel()
	var arrived atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
		w.WriteHeader(204)
	}))
	defer hs.Close()
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the sink's Timeout
		send    time.Duration // the Send's deadline
	}{
		{"handler timeout 1s", 10 * time.Second, time.Second},
		{"webhook timeout 1s", time.Second, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(t, hs.URL, func(c *webhook.Config) { c.Timeout = tc.timeout; c.Concurrency = 4 })
			var batch []outbox.Record
			for i := range 12 {
				batch = append(batch, sinktest.Record(fmt.Sprintf("k%d", i%6), i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.send)
			defer cancel()
			err := s.Send(ctx, batch)
			if !outbox.IsUnavailable(err) {
				t.Fatalf("Send = %v, want unavailable (systemic)", err)
			}
		})
	}
	if arrived.Load() == 0 {
		t.Fatal("no request reached the endpoint")
	}
}

// One slow key holds one request slot; the other keys go on through the others.
func TestSlowKeyDoesNotStallOthers(t *testing.T) {
	t.Parallel()
	const fast = 10
	var fastSeen atomic.Int32
	fastDone := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Pgoutbox-Id") == "slow-000000" {
			select {
			case <-fastDone: // answered only once every record of the other keys arrived
			case <-r.Context().Done():
				return
			}
		} else if fastSeen.Add(1) == fast {
			close(fastDone)
		}
		w.WriteHeader(204)
	}))
	defer hs.Close()
	s := newSink(t, hs.URL, func(c *webhook.Config) { c.Concurrency = 2; c.Timeout = 20 * time.Second })
	batch := []outbox.Record{sinktest.Record("slow", 0), sinktest.Record("slow", 1)}
	for i := range fast {
		batch = append(batch, sinktest.Record(fmt.Sprintf("other%d", i%3), i))
	}
	if err := s.Send(context.Background(), batch); err != nil {
		t.Fatalf("Send = %v", err)
	}
}

// The first systemic answer stops the Send from starting more requests, and its Retry-After (seconds
// or an HTTP date, capped) travels with the error.
func TestSystemicAnswerStopsTheSendWithRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		status     int
		retryAfter string
		want       time.Duration
	}{
		{503, "7", 7 * time.Second},
		{429, now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{429, "86400", webhook.MaxRetryAfter},
		{502, "", 0},
		{504, "soon", 0},
		{503, now.Add(-time.Hour).Format(http.TimeFormat), 0},
	} {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.retryAfter), func(t *testing.T) {
			t.Parallel()
			var requests atomic.Int32
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
			}))
			defer hs.Close()
			cfg := webhook.DefaultConfig()
			cfg.URL, cfg.Concurrency = hs.URL, 1
			s, err := webhook.New(cfg, webhook.WithClock(func() time.Time { return now }))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var batch []outbox.Record
			for i := range 20 {
				batch = append(batch, sinktest.Record(fmt.Sprintf("k%d", i), 0))
			}
			err = s.Send(context.Background(), batch)
			if !outbox.IsUnavailable(err) {
				t.Fatalf("Send = %v, want unavailable", err)
			}
			if got := outbox.RetryAfterOf(err); got != tc.want {
				t.Errorf("RetryAfterOf = %s, want %s", got, tc.want)
			}
			if n := requests.Load(); n != 1 {
				t.Errorf("%d requests after a systemic answer, want 1", n)
			}
		})
	}
}

// A retryable per-record answer (500) carries its Retry-After too.
func TestRetryAfterOnRetryableAnswer(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(500)
	}))
	defer hs.Close()
	err := newSink(t, hs.URL, nil).Send(context.Background(), []outbox.Record{sinktest.Record("k", 0)})
	var be *outbox.BatchError
	if !errors.As(err, &be) || outbox.IsUnavailable(be.Errs[0]) || outbox.IsPermanent(be.Errs[0]) {
		t.Fatalf("Send = %v, want a retryable per-record failure", err)
	}
	if got := outbox.RetryAfterOf(be.Errs[0]); got != 3*time.Second {
		t.Errorf("RetryAfterOf = %s, want 3s", got)
	}
}

// A connection the endpoint resets or closes without an answer is systemic.
func TestConnectionResetIsUnavailable(t *testing.T) {
	t.Parallel()
	for _, reset := range []bool{true, false} {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			if tcp, ok := conn.(*net.TCPConn); ok && reset {
				_ = tcp.SetLinger(0) // close sends RST
			}
			_ = conn.Close()
		}))
		err := newSink(t, hs.URL, nil).Send(context.Background(), []outbox.Record{sinktest.Record("k", 0)})
		hs.Close()
		if !outbox.IsUnavailable(err) {
			t.Errorf("reset=%v: Send = %v, want unavailable", reset, err)
		}
	}
}
