package outbox

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Destination names where a message goes: a handler or a sink registered for it.
// Any non-empty string is a valid destination.
type Destination string

// EventBus is the destination the examples use; any other non-empty string works the same.
const EventBus Destination = "event_bus"

// Message is one outgoing message, written with Enqueue inside the application's transaction.
//
// ID is a UUID; when empty, Enqueue assigns a UUIDv7. It is the idempotency key consumers dedupe on:
// a message re-delivered after a fault, or requeued from the dead letters, keeps its ID.
// Key is the ordering key (for example an aggregate id): messages of one key are delivered in commit order.
// Route is destination-specific (a Kafka topic, a webhook path); Type names the message kind.
// Payload is stored as bytea and delivered byte-exact. Headers travel with the message.
type Message struct {
	ID          string
	Destination Destination
	Route       string
	Key         string
	Type        string
	Payload     []byte
	Headers     map[string]string
}

// Record is a message as the relay hands it to a Sink or Handler: the Message plus where it came from.
// A Record is read-only for sinks; its Payload and Headers must not be modified.
type Record struct {
	Message
	// Seq is the outbox row's sequence number (pkg_outbox.seq) for a message of the Table transport,
	// and the position (LSN) of its WAL record for one of the LogicalMessage transport. Either way it is
	// unique per message of its transport and grows in the order a transaction wrote its messages, but
	// the two do not compare with each other; CommitLSN orders transactions across both.
	Seq int64
	// CreatedAt is the row's created_at (the start of its transaction, by the database's clock), or for a
	// LogicalMessage the time Enqueue ran, by the application's clock (microseconds).
	CreatedAt time.Time
	// CommitLSN and CommitTime identify the transaction that committed the message.
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time
	// Attempt is 1 on the first delivery attempt and grows with each retry.
	Attempt int
}
