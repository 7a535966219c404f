package nats

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
)

// Header names the sink sets on every message, before the message's own headers. HeaderMsgID is
// JetStream's de-duplication header: the stream drops a message whose id it stored within its
// duplicate window (acking it as a duplicate).
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderID          = "pgoutbox-id"
	HeaderType        = "pgoutbox-type"
	HeaderDestination = "pgoutbox-destination"
	HeaderKey         = "pgoutbox-key"
)

// message builds the NATS message of r for subject, in its destination's format.
func (s *Sink) message(r *outbox.Record, subject string) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: r.Payload}
	o := s.cfg.Formats[string(r.Destination)]
	m.Header = s.headers(r, o.Enabled())
	if !o.Enabled() {
		return m
	}
	ev := cloudevents.New(r, o, "")
	if o.Format == cloudevents.Structured {
		m.Header[HeaderContentType] = []string{cloudevents.StructuredContentType}
		m.Data = ev.Envelope()
		return m
	}
	for _, a := range ev.Attributes() {
		m.Header["ce-"+a[0]] = []string{headerValue(a[1])}
	}
	m.Header[HeaderContentType] = []string{headerValue(ev.DataContentType)}
	return m
}

// HeaderContentType carries a CloudEvent's datacontenttype (binary mode) or the envelope's content
// type (structured mode), as the CloudEvents NATS binding reads it.
const HeaderContentType = "content-type"

// headers builds the NATS headers of r (with ce, for a CloudEvents format: a message cannot set the
// ce-… attributes or the content-type). A message header is dropped (and counted) when its name is
// not a token, its value has a control character (it would break the protocol's header block), its
// name starts with "Nats-" in any case (JetStream reads those: a message could roll up, that is purge,
// its stream, or expect sequences) or is one of the sink's own.
func (s *Sink) headers(r *outbox.Record, ce bool) nats.Header {
	h := make(nats.Header, 4+len(r.Headers))
	h[HeaderMsgID] = []string{headerValue(r.ID)}
	h[HeaderID] = []string{headerValue(r.ID)}
	if r.Type != "" {
		h[HeaderType] = []string{headerValue(r.Type)}
	}
	h[HeaderDestination] = []string{headerValue(string(r.Destination))}
	if r.Key != "" {
		h[HeaderKey] = []string{headerValue(r.Key)}
	}
	for k, v := range r.Headers {
		if !allowedHeader(k, v) || ce && (strings.HasPrefix(strings.ToLower(k), "ce-") || strings.EqualFold(k, HeaderContentType)) {
			s.stats.droppedHeaders.Add(1)
			continue
		}
		h[k] = []string{v}
	}
	return h
}

func allowedHeader(name, value string) bool {
	if names.ValidateHeaderName(name) != nil || len(name) >= 5 && strings.EqualFold(name[:5], "nats-") {
		return false
	}
	switch strings.ToLower(name) {
	case HeaderID, HeaderType, HeaderDestination, HeaderKey:
		return false
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// headerValue returns v as a header value: unchanged unless it holds a control character (a key, type
// or destination may hold CR and LF, which cannot be in a header: nats.go turns them into spaces, so
// the value would arrive altered beyond recovery), in which case control characters and '%' are
// percent-encoded (%0D%0A).
func headerValue(v string) string {
	if !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(v[i])
	}
	return b.String()
}
