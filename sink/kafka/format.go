package kafka

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
)

// Record formats (Config.Formats), as in [recordformat].
const (
	FormatRaw                   = recordformat.Raw
	FormatCloudEventsBinary     = recordformat.CloudEventsBinary
	FormatCloudEventsStructured = recordformat.CloudEventsStructured
	FormatDebeziumOutbox        = recordformat.DebeziumOutbox
)

// HeaderContentType carries a CloudEvent's datacontenttype (binary mode) or the envelope's content type
// (structured mode), as the CloudEvents Kafka protocol binding reads it.
const HeaderContentType = "content-type"

// ceHeaderPrefix starts the CloudEvents attribute headers of binary mode (the Kafka binding's "ce_").
const ceHeaderPrefix = "ce_"

// validateFormats checks Formats, in destination order so the errors are stable.
func (c Config) validateFormats() []error {
	var errs []error
	for _, dest := range slices.Sorted(maps.Keys(c.Formats)) {
		if dest == "" {
			errs = append(errs, fmt.Errorf("kafka: config: Formats: empty destination"))
			continue
		}
		if err := c.Formats[dest].Validate(); err != nil {
			errs = append(errs, fmt.Errorf("kafka: config: Formats[%q]: %w", dest, err))
		}
	}
	return errs
}

// applyFormats lays out every built message msgs[i] of batch in its destination's format
// (Config.Formats). A raw record keeps the message newMessages built; so does every record when no
// destination has another format.
func (s *Sink) applyFormats(batch []outbox.Record, msgs []*sarama.ProducerMessage) {
	if len(s.cfg.Formats) == 0 {
		return
	}
	for i, m := range msgs {
		if m == nil {
			continue
		}
		f, ok := s.cfg.Formats[string(batch[i].Destination)]
		if !ok || f.Name == "" || f.Name == FormatRaw {
			continue
		}
		formatMessage(&batch[i], f, m)
	}
}

// formatMessage rewrites m, the raw message of r, in format f (not raw). The sink's own headers
// (pgoutbox-id, pgoutbox-type, pgoutbox-destination) stay first, the format's headers follow, then the
// message's own headers except those the format owns: a message can set neither the CloudEvents
// attributes (ce_…, content-type) nor Debezium's id and type headers.
func formatMessage(r *outbox.Record, f recordformat.Format, m *sarama.ProducerMessage) {
	var extra []sarama.RecordHeader
	var owned func(name string) bool
	switch f.Name {
	case FormatCloudEventsBinary, FormatCloudEventsStructured:
		ev := cloudevents.New(r, f.CloudEvents(), "")
		owned = func(name string) bool {
			return strings.EqualFold(name, HeaderContentType) ||
				len(name) >= len(ceHeaderPrefix) && strings.EqualFold(name[:len(ceHeaderPrefix)], ceHeaderPrefix)
		}
		if f.Name == FormatCloudEventsStructured {
			extra = append(extra, header(HeaderContentType, cloudevents.StructuredContentType))
			m.Value = &bytesEncoder{b: ev.Envelope()}
			break
		}
		for _, a := range ev.Attributes() {
			extra = append(extra, header(ceHeaderPrefix+a[0], a[1]))
		}
		extra = append(extra, header(HeaderContentType, ev.DataContentType))
	case FormatDebeziumOutbox:
		typeHeader := f.EffectiveTypeHeader()
		owned = func(name string) bool {
			return strings.EqualFold(name, recordformat.DebeziumIDHeader) || strings.EqualFold(name, typeHeader)
		}
		extra = append(extra, header(recordformat.DebeziumIDHeader, r.ID), header(typeHeader, r.Type))
		if r.Type == "" {
			extra[len(extra)-1].Value = nil // a null header value, as the router emits for a NULL type
		}
	default:
		return // Validate admits no other format
	}
	hdrs := make([]sarama.RecordHeader, 0, len(m.Headers)+len(extra))
	rest := m.Headers
	for len(rest) > 0 && sinkHeader(string(rest[0].Key)) {
		hdrs = append(hdrs, rest[0])
		rest = rest[1:]
	}
	hdrs = append(hdrs, extra...)
	for _, h := range rest {
		if !owned(string(h.Key)) {
			hdrs = append(hdrs, h)
		}
	}
	m.Headers = hdrs
}

// sinkHeader reports whether name is one of the headers the sink sets on every record.
func sinkHeader(name string) bool {
	return name == HeaderID || name == HeaderType || name == HeaderDestination
}

func header(name, value string) sarama.RecordHeader {
	return sarama.RecordHeader{Key: []byte(name), Value: []byte(value)}
}
