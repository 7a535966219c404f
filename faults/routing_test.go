//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// routedTraffic commits rounds of transactions whose messages carry Routes, remembering where each
// committed message must end up: a topic, or "dead" (dead-lettered, with the reason it must name).
type routedTraffic struct {
	l    *oracle.Ledger
	mu   sync.Mutex
	want map[string]string // id → topic, or "dead:<substring of the error>"
}

func (rt *routedTraffic) add(msgs []outbox.Message, where []string, rollback bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := rt.l.Commit(ctx, msgs, nil, rollback); err != nil {
		return err
	}
	if !rollback {
		rt.mu.Lock()
		for i, m := range msgs {
			rt.want[m.ID] = where[i]
		}
		rt.mu.Unlock()
	}
	return nil
}

// Route to a topic outside allowed_topics: destination "orders" takes its topic from each message's
// Route within routes.orders.kafka.allowed_topics. Messages routed inside the list are delivered in
// order per key; those routed outside it (to a topic that exists) are dead-lettered at once naming the
// rule, in the middle of their key's stream; those routed to a missing topic inside the list are retried
// then dead-lettered without ever blocking the destination. Meanwhile event_bus, with a configured topic,
// carries generated traffic and messages whose Routes name other topics: all of it lands in the
// configured topic.
func TestRouteOutsideAllowedTopics(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	e := newEnv(t, nil).withTopic(brokers, 3, nil) // event_bus's configured topic
	base := kafkatest.TopicName(t)
	inA, inB, audit, outside := base+".in.a", base+".in.b", base+".audit", base+".out"
	missing := base + ".in.missing"
	for _, tp := range []string{inA, inB, audit, outside} {
		kafkatest.CreateTopic(t, brokers, tp, 2, nil)
	}
	allowed := []string{base + ".in.*", audit}
	rule := "not an allowed topic (allowed topics: " + strings.Join(allowed, ", ") + ")"

	path := e.config("routing").write(t)
	yaml, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	orders := fmt.Sprintf("  orders: {kafka: {allowed_topics: [%q, %q]}}\n", allowed[0], allowed[1])
	if err := os.WriteFile(path, []byte(strings.Replace(string(yaml), "routes:\n", "routes:\n"+orders, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "relay", "--config", path, "run")
	d.waitStreaming(60 * time.Second)
	if !d.stderr.contains(`"sink":"kafka topic from each message's Route, allowed: `+strings.Join(allowed, ", ")) ||
		!d.stderr.contains(`"sink":"kafka topic `+e.topic+` (configured: every message goes there, its Route is ignored); format raw"`) {
		t.Errorf("the startup log does not say how orders and event_bus are routed:\n%s", d.stderr.tail(30))
	}

	watched := []*topic.Watcher{e.w}
	for _, tp := range []string{inA, inB, audit} {
		watched = append(watched, topic.Watch(t, brokers, tp))
	}
	chk := e.l.WatchI4(t, oracle.I4Config{Slot: e.slot, Every: 150 * time.Millisecond,
		Delivered: func(id string) bool {
			for _, w := range watched {
				if w.Has(id) {
					return true
				}
			}
			return false
		},
		CaughtUp: func(ctx context.Context) bool {
			for _, w := range watched {
				if !w.CaughtUp(ctx) {
					return false
				}
			}
			return true
		}})

	// Never blocked: sample the destination's blocked gauge while the traffic runs.
	var blockedSeen atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if d.metric(`pgoutbox_destination_blocked{destination="orders"}`) == "1" {
				blockedSeen.Add(1)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	gen := e.l.Generate(oracle.GenConfig{Prefix: "bus", Pause: 5 * time.Millisecond, MaxTx: 150})
	rt := &routedTraffic{l: e.l, want: map[string]string{}}
	for i := range 60 {
		var msgs []outbox.Message
		var where []string
		add := func(dest outbox.Destination, key, route, to string) {
			m := oracle.NewMessage(key, 0, i)
			m.Destination, m.Route = dest, route
			msgs, where = append(msgs, m), append(where, to)
		}
		add("orders", fmt.Sprintf("rt-a-k%d", i%4), inA, inA)
		add("orders", fmt.Sprintf("rt-b-k%d", i%3), inB, inB)
		add("orders", "rt-audit", audit, audit)
		if i%10 == 5 { // outside the list, in the middle of a key's stream
			add("orders", fmt.Sprintf("rt-a-k%d", i%4), outside, "dead:"+rule)
		}
		if i == 20 || i == 40 { // inside the list, but the topic does not exist
			add("orders", "rt-b-k0", missing, "dead:"+missing)
		}
		// event_bus has a configured topic: every Route is ignored.
		add(outbox.EventBus, fmt.Sprintf("fix-k%d", i%3), []string{"bench", outside, inA, ""}[i%4], e.topic)
		if err := rt.add(msgs, where, i%7 == 3); err != nil {
			t.Fatalf("commit round %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := gen.Wait(); err != nil {
		t.Fatalf("generator: %v", err)
	}
	sources := []oracle.Source{topic.Source(t, brokers, e.topic), topic.Source(t, brokers, inA),
		topic.Source(t, brokers, inB), topic.Source(t, brokers, audit), topic.Source(t, brokers, outside)}
	v := e.l.Verify(t, 90*time.Second, false, func(ctx context.Context) ([]oracle.Delivery, error) {
		var all []oracle.Delivery
		for _, src := range sources {
			ds, err := src(ctx)
			if err != nil {
				return nil, err
			}
			all = append(all, ds...)
		}
		return all, nil
	})
	chk.Stop()
	close(stopSampling)
	<-sampled

	// Every routed message is where it belongs: its topic, or the dead letters with the reason.
	found := map[string]string{}
	for _, tp := range []string{e.topic, inA, inB, audit, outside} {
		for _, r := range kafkatest.ReadAll(t, brokers, tp) {
			id, _ := kafkatest.Header(r, "pgoutbox-id")
			found[id] = tp
		}
	}
	dead := deadLetters(t, e.pool)
	wantDead, wrong, busRouted := 0, 0, 0
	for id, to := range rt.want {
		if to == e.topic {
			busRouted++
		}
		if why, ok := strings.CutPrefix(to, "dead:"); ok {
			wantDead++
			if got, ok := dead[id]; !ok || !strings.Contains(got, why) {
				wrong++
				t.Errorf("message %s: dead letter %v %q, want one containing %q", id, ok, got, why)
			}
			continue
		}
		if found[id] != to {
			wrong++
			t.Errorf("message %s: in topic %q, want %q", id, found[id], to)
		}
	}
	if len(dead) != wantDead {
		t.Errorf("%d dead letters, want exactly the %d routed outside the list or to a missing topic", len(dead), wantDead)
	}
	if n := blockedSeen.Load(); n != 0 {
		t.Errorf("destination orders was reported blocked in %d samples: a Route must never block it", n)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("Route to a topic outside allowed_topics (and to a missing topic inside it); a configured topic wins over the Route", v, 0,
		fmt.Sprintf("%d dead-lettered naming the rule or the missing topic, never blocked; %d Route-carrying messages of a destination with a configured topic all in it; %d misrouted; %s",
			wantDead, busRouted, wrong, chk.String()))
}
