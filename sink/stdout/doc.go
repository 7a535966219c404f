// Package stdout is an [outbox.Sink] that writes each record as one JSON line, for demos and debugging.
//
// A line holds id, destination, route, key, type, headers, seq, commit_lsn and the payload: as the
// string "payload" when it is valid UTF-8 (JSON string escaping round-trips it byte-exact), else as
// "payload_base64". A record is acked once its line is written to the io.Writer, which is as durable
// as that writer.
package stdout
