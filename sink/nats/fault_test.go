package nats_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/natstest"
	"github.com/pgoutbox/pgoutbox/outbox"
	natssink "github.com/pgoutbox/pgoutbox/sink/nats"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// Fault-path tests against an in-process server of the pinned version (natstest.Start), which they can
// stop, restart and configure; the conformance suite runs against the real one (scripts/nats.sh).

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func newLocal(t *testing.T, url string, edit func(*natssink.Config)) *natssink.Sink {
	t.Helper()
	cfg := natssink.DefaultConfig()
	cfg.URLs = []string{url}
	cfg.ReconnectWait = 100 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	s, err := natssink.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ids(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	msgs, err := natstest.ReadAll(ctx(t), js, stream)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		out = append(out, m.Headers().Get(natssink.HeaderID))
	}
	return out
}

// A configured subject that no stream takes blocks the destination (unavailable, listed by Blocked);
// once a stream takes it, the same batch goes through and the block is lifted.
func TestNoStreamForConfiguredSubjectIsUnavailable(t *testing.T) {
	srv := natstest.Start(t, nil)
	s := newLocal(t, srv.URL(), func(c *natssink.Config) { c.Subjects = map[string]string{"sinktest": "orders.created"} })
	batch := []outbox.Record{sinktest.Record("a", 0), sinktest.Record("b", 0)}
	for i, e := range sinktest.RecordErrors(t, s.Send(ctx(t), batch), 2) {
		if !outbox.IsUnavailable(e) || !strings.Contains(e.Error(), "no stream takes subject") {
			t.Errorf("record %d: %v, want unavailable naming the missing stream", i, e)
		}
	}
	if why := s.Blocked()["orders.created"]; !strings.Contains(why, "no stream") {
		t.Errorf("Blocked() = %v, want orders.created listed", s.Blocked())
	}
	natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{Name: "ORDERS"}, "orders.>")
	if err := s.Send(ctx(t), batch); err != nil {
		t.Fatalf("Send after the stream exists: %v", err)
	}
	if len(s.Blocked()) != 0 || s.Stats().NoStream != 2 {
		t.Errorf("Blocked() = %v, NoStream = %d; want none blocked after delivery, 2 counted", s.Blocked(), s.Stats().NoStream)
	}
}

// A Route naming a subject no stream takes fails that record only (retryable, never blocking), and the
// later record of its key waits behind it; other keys are delivered.
func TestRouteWithoutStreamFailsOnlyThatRecord(t *testing.T) {
	srv := natstest.Start(t, nil)
	stream := natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{Name: "EVENTS"}, "events.>")
	s := newLocal(t, srv.URL(), nil)
	batch := []outbox.Record{sinktest.Record("a", 0), sinktest.Record("a", 1), sinktest.Record("b", 0)}
	batch[0].Route, batch[1].Route, batch[2].Route = "nowhere.x", "events.a", "events.b"
	errs := sinktest.RecordErrors(t, s.Send(ctx(t), batch), 3)
	if errs[0] == nil || outbox.IsUnavailable(errs[0]) || outbox.IsPermanent(errs[0]) {
		t.Errorf("record to a subject without stream: %v, want a retryable per-record error", errs[0])
	}
	if !errors.Is(errs[1], outbox.ErrNotAttempted) {
		t.Errorf("later record of its key: %v, want not attempted", errs[1])
	}
	if errs[2] != nil {
		t.Errorf("other key: %v, want delivered", errs[2])
	}
	_, js := natstest.Connect(t, srv.URL())
	if got := ids(t, js, stream); len(got) != 1 || got[0] != batch[2].ID {
		t.Errorf("stream holds %v, want only %s", got, batch[2].ID)
	}
	if len(s.Blocked()) != 0 {
		t.Errorf("Blocked() = %v: a Route must never block its destination", s.Blocked())
	}
}

// A message over the server's max_payload fails permanently, naming its size and the limit; its
// neighbours, its own key's included, are delivered.
func TestOverMaxPayloadIsPermanent(t *testing.T) {
	srv := natstest.Start(t, func(o *server.Options) { o.MaxPayload = 8 << 10 })
	stream := natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{}, "big.one")
	s := newLocal(t, srv.URL(), func(c *natssink.Config) { c.Subjects = map[string]string{"sinktest": "big.one"} })
	batch := []outbox.Record{sinktest.Record("a", 0), sinktest.Record("a", 1), sinktest.Record("a", 2)}
	batch[1].Payload = bytes.Repeat([]byte{'x'}, 9<<10)
	errs := sinktest.RecordErrors(t, s.Send(ctx(t), batch), 3)
	if !outbox.IsPermanent(errs[1]) || !strings.Contains(errs[1].Error(), "max_payload 8192") {
		t.Errorf("too large: %v, want permanent naming max_payload 8192", errs[1])
	}
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("neighbours: %v, %v; want delivered", errs[0], errs[2])
	}
	_, js := natstest.Connect(t, srv.URL())
	if got := ids(t, js, stream); fmt.Sprint(got) != fmt.Sprint([]string{batch[0].ID, batch[2].ID}) {
		t.Errorf("stream holds %v", got)
	}
}

// A full stream (discard new) blocks: the records it refuses are unavailable, and the later records of
// their keys are not sent, so nothing of a key is stored after a record of it that was refused.
func TestFullStreamKeepsOrderPerKey(t *testing.T) {
	srv := natstest.Start(t, nil)
	stream := natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{MaxMsgs: 3, Discard: jetstream.DiscardNew}, "full.one")
	s := newLocal(t, srv.URL(), func(c *natssink.Config) { c.Subjects = map[string]string{"sinktest": "full.one"} })
	// The first record of each key is published at once; the second of a key only after its first's PubAck.
	batch := []outbox.Record{sinktest.Record("a", 0), sinktest.Record("b", 0), sinktest.Record("a", 1),
		sinktest.Record("c", 0), sinktest.Record("a", 2), sinktest.Record("b", 1)}
	errs := sinktest.RecordErrors(t, s.Send(ctx(t), batch), 6)
	for i, want := range []string{"nil", "nil", "unavailable", "nil", "not attempted", "unavailable"} {
		got := "nil"
		switch e := errs[i]; {
		case e == nil:
		case outbox.IsUnavailable(e):
			got = "unavailable"
		case errors.Is(e, outbox.ErrNotAttempted):
			got = "not attempted"
		default:
			got = e.Error()
		}
		if got != want {
			t.Errorf("record %d (%s): %s, want %s", i, batch[i].ID, got, want)
		}
	}
	_, js := natstest.Connect(t, srv.URL())
	if got := ids(t, js, stream); fmt.Sprint(got) != fmt.Sprint([]string{batch[0].ID, batch[1].ID, batch[3].ID}) {
		t.Errorf("stream holds %v, want the first record of each key", got)
	}
}

// The same message published twice is stored once: the second PubAck says duplicate (Nats-Msg-Id).
func TestRedeliveryIsDeduplicated(t *testing.T) {
	srv := natstest.Start(t, nil)
	stream := natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{Duplicates: time.Minute}, "dup.one")
	s := newLocal(t, srv.URL(), func(c *natssink.Config) { c.Subjects = map[string]string{"sinktest": "dup.one"} })
	batch := []outbox.Record{sinktest.Record("a", 0), sinktest.Record("a", 1)}
	for range 2 {
		if err := s.Send(ctx(t), batch); err != nil {
			t.Fatal(err)
		}
	}
	_, js := natstest.Connect(t, srv.URL())
	if got := ids(t, js, stream); len(got) != 2 {
		t.Errorf("stream holds %v after sending the batch twice, want each id once", got)
	}
	if st := s.Stats(); st.Duplicates != 2 || st.Delivered != 4 {
		t.Errorf("Stats = %+v, want 4 delivered of which 2 duplicates", st)
	}
}

// The server goes away: Sends fail as unavailable without waiting for the PubAck timeout, and deliver
// again once it is back (same port, same store).
func TestServerDownIsUnavailableThenRecovers(t *testing.T) {
	srv := natstest.Start(t, nil)
	stream := natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{Name: "DOWN"}, "down.one")
	s := newLocal(t, srv.URL(), func(c *natssink.Config) {
		c.Subjects = map[string]string{"sinktest": "down.one"}
		c.AckTimeout = time.Minute // a failure must not come from the timeout
	})
	if err := s.Send(ctx(t), []outbox.Record{sinktest.Record("a", 0)}); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	started := time.Now()
	batch := []outbox.Record{sinktest.Record("a", 1), sinktest.Record("b", 0)}
	for i, e := range sinktest.RecordErrors(t, s.Send(ctx(t), batch), 2) {
		if !outbox.IsUnavailable(e) {
			t.Errorf("record %d while the server is down: %v, want unavailable", i, e)
		}
	}
	if took := time.Since(started); took > 30*time.Second {
		t.Errorf("Send took %s while the server was down: it waited for the PubAck timeout", took)
	}
	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.Send(ctx(t), batch)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Send 30s after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, js := natstest.Connect(t, srv.URL())
	if got := ids(t, js, stream); len(got) != 3 {
		t.Errorf("stream holds %v, want 3 messages", got)
	}
}

// A PubAck that never comes (a plain subscriber, not a stream, takes the subject) fails the record as
// unavailable after AckTimeout.
func TestAckTimeoutIsUnavailable(t *testing.T) {
	srv := natstest.Start(t, nil)
	nc, _ := natstest.Connect(t, srv.URL())
	if _, err := nc.Subscribe("silent.one", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	s := newLocal(t, srv.URL(), func(c *natssink.Config) {
		c.Subjects = map[string]string{"sinktest": "silent.one"}
		c.AckTimeout = 300 * time.Millisecond
	})
	errs := sinktest.RecordErrors(t, s.Send(ctx(t), []outbox.Record{sinktest.Record("a", 0), sinktest.Record("a", 1)}), 2)
	if !outbox.IsUnavailable(errs[0]) || !strings.Contains(errs[0].Error(), "no PubAck within 300ms") {
		t.Errorf("record without PubAck: %v, want unavailable naming the timeout", errs[0])
	}
	if !errors.Is(errs[1], outbox.ErrNotAttempted) {
		t.Errorf("later record of its key: %v, want not attempted", errs[1])
	}
}

// Headers: the sink's own and the message's are carried; a message can set neither Nats-* headers (a
// Nats-Rollup would purge the stream) nor the sink's, nor a value that would break the header block.
func TestHeadersCarriedAndReservedDropped(t *testing.T) {
	srv := natstest.Start(t, nil)
	stream := natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{AllowRollup: true}, "hdr.one")
	s := newLocal(t, srv.URL(), func(c *natssink.Config) { c.Subjects = map[string]string{"sinktest": "hdr.one"} })
	first, r := sinktest.Record("a", 0), sinktest.Record("a", 1)
	r.Headers = map[string]string{"traceparent": "00-abc-def-01", "Nats-Rollup": "all", "nats-msg-id": "other",
		"pgoutbox-id": "forged", "x-bad": "a\r\nNats-Rollup: all"}
	if err := s.Send(ctx(t), []outbox.Record{first, r}); err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, srv.URL())
	msgs, err := natstest.ReadAll(ctx(t), js, stream)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("stream holds %d messages (%v), want 2: a rollup header must not purge it", len(msgs), err)
	}
	h := msgs[1].Headers()
	if h.Get("traceparent") != "00-abc-def-01" || h.Get(natssink.HeaderID) != r.ID || h.Get(natssink.HeaderMsgID) != r.ID ||
		h.Get(natssink.HeaderKey) != "a" || h.Get(natssink.HeaderType) != r.Type {
		t.Errorf("headers %v", h)
	}
	for _, k := range []string{"Nats-Rollup", "nats-msg-id", "x-bad"} {
		if _, ok := h[k]; ok {
			t.Errorf("header %s was sent", k)
		}
	}
	if n := s.Stats().DroppedHeaders; n != 4 {
		t.Errorf("DroppedHeaders = %d, want 4", n)
	}
}

// Routes: a configured subject wins over the Route; without one the Route must be an allowed subject,
// and never one of the server's own ($JS API, _INBOX).
func TestRouteRules(t *testing.T) {
	srv := natstest.Start(t, nil)
	stream := natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{}, "fixed.one", "orders.>")
	s := newLocal(t, srv.URL(), func(c *natssink.Config) {
		c.Subjects = map[string]string{"fixed": "fixed.one"}
		c.AllowedSubjects = map[string][]string{"routed": {"orders.*"}}
	})
	mk := func(dest, route string) outbox.Record {
		r := sinktest.Record(dest+route, 0)
		r.Destination, r.Route = outbox.Destination(dest), route
		return r
	}
	batch := []outbox.Record{mk("fixed", "orders.x"), mk("routed", "orders.eu"), mk("routed", "orders.eu.x"),
		mk("routed", "$JS.API.STREAM.DELETE."+stream), mk("free", "$JS.API.STREAM.PURGE."+stream), mk("free", "orders.>"), mk("free", "")}
	errs := sinktest.RecordErrors(t, s.Send(ctx(t), batch), len(batch))
	for i, wantOK := range []bool{true, true, false, false, false, false, false} {
		if ok := errs[i] == nil; ok != wantOK || !ok && !outbox.IsPermanent(errs[i]) {
			t.Errorf("record %d (%s → %q): %v, want delivered %v (else permanent)", i, batch[i].Destination, batch[i].Route, errs[i], wantOK)
		}
	}
	_, js := natstest.Connect(t, srv.URL())
	msgs, err := natstest.ReadAll(ctx(t), js, stream)
	var subjects []string
	for _, m := range msgs {
		subjects = append(subjects, m.Subject())
	}
	slices.Sort(subjects) // records of different keys may arrive in any order
	if err != nil || fmt.Sprint(subjects) != "[fixed.one orders.eu]" {
		t.Fatalf("stream holds %v (%v), want fixed.one and orders.eu", subjects, err)
	}
}

// A key, type or destination with CR LF neither adds a header (a Nats-Rollup would purge the stream)
// nor arrives altered: the sink's header values are percent-encoded when they hold control characters
// (nats.go alone turned CR LF into spaces).
func TestHeaderValuesCannotInjectHeaders(t *testing.T) {
	srv := natstest.Start(t, nil)
	stream := natstest.CreateStream(t, srv.URL(), jetstream.StreamConfig{AllowRollup: true}, "inj.one")
	s := newLocal(t, srv.URL(), func(c *natssink.Config) { c.Subjects = map[string]string{"sinktest": "inj.one"} })
	first, r := sinktest.Record("a", 0), sinktest.Record("b", 0)
	r.Key, r.Type = "k\r\nNats-Rollup: all", "t\r\nNats-Rollup: sub"
	if err := s.Send(ctx(t), []outbox.Record{first, r}); err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, srv.URL())
	msgs, err := natstest.ReadAll(ctx(t), js, stream)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("stream holds %d messages (%v), want 2: a key must not roll the stream up", len(msgs), err)
	}
	if h := msgs[1].Headers(); h.Get(natssink.HeaderKey) != "k%0D%0ANats-Rollup: all" || h.Get("Nats-Rollup") != "" {
		t.Errorf("headers %v", h)
	}
}
