package outbox

import (
	"maps"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/replication"
)

func (r *Relay) ack(it *item) {
	if r.cfg.observer != nil {
		r.cfg.observer.Delivered(it.rec.Destination, time.Since(it.rec.CommitTime))
	}
	r.delivered.Add(1)
	it.tx.Ack(1)
}

func (r *Relay) setBlocked(dest Destination, err error) {
	r.blockedMu.Lock()
	_, was := r.blocked[dest]
	if err != nil {
		r.blocked[dest] = err.Error()
	} else {
		delete(r.blocked, dest)
	}
	r.blockedMu.Unlock()
	if err != nil && !was {
		r.log.Warn("destination blocked: sink unavailable, retrying without advancing the slot",
			zap.String("destination", string(dest)), zap.Error(err))
	} else if err == nil && was {
		r.log.Info("destination unblocked", zap.String("destination", string(dest)))
	}
	if r.cfg.observer != nil && (err != nil) != was {
		r.cfg.observer.Blocked(dest, err)
	}
}

// ReplicationStats returns the replication stream's counters (reconnects, last status sent, server WAL end).
func (r *Relay) ReplicationStats() replication.Stats { return r.stream.Stats() }

// Blocked returns the destinations whose sink reports itself unavailable, with the error.
func (r *Relay) Blocked() map[Destination]string {
	r.blockedMu.Lock()
	defer r.blockedMu.Unlock()
	return maps.Clone(r.blocked)
}

// Stats are relay counters since Start.
type Stats struct {
	Delivered, DeadLettered, Failures int64
	// InFlight counts the messages received and not yet acked, parked ones included.
	InFlight     int
	ConfirmedLSN pglogrepl.LSN
	// Parked describes the keys held back by a record that failed and waits for its next attempt.
	Parked ParkedStats
	// IgnoredMessages counts the logical decoding messages that are not the relay's (WithLogicalMessages).
	IgnoredMessages IgnoredMessages
	// Skipped counts the records a PositionSink reported already delivered when the relay resumed: not
	// sent again.
	Skipped int64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	s := Stats{Delivered: r.delivered.Load(), DeadLettered: r.deadLettered.Load(), Failures: r.failures.Load(),
		InFlight: r.gate.inFlight(), ConfirmedLSN: r.tracker.Flushed(),
		IgnoredMessages: IgnoredMessages{OtherPrefix: r.ignoredPrefix.Load(), NonTransactional: r.ignoredNonTx.Load()},
		Skipped:         r.positions.skipped.Load()}
	for _, l := range r.lanes {
		l.park.stats(&s.Parked)
	}
	return s
}
