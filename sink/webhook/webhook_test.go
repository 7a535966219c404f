package webhook_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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

func TestHeadersAndRoute(t *testing.T) {
	t.Parallel()
	srv := &server{}
	var path atomic.Value
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path.Store(r.URL.Path)
		srv.ServeHTTP(w, r)
	}))
	defer hs.Close()
	s := newSink(t, hs.URL+"/hooks/", func(c *webhook.Config) { c.Headers = map[string]string{"Authorization": "Bearer x"} })
	r := sinktest.Record("k", 1)
	r.Route = "/orders"
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
	if p := path.Load(); p != "/hooks/orders" {
		t.Errorf("path = %v", p)
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
	for _, tc := range []struct {
		name      string
		status    int
		permanent bool
	}{
		{"500", 500, false}, {"503", 503, false}, {"408", 408, false}, {"429", 429, false},
		{"400", 400, true}, {"404", 404, true}, {"410", 410, true}, {"422", 422, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Pgoutbox-Id") == "bad-000001" {
					w.WriteHeader(tc.status)
					return
				}
				w.WriteHeader(200)
			}))
			defer hs.Close()
			s := newSink(t, hs.URL, nil)
			batch := []outbox.Record{sinktest.Record("bad", 0), sinktest.Record("bad", 1), sinktest.Record("bad", 2), sinktest.Record("other", 0)}
			err := s.Send(context.Background(), batch)
			var be *outbox.BatchError
			if !errors.As(err, &be) {
				t.Fatalf("Send = %v, want BatchError", err)
			}
			if outbox.IsUnavailable(err) {
				t.Fatalf("a status answer must not be systemic: %v", err)
			}
			if got := outbox.IsPermanent(be.Errs[1]); got != tc.permanent {
				t.Fatalf("permanent = %v for %d (%v)", got, tc.status, be.Errs[1])
			}
			if be.Errs[0] != nil || be.Errs[3] != nil {
				t.Fatalf("neighbours failed: %v", be.Errs)
			}
			// After a retryable failure the key's later record is held back (order); after a permanent one it goes on.
			if tc.permanent != (be.Errs[2] == nil) {
				t.Fatalf("record after the failed one: %v (permanent=%v)", be.Errs[2], tc.permanent)
			}
		})
	}
}

func TestTimeoutIsRetryable(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hs.Close()
	defer close(release)
	s := newSink(t, hs.URL, func(c *webhook.Config) { c.Timeout = 100 * time.Millisecond })
	err := s.Send(context.Background(), []outbox.Record{sinktest.Record("k", 0)})
	var be *outbox.BatchError
	if !errors.As(err, &be) || be.Errs[0] == nil || outbox.IsPermanent(be.Errs[0]) || outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want a retryable per-record error", err)
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
