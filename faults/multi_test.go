//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// multiOutbox is one entry of a scenario's outboxes list.
type multiOutbox struct {
	name, url, schema, slot string
	route                   string // the event_bus route, a YAML flow mapping
}

// writeMultiConfig writes a daemon configuration running outboxes, with the suite's fast retries.
func writeMultiConfig(t *testing.T, brokers []string, outboxes ...multiOutbox) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("instance_id: multi\n")
	fmt.Fprintf(&b, "kafka:\n  brokers: [%s]\n", strings.Join(brokers, ", "))
	b.WriteString("  dial_timeout: 2s\n  read_timeout: 5s\n  write_timeout: 5s\n  produce_timeout: 5s\n  retry_backoff: 100ms\n")
	b.WriteString("delivery:\n  max_attempts: 4\n  backoff_min: 20ms\n  backoff_max: 500ms\n  handler_timeout: 8s\n")
	b.WriteString("http:\n  listen: 127.0.0.1:0\nslot_poll_interval: 500ms\ndrain_timeout: 15s\nlog:\n  level: info\noutboxes:\n")
	for _, o := range outboxes {
		fmt.Fprintf(&b, "  - name: %s\n    database: {url: %q}\n    schema: %s\n    slot: %s\n    routes: {event_bus: %s}\n",
			o.name, o.url, o.schema, o.slot, o.route)
	}
	p := filepath.Join(t.TempDir(), "pgoutbox-multi.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rate is what a topic received and what its ledger committed over a window, per second.
type rate struct{ delivered, committed float64 }

func (r rate) String() string {
	return fmt.Sprintf("%.0f msgs/s delivered (%.0f committed/s)", r.delivered, r.committed)
}

// measure returns e's delivery and commit rates over the next d.
func (e *env) measure(d time.Duration) rate {
	c0, n0 := e.l.Counts().Committed, e.w.Count()
	time.Sleep(d)
	c1, n1 := e.l.Counts().Committed, e.w.Count()
	return rate{delivered: float64(n1-n0) / d.Seconds(), committed: float64(c1-c0) / d.Seconds()}
}

// One daemon, three outboxes in two databases, each under its own load: steady (shared cluster, schema
// app → Kafka), blocked (the same database, schema billing → a webhook) and stopped (a private
// cluster → Kafka). The webhook answers 503 and the private cluster is stopped, both for 20 s: steady
// delivers throughout (a marker committed mid-fault arrives before the faults are lifted; its rate is
// measured before and during), /readyz names the two faulty outboxes while steady stays ready, the
// daemon never exits; after recovery all three reach the end with 0 lost.
func TestMultiOutboxIsolation(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	steady := newEnv(t, nil).withTopic(brokers, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := outbox.Migrate(ctx, steady.pool, "billing"); err != nil {
		t.Fatal(err)
	}
	billing := oracle.New(steady.pool, "billing")
	h := newHook(t, billing, "/hooks")
	cluster := pgtest.NewCluster(t)
	stopped := newEnv(t, cluster.NewDB(t)).withTopic(brokers, 3, nil)
	kafkaRoute := func(topic string) string { return fmt.Sprintf("{kafka: {topic: %q}}", topic) }
	file := writeMultiConfig(t, brokers,
		multiOutbox{"steady", steady.db.ConnString, "app", steady.slot, kafkaRoute(steady.topic)},
		multiOutbox{"blocked", steady.db.ConnString, "billing", steady.slot + "_billing", fmt.Sprintf("{webhook: {url: %q, timeout: 5s}}", h.url())},
		multiOutbox{"stopped", stopped.db.ConnString, "app", stopped.slot, kafkaRoute(stopped.topic)})
	d := startDaemon(t, "relay", "--config", file, "run")
	d.waitHTTP("/readyz", 60*time.Second, func(code int, body string) bool { return code == 200 && strings.Contains(body, "ready: 3 outboxes") })

	chk := steady.l.WatchI4(t, steady.w.I4(steady.slot))
	gens := []*oracle.Generator{
		steady.l.Generate(oracle.GenConfig{Prefix: "steady", Pause: 5 * time.Millisecond}),
		billing.Generate(oracle.GenConfig{Prefix: "billing", Pause: 20 * time.Millisecond}),
		stopped.l.Generate(oracle.GenConfig{Prefix: "stopped", Pause: 20 * time.Millisecond}),
	}
	time.Sleep(2 * time.Second)
	before := steady.measure(8 * time.Second)
	markerBefore := steady.markerDelivered(time.Now(), 30*time.Second)

	faultAt := time.Now()
	h.mode.Store(hook503)
	cluster.StopServer(t, "fast")
	during, markerTook, readyz := multiFaultWindow(t, d, steady, faultAt.Add(20*time.Second))
	cluster.StartServer(t)
	h.mode.Store(hookOK)
	up := time.Now()

	recStopped := stopped.markerDelivered(up, 90*time.Second)
	recBlocked := h.markerDelivered(t, up, 90*time.Second)
	time.Sleep(time.Second)
	for i, g := range gens {
		if err := g.Stop(); err != nil && i != 2 { // the stopped database's generator failed while it was down
			t.Errorf("generator %d: %v", i, err)
		}
	}
	vs := []oracle.Verdict{
		steady.l.Verify(t, 90*time.Second, false, topic.Source(t, brokers, steady.topic)),
		billing.Verify(t, 90*time.Second, true, h.source()),
		stopped.l.Verify(t, 90*time.Second, true, topic.Source(t, brokers, stopped.topic)),
	}
	chk.Stop()
	if dead, err := billing.DeadLetters(context.Background()); err != nil || len(dead) != 0 {
		t.Errorf("blocked outbox: %d dead letters (%v), want 0: a 503 is systemic", len(dead), err)
	}
	restarts := strings.Count(d.stderr.tail(100000), "outbox stopped: starting it again")
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	sum := oracle.Verdict{}
	for _, v := range vs {
		sum.Committed += v.Committed
		sum.Lost += v.Lost
		sum.Phantom += v.Phantom
		sum.Dups += v.Dups
		sum.Order += v.Order
	}
	steady.row("3 outboxes in 2 databases, one daemon: webhook 503 and a database stopped, both 20 s", sum, max(recStopped, recBlocked),
		fmt.Sprintf("steady (no fault) %s before, %s during the faults; its marker commit → delivery %s before, %s mid-fault; "+
			"/readyz during: %q; messages steady/blocked/stopped %d/%d/%d; in-process restarts %d; recovery from lifting both (stopped %s, blocked %s); %s",
			before, during, markerBefore.Round(time.Millisecond), markerTook.Round(time.Millisecond),
			readyzSummary(readyz), vs[0].Committed, vs[1].Committed, vs[2].Committed, restarts, dur(recStopped), dur(recBlocked), chk))
}

// multiFaultWindow holds the faults until end while checking that steady goes on: its rate over the
// window, a marker committed mid-fault delivered before the faults are lifted, /readyz naming the
// faulty outboxes and steady ready.
func multiFaultWindow(t *testing.T, d *daemon, steady *env, end time.Time) (during rate, markerTook time.Duration, readyz string) {
	t.Helper()
	measured := make(chan rate, 1)
	go func() { measured <- steady.measure(time.Until(end)) }()
	_, readyz = d.waitHTTP("/readyz", 15*time.Second, func(code int, body string) bool {
		return code == 503 && strings.Contains(body, "steady: ready (state streaming)") &&
			strings.Contains(body, "blocked: not ready:") && strings.Contains(body, "blocked destination event_bus") &&
			strings.Contains(body, "stopped: not ready:")
	})
	time.Sleep(time.Until(end.Add(-15 * time.Second)))
	at := time.Now()
	id := marker(t, steady.l, "marker")
	if !steady.w.WaitFor(id, time.Until(end)) {
		t.Errorf("steady's marker committed mid-fault was not delivered while the other outboxes were faulty")
	}
	markerTook = time.Since(at)
	during = <-measured
	if !d.running() {
		t.Fatalf("the daemon exited (%d) while two of its outboxes were faulty", d.code)
	}
	return during, markerTook, readyz
}

// readyzSummary shortens each line of a /readyz answer for the results table.
func readyzSummary(body string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		out = append(out, trim(strings.TrimPrefix(l, "- "), 75))
	}
	return strings.Join(out, "; ")
}
