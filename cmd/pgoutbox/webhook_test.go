package main_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// hookRequest is what the test endpoint saw of one request.
type hookRequest struct {
	id, path, auth, host string
	signed               bool
}

// TestDaemonWebhookOperatorIntent: a webhook route configured with append_route, an Authorization
// header and a signing secret from the environment. Messages that try to set Authorization and Host
// are delivered with the operator's header (theirs dropped, counted in a metric, never logged), a
// Route that tries to leave the path is dead-lettered naming the rule, every request is signed.
func TestDaemonWebhookOperatorIntent(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	var mu sync.Mutex
	var got []hookRequest
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, key)
		m.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "."))
		m.Write(body)
		want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
		mu.Lock()
		got = append(got, hookRequest{id: r.Header.Get("Idempotency-Key"), path: r.URL.EscapedPath(), auth: r.Header.Get("Authorization"),
			host: r.Host, signed: hmac.Equal([]byte(r.Header.Get("webhook-signature")), []byte(want))})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hs.Close()

	db := pgtest.New(t)
	migrate(t, db)
	env := append(baseEnv(db), "BILLING_HOOK_SECRET="+secret, "PGOUTBOX_DELIVERY_MAX_ATTEMPTS=3")
	d := start(t, "webhook", env, "--instance-id", "webhook",
		"--set", "routes.billing.webhook.url="+hs.URL+"/hooks",
		"--set", "routes.billing.webhook.append_route=true",
		"--set", "routes.billing.webhook.headers.Authorization=Bearer operator",
		"--set", "routes.billing.webhook.signing_secret_env=BILLING_HOOK_SECRET")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })

	msg := func(route string, headers map[string]string) outbox.Message {
		return outbox.Message{ID: uuid.Must(uuid.NewV7()).String(), Destination: "billing", Key: "k", Type: "Test",
			Route: route, Payload: []byte(`{}`), Headers: headers}
	}
	evil := map[string]string{"Authorization": "Bearer evil", "Host": "evil.example", "X-Trace": "t"}
	good := []outbox.Message{msg("invoices", evil), msg("invoices", evil), msg("", evil)}
	escape := []outbox.Message{msg("../admin", nil), msg("a/b", nil), msg("x?y=1", nil)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := outbox.Enqueue(ctx, schema, db.Pool, append(append([]outbox.Message(nil), good...), escape...)...); err != nil {
		t.Fatal(err)
	}
	_, body := d.waitHTTP("/metrics", 30*time.Second, func(_ int, b string) bool {
		return metric(b, `pgoutbox_messages_delivered_total{destination="billing"}`) == "3" &&
			metric(b, `pgoutbox_messages_dead_lettered_total{destination="billing"}`) == "3"
	})
	if v := metric(body, `pgoutbox_webhook_dropped_headers_total{destination="billing"}`); v != "6" {
		t.Errorf("pgoutbox_webhook_dropped_headers_total = %q, want 6 (Authorization and Host of 3 messages)", v)
	}
	mu.Lock()
	for _, r := range got {
		if r.auth != "Bearer operator" || !strings.HasPrefix(hs.URL, "http://"+r.host) || !r.signed {
			t.Errorf("request %s: Authorization %q, Host %q, signature valid %v", r.id, r.auth, r.host, r.signed)
		}
		if r.path != "/hooks/invoices" && r.path != "/hooks" {
			t.Errorf("request %s went to %q", r.id, r.path)
		}
	}
	if len(got) != len(good) {
		t.Errorf("%d requests, want %d (the escaping Routes are never sent)", len(got), len(good))
	}
	mu.Unlock()
	for _, m := range escape {
		var why string
		if err := db.Pool.QueryRow(ctx, "SELECT error FROM "+schema+".pkg_outbox_dead_letter WHERE id = $1", m.ID).Scan(&why); err != nil {
			t.Errorf("Route %q: no dead letter: %v", m.Route, err)
		} else if !strings.Contains(why, "append_route allows one path segment") {
			t.Errorf("Route %q: dead letter %q does not name the rule", m.Route, why)
		}
	}
	logs := d.stderr.String()
	for _, want := range []string{"message header dropped", `"signed":true`, "configured URL + the message's Route as one path segment"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	for _, leak := range []string{"Bearer evil", "Bearer operator", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "evil.example"} {
		if strings.Contains(logs, leak) {
			t.Errorf("the log contains %q", leak)
		}
	}
}
