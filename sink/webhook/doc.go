// Package webhook is an [outbox.Sink] that POSTs each record to an HTTP endpoint.
//
// # Where records go
//
// Every record goes to Config.URL: the configuration wins. With Config.AppendRoute the record's Route
// is appended as one escaped path segment (URL https://h/hooks, Route orders → https://h/hooks/orders);
// a Route that could leave that place — "/", "\", "..", "?", "#", "%", a control character, more than
// [MaxRouteBytes] — fails the record permanently (dead letter naming the rule). Redirects are not
// followed.
//
// # What a request carries
//
// The body is the payload, byte-exact. Headers, in order of precedence:
//   - the sink's own: Idempotency-Key and X-Pgoutbox-Id (both the message id, so receivers can dedupe
//     re-deliveries), X-Pgoutbox-Type, X-Pgoutbox-Destination, and with Config.SigningSecret the
//     Standard Webhooks headers webhook-id, webhook-timestamp and webhook-signature
//     (https://www.standardwebhooks.com: "v1," and the base64 HMAC-SHA256 of "id.timestamp.body");
//   - Config.Headers (for example Authorization);
//   - the message's own headers, except those it may not set: credentials (Authorization,
//     Proxy-Authorization, Cookie), hop-by-hop and framing headers (Host, Content-Length,
//     Transfer-Encoding, Connection, Keep-Alive, TE, Trailer, Upgrade, Expect, Proxy-*), the sink's
//     own names (Idempotency-Key, X-Pgoutbox-*, webhook-*), any header the configuration sets, names
//     that are not tokens and values with control characters. Those are dropped, counted
//     ([Sink.Stats]) and logged once per destination and header name, never with their value;
//   - Content-Type: configured, else the message's, else application/octet-stream.
//
// With Config.CloudEvents (sink/cloudevents) the request is a CloudEvents 1.0 event per the HTTP
// binding: in binary mode the attributes travel as ce-id, ce-source, ce-type, ce-specversion, ce-time
// and ce-subject headers and the Content-Type is the datacontenttype (a message's ce-… headers are
// dropped); in structured mode the body is the application/cloudevents+json envelope, and the
// signature covers that body.
//
// # How answers are classified
//
//   - 2xx: delivered.
//   - 429, 502, 503, 504, connection refused or reset, DNS and TLS failures, redirects, and an endpoint
//     that answers nothing within Config.Timeout: systemic ([outbox.ErrUnavailable]: the relay blocks
//     the destination and retries, counts no attempt, dead-letters nothing). Retry-After (seconds or an
//     HTTP date, capped at [MaxRetryAfter]) is passed on with [outbox.RetryAfter].
//   - 408, other 5xx, and a request that times out while the endpoint answers other requests: this
//     record failed; retried with backoff, counting an attempt, dead-lettered after the relay's
//     MaxAttempts.
//   - other 4xx: permanent ([outbox.ErrPermanent]): dead-lettered at once.
//
// A Send cut short by its context keeps per-record results: what the endpoint acknowledged is delivered,
// what did not finish is reported not attempted (or systemic when the endpoint answered nothing), so
// a slow endpoint never costs a record an attempt.
package webhook
