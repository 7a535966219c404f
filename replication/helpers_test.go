package replication_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/replication"
)

const schema = "app"

// newDB returns an isolated database with the outbox schema (table, relay table, publication).
func newDB(t *testing.T) *pgtest.DB {
	t.Helper()
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := outbox.Migrate(ctx, db.Pool, schema); err != nil {
		t.Fatal(err)
	}
	return db
}

func newSlot() string { return "t_" + pgtest.RandomSuffix() }

func testConfig(slot, instance string) replication.Config {
	c := replication.DefaultConfig(schema)
	c.Slot = slot
	c.InstanceID = instance
	c.StatusInterval = 200 * time.Millisecond
	c.StandbyPoll = 100 * time.Millisecond
	c.ReconnectMin = 50 * time.Millisecond
	c.ReconnectMax = 500 * time.Millisecond
	return c
}

// runner runs a Stream in the background and reads its events.
type runner struct {
	s       *replication.Stream
	out     chan []replication.Event
	cancel  context.CancelFunc
	done    chan error
	pending []replication.Event
}

func start(t *testing.T, db *pgtest.DB, cfg replication.Config, opts ...replication.Option) *runner {
	t.Helper()
	return startBuffered(t, db, 16, cfg, opts...)
}

// startBuffered is start with out's buffer size.
func startBuffered(t *testing.T, db *pgtest.DB, buffer int, cfg replication.Config, opts ...replication.Option) *runner {
	t.Helper()
	opts = append([]replication.Option{replication.WithLogger(zaptest.NewLogger(t))}, opts...)
	s, err := replication.New(db.ConnString, cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return run(t, s, buffer)
}

// run runs s in the background until the test ends; out has room for buffer batches.
func run(t *testing.T, s *replication.Stream, buffer int) *runner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{s: s, out: make(chan []replication.Event, buffer), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx, r.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Error("Run did not return within 15s of cancellation")
		}
	})
	return r
}

// wait returns Run's result, failing the test if it does not return within d.
func (r *runner) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // keep it for cleanup
		return err
	case <-time.After(d):
		t.Fatalf("Run did not return within %s (state %s)", d, r.s.State())
		return nil
	}
}

func (r *runner) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t, 15*time.Second)
}

func (r *runner) waitState(t *testing.T, want replication.State, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if r.s.State() == want {
			return
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned %v while waiting for state %s", err, want)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("state is %s, want %s after %s", r.s.State(), want, d)
}

// next returns the next event satisfying keep (nil: any), skipping others; it fails after d.
func (r *runner) next(t *testing.T, d time.Duration, keep func(replication.Event) bool) replication.Event {
	t.Helper()
	deadline := time.After(d)
	for {
		for len(r.pending) > 0 {
			ev := r.pending[0]
			r.pending = r.pending[1:]
			if keep == nil || keep(ev) {
				return ev
			}
		}
		select {
		case batch := <-r.out:
			r.pending = append(r.pending, batch...)
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned %v while waiting for an event", err)
		case <-deadline:
			t.Fatalf("no matching event within %s (state %s)", d, r.s.State())
		}
	}
}

// nextMessage returns the next XLogData event decoded with pglogrepl (protocol v1).
func (r *runner) nextMessage(t *testing.T, d time.Duration) (replication.Event, pglogrepl.Message) {
	t.Helper()
	ev := r.next(t, d, func(ev replication.Event) bool { return ev.Kind != replication.Keepalive })
	if ev.Kind != replication.XLogData {
		return ev, nil
	}
	msg, err := pglogrepl.Parse(ev.Data)
	if err != nil {
		t.Fatalf("parse pgoutput message: %v", err)
	}
	return ev, msg
}

// nextCommit skips to the next Commit message.
func (r *runner) nextCommit(t *testing.T, d time.Duration) *pglogrepl.CommitMessage {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		_, msg := r.nextMessage(t, time.Until(deadline))
		if c, ok := msg.(*pglogrepl.CommitMessage); ok {
			return c
		}
	}
}

// insert commits n outbox rows in one transaction, with payload p.
func insert(t *testing.T, db *pgtest.DB, n int, p string) {
	t.Helper()
	db.Exec(t, `INSERT INTO app.pkg_outbox (id, destination, payload)
		SELECT gen_random_uuid(), 'dest', convert_to($2, 'UTF8') FROM generate_series(1, $1)`, n, p)
}

func slotConfirmed(t *testing.T, db *pgtest.DB, slot string) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := db.Pool.QueryRow(context.Background(), `SELECT COALESCE(confirmed_flush_lsn::text, '0/0')
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s); err != nil {
		t.Fatalf("slot %s: %v", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func activePID(t *testing.T, db *pgtest.DB, slot string) int64 {
	t.Helper()
	return db.QueryInt(t, `SELECT COALESCE(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, slot)
}

// eventually polls f every 50ms until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")
