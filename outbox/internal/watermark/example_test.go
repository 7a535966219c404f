package watermark_test

import (
	"fmt"

	"github.com/pgoutbox/pgoutbox/outbox/internal/watermark"
)

func ExampleTracker() {
	tr := watermark.New(0x100)

	// The decode goroutine receives two transactions and a keepalive.
	a := tr.Begin()
	a.Add(2) // before routing the rows to lanes
	tr.Commit(a, 0x200)
	b := tr.Begin()
	b.Add(1)
	tr.Commit(b, 0x300)
	tr.Keepalive(0x400)

	// Lanes ack in any order: b first. a is still unacked, so nothing moves.
	b.Ack(1)
	a.Ack(1)
	fmt.Println(tr.Flushed(), tr.Pending(), tr.Idle())

	// The last row of a: a, b and the keepalive are all complete.
	a.Ack(1)
	fmt.Println(tr.Flushed(), tr.Pending(), tr.Idle())
	// Output:
	// 0/100 3 false
	// 0/400 0 true
}
