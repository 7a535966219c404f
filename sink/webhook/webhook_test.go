package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// server records what it accepted; a request with X-Test-Poison gets 400.
type server struct {
	mu   sync.Mutex
	got  []sinktest.Delivery
	hdrs []http.Header
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("X-Test-Poison") != "" {
		http.Error(w, "poisoned", http.StatusBadRequest)
		return
	}
	d := sinktest.Delivery{
		ID: r.Header.Get("X-Pgoutbox-Id"), Type: r.Header.Get("X-Pgoutbox-Type"),
		Destination: r.Header.Get("X-Pgoutbox-Destination"), Payload: body, Headers: map[string]string{},
	}
	for k := range r.Header {
		d.Headers[strings.ToLower(k)] = r.Header.Get(k)
	}
	s.mu.Lock()
	s.got = append(s.got, d)
	s.hdrs = append(s.hdrs, r.Header.Clone())
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) Read(testing.TB) []sinktest.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinktest.Delivery(nil), s.got...)
}

func (s *server) Poison(r *outbox.Record) {
	r.Headers = map[string]string{"X-Test-Poison": "1"}
}

func newSink(t testing.TB, url string, mod func(*webhook.Config)) *webhook.Sink {
	t.Helper()
	cfg := webhook.DefaultConfig()
	cfg.URL = url
	if mod != nil {
		mod(&cfg)
	}
	s, err := webhook.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (outbox.Sink, sinktest.Reader) {
		srv := &server{}
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close)
		return newSink(t, hs.URL, nil), srv
	})
}

func TestHeadersAndContentType(t *testing.T) {
	t.Parallel()
	srv := &server{}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	s := newSink(t, hs.URL+"/hooks/", func(c *webhook.Config) { c.Headers = map[string]string{"Authorization": "Bearer x"} })
	r := sinktest.Record("k", 1)
	r.Headers = map[string]string{"Content-Type": "application/json", "X-Trace": "t1"}
	if err := s.Send(context.Background(), []outbox.Record{r}); err != nil {
		t.Fatal(err)
	}
	h := srv.hdrs[0]
	for k, want := range map[string]string{
		"Idempotency-Key": r.ID, "X-Pgoutbox-Id": r.ID, "X-Pgoutbox-Type": r.Type, "X-Pgoutbox-Destination": string(r.Destination),
		"Content-Type": "application/json", "X-Trace": "t1", "Authorization": "Bearer x",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	r.Headers = nil
	r.ID += "b"
	if err := s.Send(context.Background(), []outbox.Record{r}); err != nil {
		t.Fatal(err)
	}
	if got := srv.hdrs[1].Get("Content-Type"); got != "application/octet-stream" {
		t.Errorf("default content type = %q", got)
	}
}

func TestStatusClassification(t *testing.T) {
	t.Parallel()
	const (
		delivered = iota
		retry     // per record, counts an attempt
		permanent // dead letter now
		systemic  // block the destination, no attempt
	)
	for _, tc := range []struct {
		status int
		want   int
	}{
		{500, retry}, {501, retry}, {505, retry}, {408, retry},
		{502, systemic}, {503, systemic}, {504, systemic}, {429, systemic}, {301, systemic}, {307, systemic}, {308, systemic},
		{400, permanent}, {401, permanent}, {404, permanent}, {410, permanent}, {422, permanent},
		{200, delivered}, {202, delivered}, {204, delivered},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			t.Parallel()
			var other atomic.Int32
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Pgoutbox-Id") == "bad-000001" {
					w.Header().Set("Location", "/moved") // a followed redirect would come back here
					w.WriteHeader(tc.status)
					return
				}
				if r.URL.Path != "/" {
					t.Errorf("a redirect was followed to %s", r.URL.Path)
				}
				other.Add(1)
				w.WriteHeader(200)
			}))
			defer hs.Close()
			s := newSink(t, hs.URL, nil)
			batch := []outbox.Record{sinktest.Record("bad", 1), sinktest.Record("bad", 2), sinktest.Record("other", 0)}
			err := s.Send(context.Background(), batch)
			if tc.want == delivered {
				if err != nil {
					t.Fatalf("Send = %v", err)
				}
				return
			}
			errs := []error{err, err, err}
			var be *outbox.BatchError
			if errors.As(err, &be) {
				errs = be.Errs
			}
			if tc.want == systemic {
				// Systemic: the record blocks the destination; the others are delivered (if they went
				// first) or not attempted, never failed.
				if !outbox.IsUnavailable(errs[0]) || errors.Is(errs[0], outbox.ErrNotAttempted) {
					t.Fatalf("status %d: %v, want a systemic (unavailable) error", tc.status, errs[0])
				}
				for _, e := range errs[1:] {
					if e != nil && !errors.Is(e, outbox.ErrNotAttempted) && !outbox.IsUnavailable(e) {
						t.Fatalf("status %d: neighbour error %v counts an attempt", tc.status, e)
					}
				}
				return
			}
			if be == nil {
				t.Fatalf("Send = %v, want BatchError", err)
			}
			if outbox.IsUnavailable(errs[0]) || errors.Is(errs[0], outbox.ErrNotAttempted) {
				t.Fatalf("status %d: error %v must be a failed attempt", tc.status, errs[0])
			}
			if got := outbox.IsPermanent(errs[0]); got != (tc.want == permanent) {
				t.Fatalf("permanent = %v for %d (%v)", got, tc.status, errs[0])
			}
			if errs[2] != nil {
				t.Fatalf("other key failed: %v", errs[2])
			}
			// After a retryable failure the key's later record is held back (order); after a permanent one it goes on.
			if tc.want == permanent && errs[1] != nil || tc.want == retry && !errors.Is(errs[1], outbox.ErrNotAttempted) {
				t.Fatalf("record after the failed one: %v", errs[1])
			}
		})
	}
}

// An endpoint that answers nothing within Timeout is down as a whole: systemic, no attempt counted.
func TestEndpointTimeoutIsSystemic(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hs.Close()
	defer close(release)
	s := newSink(t, hs.URL, func(c *webhook.Config) { c.Timeout = 100 * time.Millisecond })
	err := s.Send(context.Background(), []outbox.Record{sinktest.Record("k", 0), sinktest.Record("j", 0)})
	if !outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want unavailable", err)
	}
}

// One request that times out while the endpoint answers the others is that record's failure (the
// message is the slow one): retried, counting an attempt.
func TestSlowRequestWhileEndpointAnswersIsRetryable(t *testing.T) {
	t.Parallel()
	release, slowArrived := make(chan struct{}), make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.Header.Get("X-Pgoutbox-Id") {
		case "slow-000000":
			close(slowArrived)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		case "fast-000004": // answered after the slow request started: the endpoint is alive meanwhile
			<-slowArrived
		}
		w.WriteHeader(204)
	}))
	defer hs.Close()
	defer close(release)
	s := newSink(t, hs.URL, func(c *webhook.Config) { c.Timeout = 500 * time.Millisecond })
	batch := []outbox.Record{sinktest.Record("slow", 0), sinktest.Record("slow", 1)}
	for i := range 5 {
		batch = append(batch, sinktest.Record("fast", i))
	}
	err := s.Send(context.Background(), batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("Send = %v, want BatchError", err)
	}
	e := be.Errs[0]
	if e == nil || outbox.IsUnavailable(e) || outbox.IsPermanent(e) || errors.Is(e, outbox.ErrNotAttempted) {
		t.Fatalf("slow record: %v, want a retryable failure", e)
	}
	if !errors.Is(be.Errs[1], outbox.ErrNotAttempted) {
		t.Fatalf("record behind the slow one: %v, want not attempted", be.Errs[1])
	}
	for i, e := range be.Errs[2:] {
		if e != nil {
			t.Errorf("fast record %d: %v", i, e)
		}
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := newSink(t, "http://"+addr, nil)
	err = s.Send(context.Background(), []outbox.Record{sinktest.Record("k", 0)})
	if !outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want unavailable", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]webhook.Config{
		"URL":         {Timeout: time.Second, Concurrency: 1},
		"relative":    {URL: "/x", Timeout: time.Second, Concurrency: 1},
		"Timeout":     {URL: "http://x", Concurrency: 1},
		"Concurrency": {URL: "http://x", Timeout: time.Second},
	} {
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(name, "relative")) {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
	if err := (webhook.Config{URL: "https://x/y", Timeout: time.Second, Concurrency: 1}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// Concurrency bounds the requests the endpoint sees from the whole sink, however many Sends run at
// once (the relay keeps several in flight per lane).
func TestConcurrencyIsSinkWide(t *testing.T) {
	t.Parallel()
	var cur, peak atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		cur.Add(-1)
	}))
	defer hs.Close()
	s := newSink(t, hs.URL, func(c *webhook.Config) { c.Concurrency = 3 })
	var wg sync.WaitGroup
	for send := range 4 {
		wg.Go(func() {
			batch := make([]outbox.Record, 6)
			for i := range batch {
				batch[i] = outbox.Record{Message: outbox.Message{ID: fmt.Sprintf("s%d-%d", send, i), Destination: "d", Key: fmt.Sprintf("k%d-%d", send, i)}}
			}
			if err := s.Send(context.Background(), batch); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 3 || p < 2 {
		t.Errorf("the endpoint saw up to %d requests at once from 4 concurrent Sends with Concurrency 3", p)
	}
}
