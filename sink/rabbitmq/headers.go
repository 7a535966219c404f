package rabbitmq

import (
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
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
func (s *Sink) headers(r *outbox.Record) amqp.Table {
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
		switch strings.ToLower(k) {
		case "cc", "bcc", HeaderID, HeaderType, HeaderDestination, HeaderKey:
			s.stats.droppedHeaders.Add(1)
			continue
		}
		h[k] = v
	}
	return h
}
