package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// verifyStandardWebhook is a receiver's check written from the Standard Webhooks specification, not
// from the sink's code: the secret is "whsec_" + base64(key); the signed content is
// "<webhook-id>.<webhook-timestamp>.<body>"; webhook-signature is a space-separated list of
// "v1,<base64 HMAC-SHA256>", one of which must match (compared in constant time); the timestamp must
// be within tolerance of now.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %w", ts, err)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook-timestamp %s is %s away from now", ts, d)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no matching v1 signature")
}

// The test vector of the Standard Webhooks reference libraries (libraries/go/webhook_test.go,
// TestWebhookSign in github.com/standard-webhooks/standard-webhooks).
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorPayload   = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignatureMatchesReferenceVector(t *testing.T) {
	t.Parallel()
	var got http.Header
	var body []byte
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		body, _ = io.ReadAll(r.Body)
		w.WriteHeader(204)
	}))
	defer hs.Close()
	cfg := webhook.DefaultConfig()
	cfg.URL = hs.URL
	cfg.SigningSecret = vectorSecret
	s, err := webhook.New(cfg, webhook.WithClock(func() time.Time { return time.Unix(vectorTimestamp, 0) }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := sinktest.Record("k", 0)
	r.ID, r.Payload = vectorID, []byte(vectorPayload)
	if err := s.Send(context.Background(), []outbox.Record{r}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"webhook-id": vectorID, "webhook-timestamp": strconv.Itoa(vectorTimestamp), "webhook-signature": vectorSignature,
	} {
		if g := got.Get(name); g != want {
			t.Errorf("%s = %q, want %q", name, g, want)
		}
	}
	// The test's own verifier agrees with the vector, so it checks the right thing below.
	if err := verifyStandardWebhook(vectorSecret, got, body, time.Unix(vectorTimestamp, 0), time.Minute); err != nil {
		t.Errorf("independent verification of the reference vector: %v", err)
	}
}

// Every request verifies with the independent implementation, whatever the payload bytes; a tampered
// body, id or timestamp, or another secret, does not.
func TestSignaturesVerifyIndependently(t *testing.T) {
	t.Parallel()
	const secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0xMjM0" // 39 bytes
	var mu sync.Mutex
	type req struct {
		h    http.Header
		body []byte
	}
	var reqs []req
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, req{r.Header.Clone(), b})
		mu.Unlock()
		w.WriteHeader(204)
	}))
	defer hs.Close()
	s := newSink(t, hs.URL, func(c *webhook.Config) { c.SigningSecret = secret })
	var batch []outbox.Record
	for i, p := range [][]byte{nil, {}, []byte(`{"a":1}`), {0x00, 0xff, '.', '\n', 0x80}, []byte(strings.Repeat("x.", 5000))} {
		r := sinktest.Record(fmt.Sprintf("k%d", i), i)
		r.ID = fmt.Sprintf("0190c8e4-7c4b-7d5e-8f00-00000000000%d", i)
		r.Payload = p
		batch = append(batch, r)
	}
	if err := s.Send(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if len(reqs) != len(batch) {
		t.Fatalf("%d requests, want %d", len(reqs), len(batch))
	}
	now := time.Now()
	for _, q := range reqs {
		if err := verifyStandardWebhook(secret, q.h, q.body, now, 5*time.Minute); err != nil {
			t.Errorf("request %s: %v", q.h.Get("webhook-id"), err)
		}
		if q.h.Get("webhook-id") != q.h.Get("Idempotency-Key") {
			t.Errorf("webhook-id %q is not the message id %q", q.h.Get("webhook-id"), q.h.Get("Idempotency-Key"))
		}
		tampered := append(append([]byte(nil), q.body...), ' ')
		if verifyStandardWebhook(secret, q.h, tampered, now, 5*time.Minute) == nil {
			t.Errorf("request %s: a tampered body verifies", q.h.Get("webhook-id"))
		}
		h := q.h.Clone()
		h.Set("webhook-id", h.Get("webhook-id")+"x")
		if verifyStandardWebhook(secret, h, q.body, now, 5*time.Minute) == nil {
			t.Errorf("request %s: a changed id verifies", q.h.Get("webhook-id"))
		}
		h = q.h.Clone()
		ts, _ := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
		h.Set("webhook-timestamp", strconv.FormatInt(ts+1, 10))
		if verifyStandardWebhook(secret, h, q.body, now, 5*time.Minute) == nil {
			t.Errorf("request %s: a changed timestamp verifies", q.h.Get("webhook-id"))
		}
		if verifyStandardWebhook(vectorSecret, q.h, q.body, now, 5*time.Minute) == nil {
			t.Errorf("request %s: verifies with another secret", q.h.Get("webhook-id"))
		}
	}
}

// Without a secret nothing is signed; a message id with '.' cannot be signed (Standard Webhooks) and
// fails permanently.
func TestSigningEdges(t *testing.T) {
	t.Parallel()
	var got http.Header
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.WriteHeader(204)
	}))
	defer hs.Close()
	if err := newSink(t, hs.URL, nil).Send(context.Background(), []outbox.Record{sinktest.Record("k", 0)}); err != nil {
		t.Fatal(err)
	}
	if got.Get("webhook-signature") != "" || got.Get("webhook-id") != "" {
		t.Errorf("unsigned sink sent %q / %q", got.Get("webhook-id"), got.Get("webhook-signature"))
	}
	r := sinktest.Record("k", 1)
	r.ID = "a.b"
	err := newSink(t, hs.URL, func(c *webhook.Config) { c.SigningSecret = vectorSecret }).Send(context.Background(), []outbox.Record{r})
	var be *outbox.BatchError
	if !errors.As(err, &be) || !outbox.IsPermanent(be.Errs[0]) || !strings.Contains(be.Errs[0].Error(), "'.'") {
		t.Errorf("signed id with a dot: %v, want a permanent failure", err)
	}
}

func TestSigningSecretValidation(t *testing.T) {
	t.Parallel()
	for name, secret := range map[string]string{
		"no prefix":   "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"not base64":  "whsec_not*base64*at*all*here*!!!",
		"too short":   "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23)),
		"too long":    "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65)),
		"url base64":  "whsec_" + base64.URLEncoding.EncodeToString([]byte("\xfb\xff"+strings.Repeat("k", 30))),
		"only prefix": "whsec_",
	} {
		c := webhook.DefaultConfig()
		c.URL = "https://example.com/"
		c.SigningSecret = secret
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "SigningSecret") {
			t.Errorf("%s: Validate = %v, want an error naming SigningSecret", name, err)
			continue
		}
		if b64 := strings.TrimPrefix(secret, "whsec_"); len(b64) > 4 && strings.Contains(err.Error(), b64) {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
	for _, ok := range []string{vectorSecret, "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 64))} {
		if err := webhook.ValidateSigningSecret(ok); err != nil {
			t.Errorf("valid secret rejected: %v", err)
		}
	}
}
