package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// capture is an endpoint that keeps the raw headers and host of every request.
type capture struct {
	mu    sync.Mutex
	hdrs  []http.Header
	hosts []string
}

func (c *capture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.hdrs = append(c.hdrs, r.Header.Clone())
	c.hosts = append(c.hosts, r.Host)
	c.mu.Unlock()
	w.WriteHeader(204)
}

func (c *capture) last() (http.Header, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hdrs[len(c.hdrs)-1], c.hosts[len(c.hosts)-1]
}

// A message cannot set credentials, hop-by-hop or framing headers, the sink's own headers, or any
// header the operator configured; such headers are dropped and counted, and the request still goes out.
func TestMessageHeadersCannotOverride(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cp := &capture{}
	hs := httptest.NewServer(cp)
	defer hs.Close()
	core, logs := observer.New(zap.InfoLevel)
	cfg := webhook.DefaultConfig()
	cfg.URL = hs.URL
	cfg.SigningSecret = secret
	cfg.Headers = map[string]string{"Authorization": "Bearer operator", "X-Tenant": "acme", "Content-Type": "application/json"}
	s, err := webhook.New(cfg, webhook.WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	attack := map[string]string{
		"Authorization": "Bearer evil", "authorization": "Bearer evil2", "Proxy-Authorization": "Basic evil",
		"Cookie": "session=evil", "Host": "evil.example", "Content-Length": "1", "Transfer-Encoding": "chunked",
		"Connection": "close", "Keep-Alive": "timeout=1", "TE": "trailers", "Trailer": "X-Evil", "Upgrade": "h2c",
		"Expect": "100-continue", "Proxy-Connection": "keep-alive", "Idempotency-Key": "forged",
		"X-Pgoutbox-Id": "forged", "x-pgoutbox-destination": "forged", "Webhook-Signature": "v1,forged",
		"webhook-id": "forged", "webhook-timestamp": "1", "X-Tenant": "evil", "content-type": "text/evil",
		"Bad Name": "x", "X-Bad(": "x", "": "x", "X-Crlf": "a\r\nInjected: yes", "X-Lf": "a\nb", "X-Nul": "a\x00b",
		"X-Del": "a\x7fb",
		"X-Ok":  "fine\tvalue", "Traceparent": "00-abc-def-01",
	}
	r := sinktest.Record("k", 0)
	r.Headers = attack
	if err := s.Send(context.Background(), []outbox.Record{r}); err != nil {
		t.Fatalf("Send = %v: dropped headers must not fail the record", err)
	}
	h, host := cp.last()
	for name, want := range map[string]string{
		"Authorization": "Bearer operator", "X-Tenant": "acme", "Content-Type": "application/json",
		"Idempotency-Key": r.ID, "X-Pgoutbox-Id": r.ID, "X-Pgoutbox-Destination": string(r.Destination), "Webhook-Id": r.ID,
		"X-Ok": "fine\tvalue", "Traceparent": "00-abc-def-01",
		"Proxy-Authorization": "", "Cookie": "", "Keep-Alive": "", "Te": "", "Trailer": "", "Upgrade": "", "Expect": "",
		"Proxy-Connection": "", "Injected": "", "X-Crlf": "", "X-Lf": "", "X-Nul": "", "X-Del": "", "Transfer-Encoding": "",
	} {
		if got := strings.Join(h.Values(name), ","); got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	if host != strings.TrimPrefix(hs.URL, "http://") {
		t.Errorf("Host = %q, want the configured URL's host", host)
	}
	if sig := h.Get("Webhook-Signature"); sig == "v1,forged" || !strings.HasPrefix(sig, "v1,") {
		t.Errorf("webhook-signature = %q", sig)
	}
	if ts := h.Get("Webhook-Timestamp"); ts == "1" {
		t.Errorf("webhook-timestamp forged: %q", ts)
	}
	wantDropped := len(attack) - 2 // all but X-Ok and Traceparent
	if got := s.Stats().DroppedHeaders; got != uint64(wantDropped) {
		t.Errorf("Stats().DroppedHeaders = %d, want %d", got, wantDropped)
	}
	// Logged once per destination and header name, never with the value.
	first := logs.FilterMessageSnippet("message header dropped").Len()
	if first != wantDropped-1 { // Authorization and authorization share one
		t.Errorf("%d drop logs, want one per header name (%d)", first, wantDropped-1)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "evil") || strings.Contains(f.String, "forged") {
				t.Errorf("a log carries a dropped header's value: %s=%q", f.Key, f.String)
			}
		}
	}
	r.ID = "k-again"
	if err := s.Send(context.Background(), []outbox.Record{r}); err != nil {
		t.Fatal(err)
	}
	if again := logs.FilterMessageSnippet("message header dropped").Len(); again != first {
		t.Errorf("second message with the same headers logged %d more drops, want 0", again-first)
	}
	if got := s.Stats().DroppedHeaders; got != uint64(2*wantDropped) {
		t.Errorf("Stats().DroppedHeaders = %d after two messages, want %d", got, 2*wantDropped)
	}
}

func TestConfiguredHeadersValidated(t *testing.T) {
	t.Parallel()
	for name, h := range map[string]map[string]string{
		"bad name":          {"Bad Name": "x"},
		"CR LF":             {"X-A": "a\r\nInjected: 1"},
		"Host":              {"Host": "other"},
		"Content-Length":    {"Content-Length": "3"},
		"Transfer-Encoding": {"Transfer-Encoding": "chunked"},
		"Connection":        {"Connection": "close"},
		"sink's own":        {"X-Pgoutbox-Id": "x"},
		"signature":         {"webhook-signature": "v1,x"},
		"Idempotency-Key":   {"Idempotency-Key": "x"},
		"case twice":        {"X-A": "1", "x-a": "2"},
	} {
		c := webhook.DefaultConfig()
		c.URL = "https://example.com/"
		c.Headers = h
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "Headers") {
			t.Errorf("%s: Validate = %v, want an error naming Headers", name, err)
			continue
		}
		if strings.Contains(err.Error(), "Injected") {
			t.Errorf("%s: the error shows the value: %v", name, err)
		}
	}
	c := webhook.DefaultConfig()
	c.URL = "https://example.com/"
	c.Headers = map[string]string{"Authorization": "Bearer x", "Cookie": "a=b", "Content-Type": "application/json", "X-Api-Key": "k"}
	if err := c.Validate(); err != nil {
		t.Errorf("credentials and Content-Type may be configured: %v", err)
	}
}
