package outbox

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestGate: acquire waits while k more would exceed max, a release wakes every waiter, a batch larger
// than max passes when nothing is in flight, and ctx ends a wait.
func TestGate(t *testing.T) {
	t.Parallel()
	g := &gate{max: 10}
	ctx := context.Background()
	if err := g.acquire(ctx, 8); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 2)
	var wg sync.WaitGroup
	for _, k := range []int{3, 2} { // 8+3 > 10 waits; 8+2 fits
		wg.Go(func() {
			if err := g.acquire(ctx, k); err == nil {
				got <- k
			}
		})
	}
	if k := <-got; k != 2 {
		t.Fatalf("first acquire to pass: %d, want 2 (fits at once)", k)
	}
	select {
	case k := <-got:
		t.Fatalf("acquire(%d) passed with %d of 10 in flight", k, g.inFlight()-k)
	case <-time.After(50 * time.Millisecond):
	}
	g.release(5) // 5 in flight: 3 fits now
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("release did not wake the waiting acquire")
	}
	wg.Wait()
	if n := g.inFlight(); n != 8 {
		t.Fatalf("in flight %d, want 8", n)
	}
	g.release(8)
	if err := g.acquire(ctx, 25); err != nil || g.inFlight() != 25 {
		t.Fatalf("a batch over max with nothing in flight: err %v, in flight %d", err, g.inFlight())
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := g.acquire(cctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire on a full gate with an ending ctx: %v, want DeadlineExceeded", err)
	}
	if n := g.inFlight(); n != 25 {
		t.Fatalf("a failed acquire changed in flight to %d", n)
	}
}
