package watermark

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

// fixture drives one Tracker through a scripted case; txs[i] is the i-th
// transaction begun.
type fixture struct {
	tr  *Tracker
	txs []*Tx
}

type op func(f *fixture)

func begin(rows int) op {
	return func(f *fixture) {
		x := f.tr.Begin()
		x.Add(rows)
		f.txs = append(f.txs, x)
	}
}
func add(i, n int) op                    { return func(f *fixture) { f.txs[i].Add(n) } }
func ack(i, n int) op                    { return func(f *fixture) { f.txs[i].Ack(n) } }
func commit(i int, end pglogrepl.LSN) op { return func(f *fixture) { f.tr.Commit(f.txs[i], end) } }
func abandon(i int) op                   { return func(f *fixture) { f.tr.Abandon(f.txs[i]) } }
func keepalive(walEnd pglogrepl.LSN) op  { return func(f *fixture) { f.tr.Keepalive(walEnd) } }
func seq(ops ...op) op {
	return func(f *fixture) {
		for _, o := range ops {
			o(f)
		}
	}
}
func committed(rows int, end pglogrepl.LSN) op {
	return seq(begin(rows), func(f *fixture) { commit(len(f.txs)-1, end)(f) })
}

// step applies do, then checks Flushed, Pending and Idle.
type step struct {
	do      op
	flushed pglogrepl.LSN
	pending int
	idle    bool
}

func TestTracker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		start pglogrepl.LSN
		steps []step
	}{
		{
			name:  "in-order acks",
			start: 10,
			steps: []step{
				{do: committed(2, 100), flushed: 10, pending: 1},
				{do: ack(0, 1), flushed: 10, pending: 1},
				{do: ack(0, 1), flushed: 100, pending: 0, idle: true},
				{do: committed(3, 200), flushed: 100, pending: 1},
				{do: ack(1, 3), flushed: 200, pending: 0, idle: true},
			},
		},
		{
			name:  "rows acked before commit",
			start: 10,
			steps: []step{
				{do: seq(begin(2), ack(0, 2)), flushed: 10, pending: 1, idle: true},
				{do: seq(add(0, 1), ack(0, 1)), flushed: 10, pending: 1, idle: true},
				{do: commit(0, 100), flushed: 100, pending: 0, idle: true},
			},
		},
		{
			name:  "later acked transaction behind an unacked earlier one",
			start: 10,
			steps: []step{
				{do: seq(committed(1, 100), committed(1, 200)), flushed: 10, pending: 2},
				{do: ack(1, 1), flushed: 10, pending: 2},
				{do: ack(0, 1), flushed: 200, pending: 0, idle: true},
			},
		},
		{
			name:  "partially acked earlier transaction holds back a later one",
			start: 10,
			steps: []step{
				{do: seq(committed(3, 100), committed(1, 200), ack(1, 1), ack(0, 2)), flushed: 10, pending: 2},
				{do: ack(0, 1), flushed: 200, pending: 0, idle: true},
			},
		},
		{
			name:  "keepalive behind an unacked transaction",
			start: 10,
			steps: []step{
				{do: seq(committed(1, 100), keepalive(300)), flushed: 10, pending: 2},
				{do: ack(0, 1), flushed: 300, pending: 0, idle: true},
			},
		},
		{
			name:  "keepalive behind an open transaction",
			start: 10,
			steps: []step{
				{do: seq(begin(0), keepalive(300)), flushed: 10, pending: 2, idle: true},
				{do: commit(0, 100), flushed: 300, pending: 0, idle: true},
			},
		},
		{
			name:  "keepalive alone",
			start: 10,
			steps: []step{
				{do: keepalive(300), flushed: 300, pending: 0, idle: true},
				{do: keepalive(400), flushed: 400, pending: 0, idle: true},
			},
		},
		{
			name:  "consecutive keepalives coalesce to the max",
			start: 10,
			steps: []step{
				{do: seq(committed(1, 100), keepalive(300), keepalive(250), keepalive(400)), flushed: 10, pending: 2},
				{do: ack(0, 1), flushed: 400, pending: 0, idle: true},
			},
		},
		{
			name:  "keepalive at or below the flush LSN is ignored",
			start: 500,
			steps: []step{
				{do: seq(committed(1, 600), keepalive(500), keepalive(20)), flushed: 500, pending: 1},
				{do: ack(0, 1), flushed: 600, pending: 0, idle: true},
			},
		},
		{
			name:  "empty transaction",
			start: 10,
			steps: []step{
				{do: committed(0, 100), flushed: 100, pending: 0, idle: true},
			},
		},
		{
			name:  "abandoned transaction does not advance",
			start: 10,
			steps: []step{
				{do: seq(begin(2), ack(0, 1), abandon(0)), flushed: 10, pending: 1},
				{do: ack(0, 1), flushed: 10, pending: 0, idle: true},
			},
		},
		{
			name:  "abandoned transaction holds back later items until acked",
			start: 10,
			steps: []step{
				{do: seq(committed(1, 100), ack(0, 1)), flushed: 100, pending: 0, idle: true},
				{do: seq(begin(2), abandon(1), committed(1, 200), ack(2, 1), keepalive(250)), flushed: 100, pending: 3},
				{do: ack(1, 1), flushed: 100, pending: 3},
				{do: ack(1, 1), flushed: 250, pending: 0, idle: true},
			},
		},
		{
			name:  "monotonic: lower keepalive and lower commit do not regress",
			start: 10,
			steps: []step{
				{do: seq(committed(1, 200), ack(0, 1)), flushed: 200, pending: 0, idle: true},
				{do: keepalive(150), flushed: 200, pending: 0, idle: true},
				{do: seq(committed(1, 180), ack(1, 1)), flushed: 200, pending: 0, idle: true},
				{do: seq(committed(1, 300), keepalive(250), ack(2, 1)), flushed: 300, pending: 0, idle: true},
			},
		},
		{
			name:  "start above the first commit",
			start: 500,
			steps: []step{
				{do: seq(committed(1, 400), ack(0, 1)), flushed: 500, pending: 0, idle: true},
			},
		},
		{
			name:  "queue grows past its initial ring size",
			start: 0,
			steps: []step{
				{do: func(f *fixture) {
					for i := range 100 {
						committed(1, pglogrepl.LSN(100+i))(f)
					}
					for i := 99; i >= 1; i-- {
						f.txs[i].Ack(1)
					}
				}, flushed: 0, pending: 100},
				{do: ack(0, 1), flushed: 199, pending: 0, idle: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fixture{tr: New(tt.start)}
			for i, s := range tt.steps {
				s.do(f)
				// Pending and Idle before Flushed: Flushed pops, so Pending
				// afterwards is what is still queued.
				if got := f.tr.Idle(); got != s.idle {
					t.Errorf("step %d: Idle() = %v, want %v", i, got, s.idle)
				}
				if got := f.tr.Flushed(); got != s.flushed {
					t.Errorf("step %d: Flushed() = %v, want %v", i, got, s.flushed)
				}
				if got := f.tr.Pending(); got != s.pending {
					t.Errorf("step %d: Pending() = %d, want %d", i, got, s.pending)
				}
			}
		})
	}
}

func TestMisusePanics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		do   op
		want string
	}{
		{name: "ack more than added", do: seq(begin(1), ack(0, 2)), want: "more rows acked than added"},
		{name: "ack before add", do: seq(begin(0), ack(0, 1)), want: "more rows acked than added"},
		{name: "ack after flushed", do: func(f *fixture) {
			seq(committed(1, 100), ack(0, 1))(f)
			f.tr.Flushed()
			f.txs[0].Ack(1)
		}, want: "more rows acked than added"},
		{name: "negative ack", do: seq(begin(1), ack(0, -1)), want: "negative"},
		{name: "negative add", do: seq(begin(0), add(0, -1)), want: "negative"},
		{name: "add after commit", do: seq(committed(0, 100), add(0, 1)), want: "Add on a sealed transaction"},
		{name: "add after abandon", do: seq(begin(0), abandon(0), add(0, 1)), want: "Add on a sealed transaction"},
		{name: "commit twice", do: seq(committed(0, 100), commit(0, 200)), want: "sealed twice"},
		{name: "abandon after commit", do: seq(committed(0, 100), abandon(0)), want: "sealed twice"},
		{name: "begin while open", do: seq(begin(0), begin(0)), want: "Begin while a transaction is open"},
		{name: "commit on another tracker", do: func(f *fixture) {
			x := New(0).Begin()
			f.tr.Commit(x, 100)
		}, want: "another Tracker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), tt.want) {
					t.Fatalf("panic = %v, want one containing %q", r, tt.want)
				}
			}()
			tt.do(&fixture{tr: New(0)})
		})
	}
}

// TestCompactBehindUnackedHead: transactions acked behind one that is not cost one queue entry per
// run once the queue is long, and the flush LSN is exactly what it would be without compaction.
func TestCompactBehindUnackedHead(t *testing.T) {
	t.Parallel()
	tr := New(0)
	head := tr.Begin()
	head.Add(1)
	tr.Commit(head, 10)
	const n = 50_000
	var slow *Tx
	for i := range n {
		x := tr.Begin()
		x.Add(1)
		tr.Commit(x, pglogrepl.LSN(20+i))
		if i == n/2 {
			slow = x // one more unacked transaction in the middle
			continue
		}
		x.Ack(1)
	}
	if got := tr.Flushed(); got != 0 {
		t.Fatalf("Flushed() = %v with the head unacked, want 0", got)
	}
	if p := tr.Pending(); p > 4 {
		t.Fatalf("%d queue entries for %d acked transactions behind two unacked ones, want at most 4", p, n-1)
	}
	head.Ack(1)
	if got, want := tr.Flushed(), pglogrepl.LSN(20+n/2-1); got != want {
		t.Fatalf("Flushed() = %v after the head acked, want %v (the end before the other unacked one)", got, want)
	}
	slow.Ack(1)
	if got, want := tr.Flushed(), pglogrepl.LSN(20+n-1); got != want || tr.Pending() != 0 {
		t.Fatalf("Flushed() = %v, pending %d after every ack, want %v and 0", got, tr.Pending(), want)
	}
}
