package outbox_test

import (
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// sourceObs records the relay's source delays.
type sourceObs struct {
	mu                 sync.Mutex
	delivered          int
	walsender, receive []time.Duration
}

func (o *sourceObs) Delivered(outbox.Destination, time.Duration) {
	o.mu.Lock()
	o.delivered++
	o.mu.Unlock()
}
func (o *sourceObs) Failed(outbox.Destination, error)  {}
func (o *sourceObs) DeadLettered(outbox.Destination)   {}
func (o *sourceObs) Blocked(outbox.Destination, error) {}
func (o *sourceObs) Decoded(walsender, receive time.Duration) {
	o.mu.Lock()
	o.walsender, o.receive = append(o.walsender, walsender), append(o.receive, receive)
	o.mu.Unlock()
}

// An observer that implements SourceObserver hears of every decoded transaction, with the walsender's
// share (its send time minus the commit time, both the server's clock) and the relay's share.
func TestSourceObserverSeesEachTransaction(t *testing.T) {
	t.Parallel()
	for _, streaming := range []bool{false, true} {
		db := relayDB(t, streaming)
		h := newOracle(db)
		obs := &sourceObs{}
		startRelay(t, db, nil, withStreaming(t, streaming, outbox.WithSlotName(slotName()),
			outbox.WithSink(outbox.EventBus, h), outbox.WithObserver(obs))...)
		const txs = 20
		for i := range txs {
			msgs := make([]outbox.Message, 1+i*100) // the last ones are streamed with streaming on
			for j := range msgs {
				msgs[j] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: "k", Payload: make([]byte, 64)}
			}
			h.commitBatch(t, msgs)
		}
		h.waitDelivered(t, 60*time.Second)
		obs.mu.Lock()
		// The decode goroutine reports a commit before its records are acked: all are in.
		if len(obs.walsender) < txs {
			t.Errorf("streaming=%v: Decoded called %d times for %d transactions", streaming, len(obs.walsender), txs)
		}
		for i, d := range obs.walsender {
			// The same clock on both ends: never negative; under a minute unless the server stalled.
			if d < 0 || d > time.Minute || obs.receive[i] < -time.Second || obs.receive[i] > time.Minute {
				t.Errorf("streaming=%v: transaction %d: commit → walsender sent %s, → decoded %s", streaming, i, d, obs.receive[i])
			}
		}
		obs.mu.Unlock()
	}
}

var _ outbox.SourceObserver = (*sourceObs)(nil)
