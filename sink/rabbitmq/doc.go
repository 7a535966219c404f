// Package rabbitmq is the RabbitMQ implementation of [outbox.Sink], built on
// github.com/rabbitmq/amqp091-go.
//
// Every record is published to its destination's exchange as a persistent message with mandatory
// routing on a channel in confirm mode, and [Sink.Send] returns only once the broker confirmed every
// record of its batch or the record failed. Publishing is asynchronous: the records of different keys
// are in flight at once over [Config.Channels] channels (bounded by [Config.MaxInFlight] over all
// Sends), and a record follows the earlier record of its key once that one is confirmed, so the order
// per key holds whatever fails in between.
//
// Routing: the exchange is always the configured one ([Destination.Exchange]; the sink never declares
// exchanges or queues). A routing key configured for the destination always wins; otherwise each
// record's Route is the routing key, which [Destination.AllowedRoutingKeys] can restrict with
// topic-exchange patterns ("orders.#").
//
// Properties and headers: message_id is the message id (consumers dedupe on it), type the message
// type, timestamp its creation time, app_id "pgoutbox"; headers are [HeaderID], [HeaderType],
// [HeaderDestination], [HeaderKey] and the message's own (never CC or BCC). The body is the payload,
// byte-exact.
//
// Formats ([Destination.CloudEvents]): raw (above), or CloudEvents 1.0 per the AMQP binding —
// cloudevents-binary ([CloudEventsPrefix] headers, the content_type property, the payload as the body)
// or cloudevents-structured (the JSON envelope as the body); message_id stays the message id.
//
// Failures: a message the exchange routes to no queue comes back (basic.return) and is dead-lettered
// at once, or blocks the destination with [Config.Unroutable] "unavailable"; a missing exchange, a lost
// connection or channel, a nack, a confirm timeout or a resource alarm (the broker blocks publishing)
// block the destination ([outbox.ErrUnavailable]) while the sink reconnects or the alarm lasts; a body over [Config.MaxMessageBytes] is dead-lettered at once.
package rabbitmq
