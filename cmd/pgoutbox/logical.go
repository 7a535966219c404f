package main

// logicalReplayNote is what replay prints when the relay also delivers logical messages.
const logicalReplayNote = "note: logical_messages is on, but only pkg_outbox rows (the Table transport) are retained: " +
	"messages written with the LogicalMessage transport live in the WAL alone and cannot be replayed"
