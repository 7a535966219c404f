//go:build !race

package watermark

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

// Allocation counts are not meaningful under -race (the detector allocates): this file is left out
// of race builds, and `make test` runs it in a separate pass without -race.

func TestAllocsPerTransaction(t *testing.T) {
	tr := New(0)
	// Warm the ring so its growth is not counted.
	for range 64 {
		tr.Begin()
		tr.Abandon(tr.open)
	}
	tr.Flushed()
	var lsn pglogrepl.LSN
	allocs := testing.AllocsPerRun(1000, func() {
		lsn += 100
		x := tr.Begin()
		x.Add(10)
		for range 10 {
			x.Ack(1)
		}
		tr.Commit(x, lsn)
		tr.Keepalive(lsn + 50)
		tr.Idle()
		tr.Pending()
		if got := tr.Flushed(); got != lsn+50 {
			t.Fatalf("Flushed() = %v, want %v", got, lsn+50)
		}
	})
	if allocs > 1 {
		t.Errorf("allocs per transaction = %v, want at most 1", allocs)
	}
}
