//go:build faults

package faults

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// A column is added to the outbox table while the relay streams and transactions commit.
func TestColumnAddedMidStream(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	d := e.start("relay", e.config("alter"))
	chk := e.l.WatchI4(t, e.w.I4(e.slot))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "alter", Pause: 5 * time.Millisecond})
	time.Sleep(time.Second)
	e.db.Exec(t, "ALTER TABLE app.pkg_outbox ADD COLUMN extra text DEFAULT 'x'")
	time.Sleep(time.Second)
	e.db.Exec(t, "ALTER TABLE app.pkg_outbox ADD COLUMN extra2 bigint")
	time.Sleep(time.Second)
	_ = gen.Stop()
	v := e.l.Verify(t, 60*time.Second, false, topic.Source(t, e.brokers, e.topic))
	chk.Stop()
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("columns added to pkg_outbox mid-stream (2 ALTER TABLE)", v, 0, chk.String())
}

// vmHWM returns the peak resident memory of pid in MiB (0 when unknown).
func vmHWM(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}

// A 100k-row transaction and an aborted 100k-row one, with pgoutput streaming off and on (the walsender's
// logical_decoding_work_mem lowered to 64kB so that the transactions are really streamed).
func TestLargeTransactions(t *testing.T) {
	for _, streaming := range []bool{false, true} {
		t.Run(fmt.Sprintf("streaming=%v", streaming), func(t *testing.T) {
			e := newEnv(t, nil)
			c := e.config("large")
			c.Stdout = true
			if streaming {
				u, _ := url.Parse(c.URL)
				if u.RawQuery != "" {
					u.RawQuery += "&"
				}
				u.RawQuery += "options=-c%20logical_decoding_work_mem%3D64kB"
				c.URL = u.String()
				c.Extra = "streaming:\n  enabled: true\n  memory_limit: 8MiB\n  spill_dir: " + t.TempDir() + "\n"
			}
			d := e.start("relay", c)
			const n = 100_000
			build := func(prefix string) []outbox.Message {
				msgs := make([]outbox.Message, n)
				for i := range msgs {
					msgs[i] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("%s-k%d", prefix, i%100), Type: "Test",
						Payload: []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("p", 100)))}
				}
				return msgs
			}
			small := e.l.Generate(oracle.GenConfig{Prefix: "around", MaxTx: 50, Pause: 10 * time.Millisecond})
			if err := e.l.Commit(context.Background(), build("aborted"), nil, true); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := e.l.Commit(context.Background(), build("big"), nil, false); err != nil {
				t.Fatal(err)
			}
			<-small.Done()
			v := e.l.Verify(t, 180*time.Second, false, stdoutSource(t, d))
			took := time.Since(start)
			peak := vmHWM(d.pid())
			if code := d.stop(30 * time.Second); code != 0 {
				t.Errorf("SIGTERM: exit %d", code)
			}
			e.row(fmt.Sprintf("100k-row transaction + aborted 100k-row one, streaming %v (stdout)", map[bool]string{false: "off", true: "on"}[streaming]), v, 0,
				fmt.Sprintf("big transaction delivered in %s; relay peak RSS %d MiB; 0 of the aborted 100k delivered", took.Round(100*time.Millisecond), peak))
		})
	}
}

// Payloads of 2 KB, 100 KB, 900 KB and 5 MB through Kafka, the topic accepting 2 MB: the first three
// arrive byte-exact, the 5 MB one is dead-lettered with the reason.
func TestPayloadSizes(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, map[string]string{"max.message.bytes": "2097152"})
	c := e.config("payloads")
	c.KafkaExtra = "  max_message_bytes: 2MiB\n"
	d := e.start("relay", c)
	var big string
	for i, size := range []int{2 << 10, 100 << 10, 900 << 10, 5 << 20, 2 << 10, 900 << 10} {
		p := make([]byte, size)
		_, _ = rand.Read(p)
		m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("size-k%d", i%2), Type: "Test", Payload: p}
		if size == 5<<20 {
			big = m.ID
		}
		if err := e.l.Commit(context.Background(), []outbox.Message{m}, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	v := e.l.Verify(t, 60*time.Second, false, topic.Source(t, e.brokers, e.topic))
	dead := deadLetters(t, e.pool)
	why, ok := dead[big]
	if !ok || !strings.Contains(why, "2097152") {
		t.Errorf("5 MB message: dead letter %v %q, want one naming the limit", ok, why)
	}
	if len(dead) != 1 {
		t.Errorf("%d dead letters, want only the 5 MB one", len(dead))
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("payloads 2 KB, 100 KB, 900 KB (×2 keys) byte-exact; 5 MB over the topic's 2 MiB", v, 0, "5 MB dead-lettered: "+trim(why, 110))
}

// Traffic only in another database of the cluster: the idle slot still advances (keepalive WAL ends are
// confirmed when nothing is in flight), so after a CHECKPOINT its retained WAL is bounded.
func TestOtherDatabaseTraffic(t *testing.T) {
	cluster := pgtest.NewCluster(t)
	e := newEnv(t, cluster.NewDB(t))
	other := cluster.NewDB(t)
	c := e.config("otherdb")
	c.Stdout = true
	d := e.start("relay", c)
	gen := e.l.Generate(oracle.GenConfig{Prefix: "own", MaxTx: 10})
	<-gen.Done()
	e.l.Verify(t, 30*time.Second, false, stdoutSource(t, d))
	var startLSN string
	_ = e.pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&startLSN)
	other.Exec(t, "CREATE TABLE churn (id bigserial, pad text)")
	for range 4 {
		other.Exec(t, "INSERT INTO churn (pad) SELECT repeat('x', 500) FROM generate_series(1, 40000)")
	}
	generated := e.db.QueryInt(t, "SELECT (pg_current_wal_lsn() - $1::pg_lsn)::bigint", startLSN)
	var retained, lag int64
	deadline := time.Now().Add(60 * time.Second)
	for {
		e.db.Exec(t, "CHECKPOINT")
		time.Sleep(1500 * time.Millisecond)
		_ = e.pool.QueryRow(context.Background(), `SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&retained, &lag)
		if retained < 16<<20 || time.Now().After(deadline) {
			break
		}
	}
	if retained >= 16<<20 {
		t.Errorf("retained WAL %d bytes (lag %d) after %d bytes of other-database traffic and checkpoints: the idle slot does not advance", retained, lag, generated)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	v := e.l.Check(stdoutDeliveries(t, d), deadLetters(t, e.pool)).Assert(t, false)
	e.row("traffic only in another database (private cluster), then CHECKPOINT", v, 0,
		fmt.Sprintf("%d MiB of WAL generated elsewhere; slot retains %d KiB, lag %d KiB afterwards", generated>>20, retained>>10, lag>>10))
}
