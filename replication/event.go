package replication

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// EventKind says what an Event carries.
type EventKind uint8

const (
	// XLogData carries one pgoutput message (Data) from WALStart.
	XLogData EventKind = iota + 1
	// Keepalive carries the server's WAL end (ServerWALEnd); it is in order with the data: every
	// XLogData before it was sent before the server reported that position.
	Keepalive
	// Disconnected says the previous connection ended: the receiver resets its decoder and abandons
	// any partial transaction; streaming resumes from the slot's confirmed position, so what was not
	// confirmed is sent again.
	Disconnected
)

func (k EventKind) String() string {
	switch k {
	case XLogData:
		return "xlogdata"
	case Keepalive:
		return "keepalive"
	case Disconnected:
		return "disconnected"
	}
	return "unknown"
}

// Event is one item of the replication stream.
type Event struct {
	Kind EventKind
	// WALStart is the position of an XLogData message.
	WALStart pglogrepl.LSN
	// ServerWALEnd is the server's WAL end reported with the message.
	ServerWALEnd pglogrepl.LSN
	// ServerTime is the server's clock when its walsender sent an XLogData message (so that
	// ServerTime minus a transaction's commit time is how long the walsender took to send it).
	ServerTime time.Time
	// Data is a copy of XLogData.WALData, owned by the receiver. Events of one batch may share a
	// backing array; each Data is capped, so appending to it never touches another event's bytes.
	Data []byte
}

// State is the stream's state, for health checks and metrics.
type State int32

const (
	// Connecting: opening connections, checking the slot and publication.
	Connecting State = iota
	// Streaming: START_REPLICATION succeeded; events flow.
	Streaming
	// Standby: another instance holds the slot; polling until it is free.
	Standby
	// Backoff: the connection was lost; waiting before reconnecting.
	Backoff
	// Stopped: Run has returned (or was never called).
	Stopped
	// Snapshot: a new slot was created; its initial snapshot is being read (WithSnapshot).
	Snapshot
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Streaming:
		return "streaming"
	case Standby:
		return "standby"
	case Backoff:
		return "backoff"
	case Stopped:
		return "stopped"
	case Snapshot:
		return "snapshot"
	}
	return "unknown"
}

// Stats are counters of a Stream, read atomically.
type Stats struct {
	// Reconnects counts connections lost to transient errors (each followed by a reconnect).
	Reconnects uint64
	// LastStatusLSN is the position the last standby status update confirmed.
	LastStatusLSN pglogrepl.LSN
	// LastStatusTime is when the last status update was sent.
	LastStatusTime time.Time
	// LastServerWALEnd is the server WAL end of the last message received.
	LastServerWALEnd pglogrepl.LSN
	// FlushedLSN is the position set by SetFlushed (or found confirmed on the slot).
	FlushedLSN pglogrepl.LSN
}
