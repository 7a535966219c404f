// Package webhook is an [outbox.Sink] that POSTs each record to an HTTP endpoint.
//
// The body is the payload, byte-exact; Content-Type comes from the message's "Content-Type" header
// (any case) or is application/octet-stream. Every request carries Idempotency-Key and X-Pgoutbox-Id
// (both the message id, so receivers can dedupe re-deliveries), X-Pgoutbox-Type, X-Pgoutbox-Destination,
// the configured static headers and the message's own headers. The URL is Config.URL, with the record's
// Route appended as a path when set.
//
// A 2xx answer acks the record. 5xx, 408, 429 and timeouts fail the record retryably; any other 4xx
// fails it permanently ([outbox.ErrPermanent]); an endpoint that cannot be reached at all (connection
// refused, DNS failure) makes the whole Send fail with [outbox.ErrUnavailable].
//
// Within a Send, records of one key are posted one after the other, in order, and a key stops at its
// first retryable failure (its later records are reported failed, unsent), so order per key holds;
// different keys are posted in parallel, up to Config.Concurrency requests at once.
package webhook
