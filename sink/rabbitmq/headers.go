package rabbitmq

import (
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
)

// Header names the sink sets on every message, besides the message_id (the message id) and type
// properties.
const (
	HeaderID          = "pgoutbox-id"
	HeaderType        = "pgoutbox-type"
	HeaderDestination = "pgoutbox-destination"
	HeaderKey         = "pgoutbox-key"
)

// headers builds the AMQP headers of r. A message header is dropped (and counted) when its name is not
// a token, is one of the sink's own, or is CC or BCC in any case: RabbitMQ routes a message to the
// extra routing keys those list (sender-selected distribution), which would let a message escape the
// configured routing key.
func (s *Sink) headers(r *outbox.Record, ce bool) amqp.Table {
	h := make(amqp.Table, 4+len(r.Headers))
	h[HeaderID] = r.ID
	if r.Type != "" {
		h[HeaderType] = r.Type
	}
	h[HeaderDestination] = string(r.Destination)
	if r.Key != "" {
		h[HeaderKey] = r.Key
	}
	for k, v := range r.Headers {
		if names.ValidateHeaderName(k) != nil {
			s.stats.droppedHeaders.Add(1)
			continue
		}
		switch lower := strings.ToLower(k); {
		case lower == "cc", lower == "bcc", lower == HeaderID, lower == HeaderType, lower == HeaderDestination, lower == HeaderKey,
			ce && (strings.HasPrefix(lower, "cloudevents_") || strings.HasPrefix(lower, "cloudevents:") || lower == "content-type"):
			s.stats.droppedHeaders.Add(1)
			continue
		}
		h[k] = v
	}
	return h
}

// CloudEventsPrefix starts the headers of a CloudEvent's attributes in binary mode (the AMQP binding's
// application-property prefix).
const CloudEventsPrefix = "cloudEvents_"

// publishing builds the AMQP message of r in its destination's format.
func (s *Sink) publishing(r *outbox.Record) amqp.Publishing {
	o := s.cfg.Destinations[string(r.Destination)].CloudEvents
	p := amqp.Publishing{Headers: s.headers(r, o.Enabled()), DeliveryMode: amqp.Persistent, MessageId: r.ID, Type: r.Type,
		Timestamp: r.CreatedAt, AppId: "pgoutbox", Body: r.Payload}
	if !o.Enabled() {
		return p
	}
	ev := cloudevents.New(r, o, "")
	if o.Format == cloudevents.Structured {
		p.ContentType, p.Body = cloudevents.StructuredContentType, ev.Envelope()
		return p
	}
	for _, a := range ev.Attributes() {
		p.Headers[CloudEventsPrefix+a[0]] = a[1]
	}
	p.ContentType = ev.DataContentType
	return p
}
