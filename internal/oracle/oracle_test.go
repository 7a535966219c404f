package oracle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// fakeT records what the oracle reports.
type fakeT struct {
	mu       sync.Mutex
	errs     []string
	fatals   []string
	cleanups []func()
}

func (f *fakeT) Helper()             {}
func (f *fakeT) Logf(string, ...any) {}
func (f *fakeT) Cleanup(fn func())   { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }
func (f *fakeT) Errorf(s string, a ...any) {
	f.mu.Lock()
	f.errs = append(f.errs, fmt.Sprintf(s, a...))
	f.mu.Unlock()
}
func (f *fakeT) Fatalf(s string, a ...any) {
	f.mu.Lock()
	f.fatals = append(f.fatals, fmt.Sprintf(s, a...))
	f.mu.Unlock()
}

func (f *fakeT) errors() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.errs...)
}

func (f *fakeT) cleanup() {
	for _, fn := range slices.Backward(f.cleanups) {
		fn()
	}
}

func msg(id, key, payload string) outbox.Message {
	return outbox.Message{ID: id, Destination: outbox.EventBus, Key: key, Payload: []byte(payload)}
}

func deliver(ms ...outbox.Message) []Delivery {
	out := make([]Delivery, len(ms))
	for i, m := range ms {
		out[i] = Delivery{ID: m.ID, Key: m.Key, Payload: m.Payload}
	}
	return out
}

// ledgerOf commits a1, a2, a3 on key a and b1 on key b (in that order), rolls back r1 and
// leaves u1 indeterminate.
func ledgerOf() (*Ledger, map[string]outbox.Message) {
	m := map[string]outbox.Message{}
	for _, x := range []outbox.Message{msg("a1", "a", "p1"), msg("a2", "a", "p2"), msg("a3", "a", "p3"), msg("b1", "b", "q1"),
		msg("r1", "a", "rolled back"), msg("u1", "b", "unknown")} {
		m[x.ID] = x
	}
	l := New(nil, "app")
	l.RecordCommitted(0, m["a1"], m["b1"])
	l.RecordCommitted(0, m["a2"], m["a3"])
	l.RecordRolledBack(m["r1"])
	l.RecordUnknown(m["u1"])
	return l, m
}

func TestCheck(t *testing.T) {
	t.Parallel()
	l, m := ledgerOf()
	altered := m["a2"]
	altered.Payload = []byte("P2")
	rekeyed := m["b1"]
	rekeyed.Key = "c"
	for _, tc := range []struct {
		name     string
		ds       []Delivery
		dead     map[string]string
		want     Verdict // counts only
		problems int     // with faults=false
	}{
		{name: "all delivered in order", ds: deliver(m["a1"], m["b1"], m["a2"], m["a3"])},
		{name: "indeterminate delivered", ds: deliver(m["a1"], m["u1"], m["b1"], m["a2"], m["a3"])},
		{name: "lost", ds: deliver(m["a1"], m["a3"]), want: Verdict{Lost: 2, Order: 0}, problems: 1},
		{name: "lost but dead-lettered", ds: deliver(m["a1"], m["a3"], m["b1"]), dead: map[string]string{"a2": "poison"}, want: Verdict{Dead: 1}},
		{name: "phantom", ds: deliver(m["a1"], m["r1"], m["b1"], m["a2"], m["a3"]), want: Verdict{Phantom: 1}, problems: 1},
		{name: "phantom delivered twice", ds: deliver(m["r1"], m["a1"], m["b1"], m["a2"], m["a3"], m["r1"]), want: Verdict{Phantom: 2, Dups: 1}, problems: 2},
		{name: "order", ds: deliver(m["a1"], m["a3"], m["a2"], m["b1"]), want: Verdict{Order: 1}, problems: 1},
		{name: "order across a key's first deliveries only", ds: deliver(m["a1"], m["a2"], m["a1"], m["a3"], m["b1"]), want: Verdict{Dups: 1}, problems: 1},
		{name: "redelivery after a fault", ds: deliver(m["a1"], m["a2"], m["b1"], m["a3"], m["a2"], m["a3"]), want: Verdict{Dups: 2}, problems: 1},
		{name: "foreign", ds: append(deliver(m["a1"], m["b1"], m["a2"], m["a3"]), Delivery{ID: "x1", Key: "a"}), want: Verdict{Foreign: 1}, problems: 1},
		{name: "payload altered", ds: deliver(m["a1"], m["b1"], altered, m["a3"]), want: Verdict{Corrupt: 1}, problems: 1},
		{name: "key altered", ds: deliver(m["a1"], rekeyed, m["a2"], m["a3"]), want: Verdict{Corrupt: 1}, problems: 1},
		{name: "everything at once", ds: append(deliver(m["a3"], m["r1"], m["a1"], m["a3"]), Delivery{ID: "x1"}),
			want: Verdict{Lost: 2, Phantom: 1, Order: 1, Dups: 1, Foreign: 1}, problems: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := l.Check(tc.ds, tc.dead)
			got := Verdict{Dead: v.Dead, Lost: v.Lost, Phantom: v.Phantom, Order: v.Order, Dups: v.Dups, Foreign: v.Foreign, Corrupt: v.Corrupt}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("verdict %s\nwant      %s", got, tc.want)
			}
			if v.Committed != 4 || v.RolledBack != 1 || v.Unknown != 1 || v.Deliveries != len(tc.ds) {
				t.Errorf("sizes: %s", v)
			}
			if p := v.Problems(false); len(p) != tc.problems {
				t.Errorf("problems without faults: %q, want %d", p, tc.problems)
			}
			withFaults := tc.problems
			if v.Dups > 0 {
				withFaults--
			}
			if p := v.Problems(true); len(p) != withFaults {
				t.Errorf("problems with faults: %q, want %d (duplicates allowed)", p, withFaults)
			}
			if tc.problems > 0 && len(v.Examples) == 0 && v.Dups == 0 {
				t.Error("no examples for the failures")
			}
		})
	}
}

func TestAssertFailsOnEveryProblem(t *testing.T) {
	t.Parallel()
	l, m := ledgerOf()
	ft := &fakeT{}
	v := l.Check(deliver(m["a3"], m["a1"], m["r1"], m["a1"]), nil).Assert(ft, false)
	errs := strings.Join(ft.errors(), "\n")
	for _, want := range []string{"I1: 2 committed", "I2: 1 deliveries", "I3: 1 first", "I5: 1 duplicates", "for example"} {
		if !strings.Contains(errs, want) {
			t.Errorf("errors %q lack %q", errs, want)
		}
	}
	if v.Lost != 2 {
		t.Errorf("Assert returned %s", v)
	}
	ft = &fakeT{}
	l.Check(deliver(m["a1"], m["b1"], m["a2"], m["a3"], m["a1"]), nil).Assert(ft, true)
	if errs := ft.errors(); len(errs) != 0 {
		t.Errorf("a duplicate after a fault failed the test: %q", errs)
	}
}

func TestSlotErr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		s    Slot
		bad  bool
	}{
		{"pending at creation", Slot{Confirmed: 100, Created: 100, SnapshotPending: true}, false},
		{"pending past creation", Slot{Confirmed: 101, Created: 100, SnapshotPending: true}, true},
		{"pending, no record yet", Slot{Confirmed: 101, SnapshotPending: true}, false},
		{"done, past creation", Slot{Confirmed: 500, Created: 100}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := tc.s.Err(); (err != nil) != tc.bad {
				t.Errorf("Err() = %v, want an error: %v", err, tc.bad)
			}
		})
	}
}

func TestUnacked(t *testing.T) {
	t.Parallel()
	l := New(nil, "app")
	l.RecordCommitted(100, msg("a", "k", ""))
	l.RecordCommitted(200, msg("b", "k", ""))
	l.RecordCommitted(0, msg("c", "k", "")) // position unknown: never judged
	delivered := map[string]bool{"a": true}
	has := func(id string) bool { return delivered[id] }
	if got := l.Unacked(150, has); len(got) != 0 {
		t.Errorf("Unacked(150) = %v, want none", got)
	}
	if got := l.Unacked(200, has); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Unacked(200) = %v, want [b]", got)
	}
	delivered["b"] = true
	if got := l.Unacked(1000, has); len(got) != 0 {
		t.Errorf("Unacked(1000) = %v, want none", got)
	}
}

// fakeSlot serves slot readings to the I4 watcher.
type fakeSlot struct {
	mu   sync.Mutex
	s    Slot
	dead map[string]bool
}

func (f *fakeSlot) set(s Slot) { f.mu.Lock(); f.s = s; f.mu.Unlock() }

func (f *fakeSlot) read(context.Context, string) (Slot, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s, f.s.Confirmed != 0, nil
}

func (f *fakeSlot) countDead(_ context.Context, ids []string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, id := range ids {
		if f.dead[id] {
			n++
		}
	}
	return n, nil
}

func TestWatchI4(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		slot       Slot
		violations bool
	}{
		{"no slot yet", Slot{}, false},
		{"below every unacked message", Slot{Confirmed: 150, Created: 50}, false},
		{"past an unacked message", Slot{Confirmed: 250, Created: 50}, true},
		{"past an unacked but dead-lettered message", Slot{Confirmed: 350, Created: 50}, false},
		{"snapshot pending at creation, unacked below", Slot{Confirmed: 50, Created: 50, SnapshotPending: true}, false},
		{"snapshot pending past creation", Slot{Confirmed: 60, Created: 50, SnapshotPending: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := New(nil, "app")
			l.RecordCommitted(40, msg("before", "k", "")) // below the creation: covered by the snapshot
			l.RecordCommitted(100, msg("a", "k", ""))
			l.RecordCommitted(200, msg("b", "k", ""))
			l.RecordCommitted(300, msg("poison", "k", ""))
			delivered := map[string]bool{"before": tc.slot.Confirmed != 0 && !tc.slot.SnapshotPending, "a": true}
			f := &fakeSlot{s: tc.slot, dead: map[string]bool{"poison": true, "b": tc.slot.Confirmed == 350}}
			ft := &fakeT{}
			w := l.watchI4(ft, I4Config{Slot: "s", Delivered: func(id string) bool { return delivered[id] }, Every: time.Millisecond}, f.read, f.countDead)
			deadline := time.Now().Add(5 * time.Second)
			for w.Polls() < 5 && tc.slot.Confirmed != 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			ft.cleanup()
			if tc.slot.Confirmed != 0 && w.Polls() < 5 {
				t.Fatalf("%d polls in 5s", w.Polls())
			}
			if got := w.Violations() > 0; got != tc.violations {
				t.Errorf("%s; errors %q; want violations: %v", w, ft.errors(), tc.violations)
			}
			if (len(ft.errors()) > 0) != tc.violations {
				t.Errorf("errors %q, want some: %v", ft.errors(), tc.violations)
			}
			w.Stop() // idempotent after the cleanup
		})
	}
}

func TestAwaitAndSink(t *testing.T) {
	t.Parallel()
	l := New(nil, "app")
	s := NewSink()
	ms := []outbox.Message{msg("a1", "a", "1"), msg("a2", "a", "2"), msg("b1", "b", "3")}
	l.RecordCommitted(0, ms...)
	go func() {
		for _, m := range ms {
			time.Sleep(20 * time.Millisecond)
			_ = s.Handle(context.Background(), m)
		}
	}()
	r, missing, err := l.Await(context.Background(), 10*time.Second, s.Source())
	if err != nil || missing != 0 || len(r.Deliveries) != 3 {
		t.Fatalf("Await = %d deliveries, %d missing, %v", len(r.Deliveries), missing, err)
	}
	if !s.Has("b1") || s.Has("x") || s.Count() != 3 || len(s.Records()) != 3 || s.Records()[2].ID != "b1" {
		t.Errorf("sink: has b1 %v, count %d, records %d", s.Has("b1"), s.Count(), len(s.Records()))
	}
	ft := &fakeT{}
	if v := l.Verify(ft, time.Second, false, s.Source()); v.Lost != 0 || len(ft.errors()) != 0 {
		t.Errorf("Verify = %s, errors %q", v, ft.errors())
	}

	l.RecordCommitted(0, msg("a3", "a", "4")) // never delivered
	start := time.Now()
	if _, missing, err := l.Await(context.Background(), 200*time.Millisecond, s.Source()); missing != 1 || err != nil {
		t.Errorf("Await with a lost message = %d missing, %v; want 1", missing, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("Await gave up after %s, before its timeout", took)
	}
	ft = &fakeT{}
	if v := l.Verify(ft, 50*time.Millisecond, true, s.Source()); v.Lost != 1 || len(ft.errors()) < 2 {
		t.Errorf("Verify with a lost message = %s, errors %q; want lost 1 reported", v, ft.errors())
	}

	failing := Source(func(context.Context) ([]Delivery, error) { return nil, errors.New("broker down") })
	if _, _, err := l.Await(context.Background(), 50*time.Millisecond, failing); err == nil {
		t.Error("Await with a source that always fails returned no error")
	}
}

func TestGenConfig(t *testing.T) {
	t.Parallel()
	g := GenConfig{}.withDefaults()
	if g.Workers != 2 || g.Keys != 8 || g.MaxMsgs != 8 || g.RollbackPct != 10 || g.Seed == 0 {
		t.Errorf("defaults: %+v", g)
	}
	if g := (GenConfig{RollbackPct: -1}).withDefaults(); g.RollbackPct >= 0 {
		t.Errorf("RollbackPct -1 became %d", g.RollbackPct)
	}
	if k := (GenConfig{Prefix: "kill9"}).key(1, 3); k != "kill9-w1-k3" {
		t.Errorf("key = %q", k)
	}
	if k := (GenConfig{}).key(0, 2); k != "w0-k2" {
		t.Errorf("key = %q", k)
	}
	m := NewMessage("k", 100, 7)
	if len(m.Payload) != 100 || m.Headers["x-n"] != "7" || m.Type != "Test" || m.Destination != outbox.EventBus || len(m.ID) != 36 {
		t.Errorf("NewMessage = %+v", m)
	}
	if m := NewMessage("k", 0, 1); string(m.Payload) != `{"key":"k","i":1}` {
		t.Errorf("text payload %q", m.Payload)
	}
}

func TestRecordCountsAndLookup(t *testing.T) {
	t.Parallel()
	l, _ := ledgerOf()
	if c := l.Counts(); c != (Counts{Committed: 4, RolledBack: 1, Unknown: 1}) {
		t.Errorf("Counts = %+v", c)
	}
	if s, ok := l.Lookup("a3"); !ok || s.N != 2 || s.Key != "a" || string(s.Payload) != "p3" {
		t.Errorf("Lookup(a3) = %+v, %v", s, ok)
	}
	if _, ok := l.Lookup("r1"); ok {
		t.Error("a rolled-back message looked up as committed")
	}
	ids := l.CommittedIDs()
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"a1", "a2", "a3", "b1"}) {
		t.Errorf("CommittedIDs = %v", ids)
	}
	if f := l.Failures(); f != "no failed transactions" {
		t.Errorf("Failures = %q", f)
	}
}
