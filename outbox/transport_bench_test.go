package outbox_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// BenchmarkEnqueueTransports runs W1's transaction (`BEGIN; UPDATE one account; Enqueue n × 256 B;
// COMMIT`) with no Enqueue, with the Table transport, and with the LogicalMessage transport in its two
// statement forms (one parameter for one message; the array through unnest), side by side on one
// connection. What a transport adds is its ns/op (or p50-µs) minus none's of the same -count round.
//
//	go test -run x -bench EnqueueTransports -count 6 ./outbox/
func BenchmarkEnqueueTransports(b *testing.B) {
	conn := accountsConn(b)
	table := outbox.Enqueuer{Schema: "app"}
	logical := outbox.Enqueuer{Schema: "app", Transport: outbox.LogicalMessage}
	forms := []struct {
		name    string
		enqueue func(context.Context, outbox.Execer, ...outbox.Message) error
	}{
		{"none", nil},
		{"table", table.Enqueue},
		{"logical", logical.Enqueue},
		{"logical-unnest", logical.EnqueueUnnest},
	}
	for _, n := range []int{1, 10} {
		for _, f := range forms {
			b.Run(fmt.Sprintf("msgs=%d/%s", n, f.name), func(b *testing.B) { benchAccountTx(b, conn, n, f.enqueue) })
		}
	}
}
