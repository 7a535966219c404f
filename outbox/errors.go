package outbox

import "errors"

var (
	// ErrInvalidSchema is returned for a schema name that is empty, too long or not a plain identifier.
	ErrInvalidSchema = errors.New("outbox: invalid schema name")
	// ErrInvalidMessage is returned by Enqueue for a message that cannot be written (the error names the field).
	ErrInvalidMessage = errors.New("outbox: invalid message")
	// ErrPayloadTooLarge is returned by Enqueue for a payload over the limit (the error names both sizes).
	ErrPayloadTooLarge = errors.New("outbox: message payload too large")
	// ErrNotMigrated is returned when the outbox table or its schema does not exist.
	ErrNotMigrated = errors.New("outbox: schema not migrated")
)

// ErrUnknownDestination is the dead-letter reason of a message whose destination has no handler or sink.
var ErrUnknownDestination = errors.New("outbox: unknown destination")
