package rabbitmq_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq"
)

// readEvent reads a delivery as a CloudEvent with the CloudEvents Go SDK: structured mode by its content
// type (the SDK's JSON format), binary mode through the SDK's attribute table with the AMQP binding's
// cloudEvents_ prefix (the SDK's own AMQP binding module is not served by the module proxy).
func readEvent(t *testing.T, d amqp.Delivery) event.Event {
	t.Helper()
	if strings.HasPrefix(d.ContentType, "application/cloudevents+json") {
		var ev event.Event
		if err := ev.UnmarshalJSON(d.Body); err != nil {
			t.Fatalf("SDK: %v\n%s", err, d.Body)
		}
		return ev
	}
	v := spec.WithPrefix(rabbitmq.CloudEventsPrefix).Version("1.0")
	if v == nil || d.Headers[rabbitmq.CloudEventsPrefix+"specversion"] != "1.0" {
		t.Fatalf("no %sspecversion 1.0 header: %v", rabbitmq.CloudEventsPrefix, d.Headers)
	}
	ev := event.Event{Context: v.NewContext()}
	for k, val := range d.Headers {
		if !strings.HasPrefix(k, rabbitmq.CloudEventsPrefix) {
			continue
		}
		if err := v.SetAttribute(ev.Context, k, val); err != nil {
			t.Fatalf("SDK: attribute %s = %v: %v", k, val, err)
		}
	}
	if err := ev.SetData(d.ContentType, d.Body); err != nil {
		t.Fatal(err)
	}
	ev.DataEncoded = d.Body
	return ev
}

// Records published as CloudEvents (binary and structured mode) to the real broker: valid 1.0 events
// with the message's id, type, key as subject, creation time and content type, and the payload
// byte-exact; message_id stays the message id.
func TestCloudEventsFormats(t *testing.T) {
	url := rabbitmqtest.URL(t)
	ex, queues := rabbitmqtest.Topology(t, url, "direct", "rk")
	s := newRouted(t, url, map[string]rabbitmq.Destination{
		"bin":    {Exchange: ex, RoutingKey: "rk", CloudEvents: cloudevents.Options{Format: cloudevents.Binary, Source: "urn:pgoutbox:test"}},
		"struct": {Exchange: ex, RoutingKey: "rk", CloudEvents: cloudevents.Options{Format: cloudevents.Structured}},
	}, nil)
	var batch []outbox.Record
	for i, dest := range []string{"bin", "bin", "struct", "struct"} {
		r := routed(dest, "", "k-"+dest, i)
		r.CreatedAt = time.Date(2026, 11, 30, 12, 0, i, 0, time.UTC)
		if i%2 == 1 {
			r.Payload = []byte{0x00, 0xff, '\r', '\n', '"'}
			r.Headers = map[string]string{"content-type": "application/x-thing", "cloudEvents_id": "forged", "traceparent": "00-1-2-01"}
		}
		batch = append(batch, r)
	}
	if err := s.Send(ctx(t), batch); err != nil {
		t.Fatal(err)
	}
	byID := map[string]outbox.Record{}
	for _, r := range batch {
		byID[r.ID] = r
	}
	msgs := rabbitmqtest.OpenQueue(t, url, queues[0]).Drain()
	if len(msgs) != len(batch) {
		t.Fatalf("queue holds %d messages, want %d", len(msgs), len(batch))
	}
	for _, m := range msgs {
		r := byID[m.MessageId]
		ev := readEvent(t, m)
		if err := ev.Validate(); err != nil {
			t.Errorf("%s: invalid event: %v", r.ID, err)
		}
		wantSource, wantType := "/pgoutbox/"+string(r.Destination), "application/json"
		if r.Destination == "bin" {
			wantSource = "urn:pgoutbox:test"
		}
		if r.Headers["content-type"] != "" {
			wantType = "application/x-thing"
		}
		if ev.ID() != r.ID || ev.Source() != wantSource || ev.Type() != r.Type || ev.Subject() != r.Key ||
			!ev.Time().Equal(r.CreatedAt) || ev.DataContentType() != wantType {
			t.Errorf("%s (%s): %s", r.ID, r.Destination, ev.Context)
		}
		if !bytes.Equal(ev.Data(), r.Payload) {
			t.Errorf("%s: data %q, want %q", r.ID, ev.Data(), r.Payload)
		}
	}
}
