package cloudevents_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
)

func record(payload []byte, headers map[string]string) outbox.Record {
	return outbox.Record{Message: outbox.Message{ID: "0191b5a8-0000-7000-8000-000000000001", Destination: "orders", Key: "order-42",
		Type: "order.created", Payload: payload, Headers: headers}, CreatedAt: time.Date(2026, 11, 30, 12, 0, 0, 123456000, time.UTC)}
}

// The structured envelope, read by the CloudEvents Go SDK: a valid 1.0 event with every attribute, the
// data byte-exact (as JSON when it is JSON, else data_base64).
func TestEnvelopeParsesWithTheSDK(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		payload []byte
		headers map[string]string
		ctype   string
	}{
		{"json", []byte(`{ "b":1,  "a":[2, 1] }`), nil, "application/json"},
		{"binary", []byte{0x00, 0xff, 0xfe, '\n', '"'}, nil, "application/octet-stream"},
		{"text with its content type", []byte("héllo <&>"), map[string]string{"Content-Type": "text/plain; charset=utf-8"}, "text/plain; charset=utf-8"},
		{"json-looking text", []byte(`"quoted"`), map[string]string{"content-type": "text/plain"}, "text/plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := record(tc.payload, tc.headers)
			env := cloudevents.New(&r, cloudevents.Options{Format: cloudevents.Structured}, "").Envelope()
			var ev event.Event
			if err := ev.UnmarshalJSON(env); err != nil {
				t.Fatalf("SDK: %v\n%s", err, env)
			}
			if err := ev.Validate(); err != nil {
				t.Fatalf("SDK Validate: %v\n%s", err, env)
			}
			if ev.ID() != r.ID || ev.Source() != "/pgoutbox/orders" || ev.Type() != "order.created" || ev.Subject() != "order-42" ||
				ev.SpecVersion() != "1.0" || !ev.Time().Equal(r.CreatedAt) || ev.DataContentType() != tc.ctype {
				t.Errorf("attributes: %s", ev.Context)
			}
			if !bytes.Equal(ev.Data(), tc.payload) {
				t.Errorf("data = %q, want %q byte-exact", ev.Data(), tc.payload)
			}
		})
	}
}

func TestDefaultsAndOptions(t *testing.T) {
	t.Parallel()
	r := record([]byte("{}"), nil)
	r.Type, r.Key, r.Destination = "", "", "a b/c"
	e := cloudevents.New(&r, cloudevents.Options{}, "")
	if e.Type != "pgoutbox.message" || e.Source != "/pgoutbox/a%20b%2Fc" || e.Subject != "" {
		t.Errorf("defaults: %+v", e)
	}
	e = cloudevents.New(&r, cloudevents.Options{Source: "urn:shop:orders", Type: "shop.event"}, "application/x")
	if e.Type != "shop.event" || e.Source != "urn:shop:orders" || e.DataContentType != "application/x" {
		t.Errorf("options: %+v", e)
	}
	for _, bad := range []cloudevents.Options{{Format: "cloudevents"}, {Source: "has space"}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if got := cloudevents.HeaderValue("a\"%é\r\n"); got != "a\"%é%0D%0A" {
		t.Errorf("HeaderValue = %q", got)
	}
}
