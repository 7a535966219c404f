// Package recordformat names the record formats of the Kafka sink and checks their settings. It does
// not depend on sarama, so configuration loaders (the daemon's, also when built without Kafka) can
// validate a format without pulling in a Kafka client. The layouts themselves are built by
// [github.com/pgoutbox/pgoutbox/sink/kafka]; the CloudEvents ones by
// [github.com/pgoutbox/pgoutbox/sink/cloudevents].
package recordformat

import (
	"fmt"
	"strings"

	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
)

// Name is a record format.
type Name string

const (
	// Raw: the payload as the value, the message Key as the key, pgoutbox headers (the default).
	Raw Name = "raw"
	// CloudEventsBinary: CloudEvents 1.0 binary content mode of the Kafka protocol binding (ce_… headers,
	// content-type; the payload as the value).
	CloudEventsBinary = Name(cloudevents.Binary)
	// CloudEventsStructured: CloudEvents 1.0 structured content mode (the JSON envelope as the value,
	// content-type application/cloudevents+json).
	CloudEventsStructured = Name(cloudevents.Structured)
	// DebeziumOutbox: the layout of Debezium's outbox event router (io.debezium.transforms.outbox.EventRouter):
	// the payload as the value, the message Key (the aggregate id) as the key, an "id" header holding
	// the message id and the message type in a header (TypeHeader; a null value for a message without
	// a type, as the router emits for a NULL type column).
	DebeziumOutbox Name = "debezium-outbox"
)

// DefaultTypeHeader is the header that carries the message type in the debezium-outbox format: the
// alias of the usual router setting table.fields.additional.placement=type:header:eventType.
const DefaultTypeHeader = "eventType"

// DebeziumIDHeader is the header that carries the message id in the debezium-outbox format, as the
// router's default table.field.event.id puts it.
const DebeziumIDHeader = "id"

// MaxHeaderName is the longest TypeHeader accepted.
const MaxHeaderName = 255

// reservedPrefix starts the names of the sink's own headers, which a format header may not take.
const reservedPrefix = "pgoutbox-"

// Parse parses a format name; "" is Raw. The error names the allowed values.
func Parse(s string) (Name, error) {
	switch n := Name(strings.TrimSpace(s)); n {
	case "", Raw:
		return Raw, nil
	case CloudEventsBinary, CloudEventsStructured, DebeziumOutbox:
		return n, nil
	}
	return "", fmt.Errorf("format %q is not raw, cloudevents-binary, cloudevents-structured or debezium-outbox", s)
}

// Format is how the records of one destination are laid out.
type Format struct {
	// Name is the format ("" is Raw).
	Name Name
	// Source and Type apply to the CloudEvents formats: the events' source, a URI-reference (default
	// "/pgoutbox/<destination>"), and the event type of a message without one (default
	// "pgoutbox.message"). See [cloudevents.Options].
	Source, Type string
	// TypeHeader applies to DebeziumOutbox: the header holding the message type (default
	// [DefaultTypeHeader]). It may not be "id" nor start with "pgoutbox-".
	TypeHeader string
}

// Validate reports an unknown format name, a source that is not a URI-reference, and a TypeHeader that
// is invalid or set for another format than DebeziumOutbox. The errors name the field.
func (f Format) Validate() error {
	n, err := Parse(string(f.Name))
	if err != nil {
		return err
	}
	if err := (cloudevents.Options{Source: f.Source}).Validate(); err != nil {
		return fmt.Errorf("Source: %w", err)
	}
	if f.TypeHeader == "" {
		return nil
	}
	if n != DebeziumOutbox {
		return fmt.Errorf("TypeHeader %q applies only to format %s, not %s", f.TypeHeader, DebeziumOutbox, n)
	}
	return ValidateTypeHeader(f.TypeHeader)
}

// ValidateTypeHeader reports why h cannot name the type header of the debezium-outbox format: empty,
// longer than [MaxHeaderName] bytes, holding control characters, "id" in any case (the message id's
// header) or a name starting with "pgoutbox-" (the sink's own headers).
func ValidateTypeHeader(h string) error {
	switch {
	case strings.TrimSpace(h) == "":
		return fmt.Errorf("type header name is empty")
	case len(h) > MaxHeaderName:
		return fmt.Errorf("type header name of %d bytes is over the limit of %d", len(h), MaxHeaderName)
	case strings.ContainsFunc(h, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("type header name %q has a control character", h)
	case strings.EqualFold(h, DebeziumIDHeader):
		return fmt.Errorf("type header name %q is the message id's header", h)
	case len(h) >= len(reservedPrefix) && strings.EqualFold(h[:len(reservedPrefix)], reservedPrefix):
		return fmt.Errorf("type header name %q starts with %q, which the sink's own headers use", h, reservedPrefix)
	}
	return nil
}

// CloudEvents returns the CloudEvents options of f (meaningful for the CloudEvents formats).
func (f Format) CloudEvents() cloudevents.Options {
	return cloudevents.Options{Format: cloudevents.Format(f.Name), Source: f.Source, Type: f.Type}
}

// EffectiveTypeHeader returns TypeHeader, or DefaultTypeHeader when it is empty.
func (f Format) EffectiveTypeHeader() string {
	if f.TypeHeader == "" {
		return DefaultTypeHeader
	}
	return f.TypeHeader
}
