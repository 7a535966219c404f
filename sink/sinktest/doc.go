// Package sinktest is the conformance suite every [outbox.Sink] passes: order per key across concurrent
// Send calls, at-least-once delivery, ack only after the record is durable, and per-record error
// classification (a permanent failure does not fail its neighbours).
//
// A sink's test calls [Run] with a factory that returns a fresh sink and a [Reader] that can read back
// what the sink delivered (a Kafka topic, the requests a test server received, an output buffer).
package sinktest
