package nats_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/natstest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	natssink "github.com/pgoutbox/pgoutbox/sink/nats"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// Records published as CloudEvents (binary and structured mode) on the real server, read back by the
// CloudEvents Go SDK's NATS JetStream binding: valid 1.0 events with the message's id, type, key as
// subject, creation time and content type, and the payload byte-exact.
func TestCloudEventsFormats(t *testing.T) {
	url := natstest.URL(t)
	name := natstest.Name(t)
	stream := natstest.CreateStream(t, url, jetstream.StreamConfig{}, "pgoutbox.ce."+name+".>")
	cfg := natssink.DefaultConfig()
	cfg.URLs = []string{url}
	cfg.Subjects = map[string]string{"bin": "pgoutbox.ce." + name + ".bin", "struct": "pgoutbox.ce." + name + ".struct", "raw": "pgoutbox.ce." + name + ".raw"}
	cfg.Formats = map[string]cloudevents.Options{"bin": {Format: cloudevents.Binary, Source: "urn:pgoutbox:test"},
		"struct": {Format: cloudevents.Structured}}
	s, err := natssink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	var batch []outbox.Record
	for i, dest := range []string{"bin", "bin", "struct", "struct", "raw"} {
		r := sinktest.Record("k-"+dest, i)
		r.Destination, r.CreatedAt = outbox.Destination(dest), time.Date(2026, 11, 30, 12, 0, i, 0, time.UTC)
		if i%2 == 1 {
			r.Payload = []byte{0x00, 0xff, '\r', '\n', '"'}
			r.Headers = map[string]string{"Content-Type": "application/x-thing", "ce-id": "forged", "traceparent": "00-1-2-01"}
		}
		batch = append(batch, r)
	}
	if err := s.Send(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, url)
	msgs, err := natstest.ReadAll(context.Background(), js, stream)
	if err != nil || len(msgs) != len(batch) {
		t.Fatalf("stream holds %d messages (%v)", len(msgs), err)
	}
	byID := map[string]int{}
	for i, r := range batch {
		byID[r.ID] = i
	}
	for _, m := range msgs {
		i, ok := byID[m.Headers().Get(natssink.HeaderID)]
		if !ok {
			t.Fatalf("unknown message %v", m.Headers())
		}
		r := batch[i]
		if r.Destination == "raw" {
			if m.Headers().Get("ce-specversion") != "" || !bytes.Equal(m.Data(), r.Payload) {
				t.Errorf("raw record: headers %v data %q", m.Headers(), m.Data())
			}
			continue
		}
		ev, err := binding.ToEvent(context.Background(), cejs.NewMessage(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}))
		if err != nil {
			t.Fatalf("record %d (%s): the SDK cannot read it: %v", i, r.Destination, err)
		}
		if err := ev.Validate(); err != nil {
			t.Errorf("record %d: invalid event: %v", i, err)
		}
		wantSource, wantType := "/pgoutbox/"+string(r.Destination), "application/json"
		if r.Destination == "bin" {
			wantSource = "urn:pgoutbox:test"
		}
		if i%2 == 1 {
			wantType = "application/x-thing"
		}
		if ev.ID() != r.ID || ev.Source() != wantSource || ev.Type() != r.Type || ev.Subject() != r.Key ||
			!ev.Time().Equal(r.CreatedAt) || ev.DataContentType() != wantType {
			t.Errorf("record %d (%s): %s", i, r.Destination, ev.Context)
		}
		if !bytes.Equal(ev.Data(), r.Payload) {
			t.Errorf("record %d: data %q, want %q", i, ev.Data(), r.Payload)
		}
		if m.Headers().Get(natssink.HeaderMsgID) != r.ID {
			t.Errorf("record %d: Nats-Msg-Id %q", i, m.Headers().Get(natssink.HeaderMsgID))
		}
	}
}
