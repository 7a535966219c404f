package outbox

import "time"

// Observer receives the relay's delivery events, for metrics. Its methods are called from the
// relay's lane goroutines concurrently and must not block.
type Observer interface {
	// Delivered is called for each acked message with the time from its commit to its ack.
	Delivered(dest Destination, commitToAck time.Duration)
	// Failed is called for each failed attempt.
	Failed(dest Destination, err error)
	// DeadLettered is called once the message's dead-letter row committed.
	DeadLettered(dest Destination)
	// Blocked is called when a sink reports itself unavailable (err) and again with nil once it recovers.
	Blocked(dest Destination, err error)
}

// SourceObserver is an Observer that also follows how far behind PostgreSQL the relay reads (what
// Debezium calls "behind source"). For each decoded transaction the relay calls Decoded with the
// time from its commit to the walsender sending the commit (the server decoding the WAL: its CPU,
// its wait for the WAL flush) and from then to the relay decoding it (network, receive batching, the
// hand-off to the decode goroutine). Both are measured against clocks of their own side, so only the
// second one carries the clock skew between the relay's host and the server's. Decoded is called
// from the decode goroutine and must not block.
type SourceObserver interface {
	Observer
	Decoded(commitToSent, sentToDecoded time.Duration)
}
