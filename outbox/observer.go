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
