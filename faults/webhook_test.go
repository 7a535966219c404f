//go:build faults

package faults

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// Behaviours of a [hook] endpoint.
const (
	hookOK   = iota
	hookSlow // answers after 2 s (it has the message as soon as it arrives)
	hook503  // 503 Service Unavailable with Retry-After: 2; it keeps nothing
)

// hook is a real HTTP receiver for the webhook scenarios. It keeps every message it has (arrived while
// ok or slow) for the oracle, and notes every request that breaks what the operator configured.
type hook struct {
	l        *oracle.Ledger
	secret   string // when set, every request must carry a valid Standard Webhooks signature
	auth     string // when set, the Authorization every request must carry
	base     string // the path every request must be at or one segment under
	mode     atomic.Int32
	requests atomic.Int64
	srv      *httptest.Server

	mu       sync.Mutex
	got      []oracle.Delivery
	seen     map[string]bool
	problems []string
}

func newHook(t *testing.T, l *oracle.Ledger, base string) *hook {
	h := &hook{l: l, base: base, seen: map[string]bool{}}
	h.srv = httptest.NewServer(h)
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) url() string { return h.srv.URL + h.base }

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.requests.Add(1)
	mode := h.mode.Load()
	if mode == hook503 {
		w.Header().Set("Retry-After", "2")
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	id := r.Header.Get("Idempotency-Key")
	var problems []string
	if h.auth != "" && r.Header.Get("Authorization") != h.auth {
		problems = append(problems, fmt.Sprintf("message %s: Authorization is not the configured one", id))
	}
	if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), h.base); !ok || rest != "" && (!strings.HasPrefix(rest, "/") || strings.Count(rest, "/") != 1) {
		problems = append(problems, fmt.Sprintf("message %s: posted to %q, not at or one segment under %s", id, r.URL.EscapedPath(), h.base))
	}
	if r.URL.RawQuery != "" || r.Host != strings.TrimPrefix(h.srv.URL, "http://") {
		problems = append(problems, fmt.Sprintf("message %s: query %q, Host %q", id, r.URL.RawQuery, r.Host))
	}
	if h.secret != "" && !validSignature(h.secret, r.Header, body) {
		problems = append(problems, fmt.Sprintf("message %s: no valid webhook-signature", id))
	}
	h.mu.Lock()
	h.got = append(h.got, oracle.Delivery{ID: id, Payload: body, Pos: r.URL.EscapedPath()})
	h.seen[id] = true
	h.problems = append(h.problems, problems...)
	h.mu.Unlock()
	if mode == hookSlow {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// validSignature is a receiver's Standard Webhooks check, written from the specification.
func validSignature(secret string, h http.Header, body []byte) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "."))
	m.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	return h.Get("webhook-id") == h.Get("Idempotency-Key") && hmac.Equal([]byte(h.Get("webhook-signature")), []byte(want))
}

func (h *hook) has(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[id]
}

func (h *hook) issues() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.problems...)
}

// source is what the endpoint has, keys taken from the ledger (a webhook carries no key header).
func (h *hook) source() oracle.Source {
	return func(context.Context) ([]oracle.Delivery, error) {
		h.mu.Lock()
		ds := append([]oracle.Delivery(nil), h.got...)
		h.mu.Unlock()
		for i := range ds {
			s, _ := h.l.Lookup(ds[i].ID)
			ds[i].Key = s.Key
		}
		return ds, nil
	}
}

// markerDelivered commits a marker and returns the time from since until the endpoint has it.
func (h *hook) markerDelivered(t *testing.T, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	id := marker(t, h.l, "marker")
	for deadline := time.Now().Add(timeout); !h.has(id); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("marker %s committed after the fault was not delivered within %s", id, timeout)
		}
	}
	return time.Since(since)
}

// startWebhook runs the daemon with event_bus routed to the webhook settings route (a YAML flow
// mapping such as `{url: "...", timeout: 1s}`) and waits until it streams.
func (e *env) startWebhook(name string, c config, route string) *daemon {
	e.t.Helper()
	p := c.write(e.t)
	b, err := os.ReadFile(p)
	if err != nil {
		e.t.Fatal(err)
	}
	line := fmt.Sprintf("  event_bus: {webhook: {url: %q, timeout: 5s}}\n", c.Webhook)
	if !strings.Contains(string(b), line) {
		e.t.Fatalf("the scenario config has no line %q to replace:\n%s", line, b)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), line, "  event_bus: {webhook: "+route+"}\n", 1)), 0o600); err != nil {
		e.t.Fatal(err)
	}
	d := startDaemon(e.t, name, "--config", p, "run")
	d.waitStreaming(60 * time.Second)
	return d
}

// waitRequests waits until h has had n requests, for at most timeout.
func waitRequests(h *hook, n int64, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); h.requests.Load() < n && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
}

// An endpoint that takes 2 s per request while the webhook timeout is 1 s: nothing is acked, so the
// destination blocks — no attempt counted, nothing dead-lettered (max_attempts 2 would dead-letter
// everything within seconds if timeouts counted), the slot frozen — and once the endpoint is fast
// again everything is delivered, the messages it had already received included (as duplicates).
func TestWebhookSlowEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	h := newHook(t, e.l, "/hooks")
	h.mode.Store(hookSlow)
	c := e.config("webhook-slow")
	c.Webhook = h.url()
	c.MaxAttempts = 2
	d := e.startWebhook("relay", c, fmt.Sprintf("{url: %q, timeout: 1s}", h.url()))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "slow", Pause: 20 * time.Millisecond, MaxTx: 100})
	waitRequests(h, 10, 30*time.Second)
	time.Sleep(3 * time.Second) // what preceded the first message is confirmed
	frozen := e.confirmed()
	<-gen.Done()
	time.Sleep(15 * time.Second) // 2 s endpoint, 1 s timeout, backoff ≤ 500 ms: ~10 rounds per key's head
	if now := e.confirmed(); now != frozen {
		t.Errorf("confirmed_flush_lsn moved from %s to %s while no request was answered in time", frozen, now)
	}
	slowRequests := h.requests.Load()
	failures := d.metric(`pgoutbox_delivery_failures_total{destination="event_bus"}`)
	blocked := d.metric(`pgoutbox_destination_blocked{destination="event_bus"}`)
	deadWhileSlow := len(deadLetters(t, e.pool))
	if deadWhileSlow != 0 || failures != "0" || blocked != "1" {
		t.Errorf("while the endpoint is slower than the timeout: %d dead letters, failures metric %q, blocked %q; want 0, 0, 1",
			deadWhileSlow, failures, blocked)
	}
	fast := time.Now()
	h.mode.Store(hookOK)
	rec := h.markerDelivered(t, fast, 90*time.Second)
	v := e.l.Verify(t, 90*time.Second, true, h.source())
	if dead := deadLetters(t, e.pool); len(dead) != 0 {
		for id, why := range dead {
			t.Errorf("%d dead letters, want 0 (a slow endpoint is systemic); e.g. %s: %s", len(dead), id, why)
			break
		}
	}
	for _, p := range h.issues() {
		t.Error(p)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("webhook endpoint 2 s per request", v, rec,
		fmt.Sprintf("webhook timeout 1 s: %d requests in ~20 s of slowness, none acked: 0 dead letters (max_attempts 2), failures metric %s, blocked %s, slot frozen at %s; all delivered once fast, recovery from then",
			slowRequests, failures, blocked, frozen))
}

// An endpoint answering 503 (Retry-After: 2) for 60 s: 0 dead letters, no attempt counted, the
// destination blocked (metric, /readyz), the slot frozen; everything delivered afterwards, once.
func TestWebhook503For60s(t *testing.T) {
	e := newEnv(t, nil)
	h := newHook(t, e.l, "/hooks")
	c := e.config("webhook-503")
	c.Webhook = h.url()
	c.MaxAttempts = 2
	d := e.startWebhook("relay", c, fmt.Sprintf("{url: %q, timeout: 5s}", h.url()))
	h.mode.Store(hook503)
	down := time.Now()
	gen := e.l.Generate(oracle.GenConfig{Prefix: "down", Pause: 20 * time.Millisecond, MaxTx: 150})
	waitRequests(h, 3, 30*time.Second)
	time.Sleep(5 * time.Second)
	frozen := e.confirmed()
	<-gen.Done()
	time.Sleep(time.Until(down.Add(58 * time.Second)))
	if now := e.confirmed(); now != frozen {
		t.Errorf("confirmed_flush_lsn moved from %s to %s while every request got 503", frozen, now)
	}
	code, body := d.get("/readyz")
	failures := d.metric(`pgoutbox_delivery_failures_total{destination="event_bus"}`)
	blocked := d.metric(`pgoutbox_destination_blocked{destination="event_bus"}`)
	dead := len(deadLetters(t, e.pool))
	if dead != 0 || failures != "0" || blocked != "1" || code != 503 || !strings.Contains(body, "blocked") {
		t.Errorf("after ~60 s of 503: %d dead letters, failures metric %q, blocked %q, /readyz %d %q; want 0, 0, 1, 503 blocked",
			dead, failures, blocked, code, body)
	}
	requests := h.requests.Load()
	time.Sleep(time.Until(down.Add(60 * time.Second)))
	up := time.Now()
	h.mode.Store(hookOK)
	rec := h.markerDelivered(t, up, 90*time.Second)
	v := e.l.Verify(t, 90*time.Second, false, h.source())
	if n := len(deadLetters(t, e.pool)); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("webhook 503 for 60 s", v, rec,
		fmt.Sprintf("while 503: %d requests, 0 dead letters (max_attempts 2), failures metric %s, blocked %s, /readyz %d, slot frozen at %s; recovery from the endpoint's return",
			requests, failures, blocked, code, frozen))
}

// Messages that try to set Authorization, Host, Cookie, the relay's own or signature headers, or to
// leave the configured path through their Route, against a route with append_route, a configured
// Authorization and a signing secret: their headers are dropped (metric, never logged), every request
// carries the operator's Authorization and a valid signature and stays under the configured path, and
// the escaping Routes are dead-lettered naming the rule, never sent.
func TestWebhookMessageCannotOverride(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	e := newEnv(t, nil)
	h := newHook(t, e.l, "/hooks")
	h.secret, h.auth = secret, "Bearer operator-token"
	file := filepath.Join(t.TempDir(), "hook-secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := e.config("webhook-intent")
	c.Webhook = h.url()
	d := e.startWebhook("relay", c, fmt.Sprintf(`{url: %q, timeout: 5s, append_route: true, headers: {Authorization: "Bearer operator-token"}, signing_secret_file: %q}`,
		h.url(), file))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "intent", Pause: 5 * time.Millisecond, MaxTx: 100})
	attack := map[string]string{"Authorization": "Bearer evil", "Host": "evil.example", "Cookie": "session=evil",
		"X-Pgoutbox-Id": "forged", "webhook-signature": "v1,forged", "Content-Length": "0", "X-Trace": "kept"}
	var headerIDs, escapeIDs []string
	escapes := []string{"../admin", "..", "a/b", "x?admin=1", "x#frag", "%2e%2e%2fadmin", `a\b`}
	for i := range 10 {
		m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("attack-k%d", i%3), Type: "Test",
			Route: "invoices", Payload: []byte(fmt.Sprintf(`{"attack":%d}`, i)), Headers: attack}
		headerIDs = append(headerIDs, m.ID)
		if err := e.l.Commit(context.Background(), []outbox.Message{m}, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	for i, route := range escapes {
		m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("attack-k%d", i%3), Type: "Test",
			Route: route, Payload: []byte(`{}`)}
		escapeIDs = append(escapeIDs, m.ID)
		if err := e.l.Commit(context.Background(), []outbox.Message{m}, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	<-gen.Done()
	v := e.l.Verify(t, 60*time.Second, false, h.source())
	dead := deadLetters(t, e.pool)
	for i, id := range escapeIDs {
		if why, ok := dead[id]; !ok || !strings.Contains(why, "append_route allows one path segment") {
			t.Errorf("Route %q: dead letter %v %q, want one naming the append_route rule", escapes[i], ok, why)
		}
		if h.has(id) {
			t.Errorf("Route %q was sent", escapes[i])
		}
	}
	if len(dead) != len(escapeIDs) {
		t.Errorf("%d dead letters, want the %d escaping Routes", len(dead), len(escapeIDs))
	}
	for _, id := range headerIDs {
		if !h.has(id) {
			t.Errorf("message %s with forbidden headers was not delivered", id)
		}
	}
	for _, p := range h.issues() {
		t.Error(p)
	}
	dropped := d.metric(`pgoutbox_webhook_dropped_headers_total{destination="event_bus"}`)
	if want := fmt.Sprint(6 * len(headerIDs)); dropped != want {
		t.Errorf("pgoutbox_webhook_dropped_headers_total = %q, want %s", dropped, want)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	logs := strings.Join(d.stderr.lines(), "\n")
	for _, leak := range []string{"Bearer evil", "operator-token", strings.TrimPrefix(secret, "whsec_"), "session=evil"} {
		if strings.Contains(logs, leak) {
			t.Errorf("the log contains %q", leak)
		}
	}
	e.row("message tries to set Authorization / escape the path", v, 0,
		fmt.Sprintf("%d messages with Authorization/Host/Cookie/own headers delivered with the operator's (%s headers dropped, none logged with a value), all signed, all under /hooks; %d escaping Routes dead-lettered naming the rule, never sent",
			len(headerIDs), dropped, len(escapeIDs)))
}
