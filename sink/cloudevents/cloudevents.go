// Package cloudevents lays out outbox records as CloudEvents 1.0 for the sinks that offer a record
// format (Kafka, NATS, RabbitMQ, webhook): the event's context attributes for binary content mode, which
// each sink writes into its protocol's headers (ce_… on Kafka, ce-… on HTTP and NATS, cloudEvents_… on
// AMQP), and the JSON
// envelope of structured content mode. It depends on no client library.
//
// The event of a record: id = the message id, source = Options.Source (default
// "/pgoutbox/<destination>"), type = the message Type (Options.Type when empty), subject = the message
// Key, time = the message's creation time, datacontenttype = the message's content-type header, else
// application/json when the payload is JSON, else application/octet-stream; data = the payload,
// byte-exact (in the envelope as JSON when it is JSON, else as data_base64).
package cloudevents

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Format is how a sink lays out a record.
type Format string

const (
	// Raw sends the payload as the body with the sink's own headers (the default).
	Raw Format = "raw"
	// Binary sends the payload as the body and the CloudEvents attributes as headers (binary content mode).
	Binary Format = "cloudevents-binary"
	// Structured sends one JSON envelope holding the attributes and the data (structured content mode).
	Structured Format = "cloudevents-structured"
)

// SpecVersion is the CloudEvents version of the events.
const SpecVersion = "1.0"

// StructuredContentType is the content type of a structured-mode envelope.
const StructuredContentType = "application/cloudevents+json; charset=utf-8"

// ParseFormat parses a format name; "" is Raw.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.TrimSpace(s)); f {
	case "", Raw:
		return Raw, nil
	case Binary, Structured:
		return f, nil
	}
	return "", fmt.Errorf("format %q is not raw, cloudevents-binary or cloudevents-structured", s)
}

// Options configures the events of one destination.
type Options struct {
	Format Format
	// Source is the events' source, a URI-reference (default "/pgoutbox/<destination>").
	Source string
	// Type is the event type of a message without one (default "pgoutbox.message"): CloudEvents requires one.
	Type string
}

// Enabled reports whether o lays records out as CloudEvents.
func (o Options) Enabled() bool { return o.Format == Binary || o.Format == Structured }

// Validate reports an invalid format or source.
func (o Options) Validate() error {
	if _, err := ParseFormat(string(o.Format)); err != nil {
		return err
	}
	if o.Source != "" {
		if _, err := url.Parse(o.Source); err != nil || strings.ContainsAny(o.Source, " \t\r\n") {
			return fmt.Errorf("cloudevents source %q is not a URI-reference", o.Source)
		}
	}
	return nil
}

// Event is the CloudEvent of one record.
type Event struct {
	ID, Source, Type, Subject, Time, DataContentType string
	Data                                             []byte
}

// New returns the event of r. contentType, when set, is the data's content type (a configured one);
// otherwise the message's content-type header, else JSON detection, decides.
func New(r *outbox.Record, o Options, contentType string) Event {
	e := Event{ID: r.ID, Source: o.Source, Type: r.Type, Subject: r.Key, DataContentType: contentType, Data: r.Payload}
	if e.Source == "" {
		e.Source = "/pgoutbox/" + url.PathEscape(string(r.Destination))
	}
	if e.Type == "" {
		e.Type = o.Type
		if e.Type == "" {
			e.Type = "pgoutbox.message"
		}
	}
	if !r.CreatedAt.IsZero() {
		e.Time = r.CreatedAt.UTC().Format(time.RFC3339Nano)
	}
	if e.DataContentType == "" {
		for k, v := range r.Headers {
			if strings.EqualFold(k, "content-type") && v != "" {
				e.DataContentType = v
			}
		}
	}
	if e.DataContentType == "" {
		e.DataContentType = "application/octet-stream"
		if json.Valid(r.Payload) {
			e.DataContentType = "application/json"
		}
	}
	return e
}

// Attributes returns the context attributes other than datacontenttype (which each binding carries in
// its own content-type field), as name/value pairs in a fixed order; optional ones only when set.
func (e Event) Attributes() [][2]string {
	out := [][2]string{{"specversion", SpecVersion}, {"id", e.ID}, {"source", e.Source}, {"type", e.Type}}
	if e.Subject != "" {
		out = append(out, [2]string{"subject", e.Subject})
	}
	if e.Time != "" {
		out = append(out, [2]string{"time", e.Time})
	}
	return out
}

// jsonData reports whether the data goes into the envelope as JSON: its content type is JSON and it
// parses as JSON.
func (e Event) jsonData() bool {
	mt, _, err := mime.ParseMediaType(e.DataContentType)
	if err != nil {
		return false
	}
	return (mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")) && json.Valid(e.Data)
}

// Envelope returns the structured-mode JSON: the attributes, datacontenttype, and the data as a JSON
// value (byte-exact) when it is JSON, else as data_base64.
func (e Event) Envelope() []byte {
	var b bytes.Buffer
	b.Grow(len(e.Data)*4/3 + 256)
	b.WriteByte('{')
	for i, a := range e.Attributes() {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(&b, a[0])
		b.WriteByte(':')
		writeString(&b, a[1])
	}
	b.WriteString(`,"datacontenttype":`)
	writeString(&b, e.DataContentType)
	if e.jsonData() {
		b.WriteString(`,"data":`)
		b.Write(e.Data)
	} else if len(e.Data) > 0 {
		b.WriteString(`,"data_base64":"`)
		b.WriteString(base64.StdEncoding.EncodeToString(e.Data))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.Bytes()
}

func writeString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}

// HeaderValue makes v safe as an HTTP header value: control characters, which no header may carry, are
// percent-encoded (%0A); everything else, non-ASCII and '%' included, is sent as it is, which is what
// the CloudEvents Go SDK's HTTP binding writes and reads (the HTTP binding's full percent-encoding of
// non-ASCII would arrive there undecoded).
func HeaderValue(v string) string {
	if !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(v[i])
	}
	return b.String()
}
