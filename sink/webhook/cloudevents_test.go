package webhook_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// Requests laid out as CloudEvents (binary and structured mode) and read by the CloudEvents Go SDK's
// HTTP binding on a real HTTP server: valid 1.0 events with the message's id, type, key as subject,
// creation time and content type (the configured one wins), the payload byte-exact, a non-ASCII subject
// percent-encoded and decoded back, and a signature that covers what was sent.
func TestCloudEventsFormats(t *testing.T) {
	for _, format := range []cloudevents.Format{cloudevents.Binary, cloudevents.Structured} {
		t.Run(string(format), func(t *testing.T) {
			var mu sync.Mutex
			var got []event.Event
			const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if err := verifyStandardWebhook(secret, r.Header, body, time.Now(), time.Minute); err != nil {
					t.Errorf("signature over the body sent: %v", err)
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
				ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
				if err != nil {
					t.Errorf("the SDK cannot read the request: %v", err)
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				mu.Lock()
				got = append(got, *ev)
				mu.Unlock()
			}))
			t.Cleanup(srv.Close)
			cfg := webhook.DefaultConfig()
			cfg.URL, cfg.CloudEvents, cfg.SigningSecret = srv.URL, cloudevents.Options{Format: format}, secret
			s, err := webhook.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
			batch := []outbox.Record{
				{Message: outbox.Message{ID: "0191b5a8-0000-7000-8000-000000000001", Destination: "orders", Key: "clé-1", Type: "order.created",
					Payload: []byte(`{"n": 1}`), Headers: map[string]string{"ce-id": "forged"}}, CreatedAt: at},
				{Message: outbox.Message{ID: "0191b5a8-0000-7000-8000-000000000002", Destination: "orders", Key: "k2", Type: "order.blob",
					Payload: []byte{0, 0xff, '"'}, Headers: map[string]string{"Content-Type": "application/x-thing"}}, CreatedAt: at},
			}
			if err := s.Send(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 {
				t.Fatalf("%d events received", len(got))
			}
			for _, ev := range got {
				var r outbox.Record
				for _, b := range batch {
					if b.ID == ev.ID() {
						r = b
					}
				}
				want := map[string]string{"order.created": "application/json", "order.blob": "application/x-thing"}[r.Type]
				if err := ev.Validate(); err != nil || ev.Source() != "/pgoutbox/orders" || ev.Type() != r.Type || ev.Subject() != r.Key ||
					!ev.Time().Equal(at) || ev.DataContentType() != want || !bytes.Equal(ev.Data(), r.Payload) {
					t.Errorf("event %s (valid: %v): subject %q type %q ctype %q time %v data %q", r.ID, err, ev.Subject(), ev.Type(), ev.DataContentType(), ev.Time(), ev.Data())
				}
			}
		})
	}
}
