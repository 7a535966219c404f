package decoder

import (
	"errors"
	"fmt"
)

var (
	// ErrMalformed is wrapped by every error about bytes that do not form a valid
	// pgoutput message (truncated, bad lengths or counts, unknown tags, trailing bytes).
	ErrMalformed = errors.New("decoder: malformed pgoutput message")
	// ErrProtocol is wrapped by errors about well-formed messages that arrive out of
	// order (an Insert outside a transaction, a Stream Commit for an unknown stream,
	// stream messages while Config.Streaming is off, two-phase messages).
	ErrProtocol = errors.New("decoder: pgoutput protocol violation")
	// ErrUnknownRelation is wrapped when an Insert names a relation OID for which no
	// Relation message was received.
	ErrUnknownRelation = errors.New("decoder: insert for unknown relation")
	// ErrClosed is returned by Decode after Close.
	ErrClosed = errors.New("decoder: closed")
)

func malformed(msg string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, msg, fmt.Sprintf(format, args...))
}

func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}
