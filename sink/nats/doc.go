// Package nats is the NATS JetStream implementation of [outbox.Sink], built on github.com/nats-io/nats.go.
//
// Every record is published with a reply subject and acknowledged by the stream that stores it (a
// PubAck); [Sink.Send] returns only once every record of its batch is acked or has failed. Publishing
// is asynchronous: the records of different keys are all in flight at once (bounded by
// [Config.MaxInFlight] over all Sends), and a record follows the earlier record of its key once that
// one is acked, so the order per key holds whatever fails in between.
//
// Routing: a subject configured for the record's destination ([Config.Subjects]) always wins, whatever
// the record's Route says. Only a destination without one publishes to each record's Route, which
// [Config.AllowedSubjects] can restrict with NATS wildcards ("orders.>"); subjects reserved for the
// server ($JS…, $SYS…, _INBOX…) are refused (see package [subject]).
//
// Headers are [HeaderMsgID] (Nats-Msg-Id, the message id), [HeaderID], [HeaderType],
// [HeaderDestination], [HeaderKey] and then the message's own headers (never Nats-* ones). The payload
// is the message data, byte-exact.
//
// Formats ([Config.Formats], per destination): raw (above), or CloudEvents 1.0 per the NATS binding —
// cloudevents-binary (ce-… headers and content-type, the payload as the data) or cloudevents-structured
// (the JSON envelope as the data, content-type application/cloudevents+json); Nats-Msg-Id stays the
// message id. See package [github.com/pgoutbox/pgoutbox/sink/cloudevents].
//
// Duplicates: after a relay crash, messages acked by the stream but not yet confirmed to PostgreSQL
// are published again with the same Nats-Msg-Id. The stream drops them if its duplicate window
// (the stream's duplicate_window, default 2 minutes) still holds the id: set it longer than the
// longest time a relay may take to come back (restart delay plus the replay of unconfirmed WAL, a few
// seconds normally); messages re-published after the window are stored twice, with the same id. A
// dead letter requeued within the window is dropped the same way (it is acked as a duplicate).
//
// Failures: no stream for a configured subject blocks the destination ([outbox.ErrUnavailable],
// listed by [Sink.Blocked]); a lost connection, a PubAck timeout or a full stream (discard new) block
// it too; a message over the server's max_payload or the stream's max_msg_size is dead-lettered at
// once ([outbox.ErrPermanent]); no stream for a subject named by a Route fails that record only.
package nats
