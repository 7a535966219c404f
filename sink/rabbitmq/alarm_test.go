package rabbitmq_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// A memory alarm makes the broker block publishing (connection.blocked): records fail as unavailable,
// naming the alarm, instead of stalling on a connection the broker no longer reads; once it clears,
// they are delivered.
func TestBrokerAlarmIsUnavailable(t *testing.T) {
	node := rabbitmqtest.Own(t) // an alarm is node-wide
	url, script := node.URL, node.Run
	ex, queues := rabbitmqtest.Topology(t, url, "direct", "rk")
	s := newRouted(t, url, map[string]rabbitmq.Destination{"d": {Exchange: ex, RoutingKey: "rk"}}, func(c *rabbitmq.Config) {
		c.ConfirmTimeout = 3 * time.Second
	})
	if err := s.Send(ctx(t), []outbox.Record{routed("d", "", "a", 0)}); err != nil {
		t.Fatal(err)
	}
	script("ctl", "set_vm_memory_high_watermark", "0.000001")
	batch := []outbox.Record{routed("d", "", "a", 1), routed("d", "", "b", 0)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := s.Send(ctx(t), batch)
		if err != nil && strings.Contains(err.Error(), "blocks publishing") {
			for i, e := range sinktest.RecordErrors(t, err, 2) {
				if !outbox.IsUnavailable(e) {
					t.Errorf("record %d during the alarm: %v, want unavailable", i, e)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60s into the alarm Send still returns %v, want unavailable naming the block", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	script("ctl", "set_vm_memory_high_watermark", "0.4")
	for err := s.Send(ctx(t), batch); err != nil; err = s.Send(ctx(t), batch) {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("after the alarm cleared: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := ids(rabbitmqtest.OpenQueue(t, url, queues[0]).Drain()); !strings.Contains(got, "a-000001") || !strings.Contains(got, "b-000000") {
		t.Errorf("queue holds %s", got)
	}
}
