package watermark

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

// BenchmarkTracker measures one transaction of 10 rows per op: Begin, Add,
// 10 single-row Acks, Commit, Flushed.
func BenchmarkTracker(b *testing.B) {
	tr := New(0)
	var lsn pglogrepl.LSN
	b.ReportAllocs()
	for b.Loop() {
		lsn += 100
		x := tr.Begin()
		x.Add(10)
		for range 10 {
			x.Ack(1)
		}
		tr.Commit(x, lsn)
		if tr.Flushed() != lsn {
			b.Fatal("flush did not advance")
		}
	}
}

// BenchmarkAckParallel measures the worst case for lanes: every goroutine
// acking rows of the same transaction (one contended atomic counter).
func BenchmarkAckParallel(b *testing.B) {
	tr := New(0)
	x := tr.Begin()
	x.Add(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			x.Ack(1)
		}
	})
	b.StopTimer()
	tr.Commit(x, 100)
	if tr.Flushed() != 100 {
		b.Fatal("flush did not advance")
	}
}
