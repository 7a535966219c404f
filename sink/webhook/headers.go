package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
)

// Headers the sink sets on every request. A message header of one of these names is dropped.
const (
	// HeaderIdempotencyKey and HeaderID carry the message id, the key receivers dedupe on.
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderID             = "X-Pgoutbox-Id"
	HeaderType           = "X-Pgoutbox-Type"
	HeaderDestination    = "X-Pgoutbox-Destination"
	// The Standard Webhooks headers, sent when Config.SigningSecret is set (written in lower case, as
	// the specification spells them).
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// maxLoggedDrops bounds the (destination, header name) pairs remembered for "logged once": past it,
// drops are only counted, so messages with ever new header names cannot grow the sink's memory.
const maxLoggedDrops = 1024

// transportReason says why neither a message nor the configuration may set a header: the HTTP client
// owns it (framing, hop-by-hop) or the sink does. "" for any other name. lower is the lower-cased name.
func transportReason(lower string) string {
	switch lower {
	case "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
		"upgrade", "expect", "proxy-connection":
		return "hop-by-hop or framing header, set by the HTTP client"
	case "idempotency-key":
		return "set by the sink (the message id)"
	}
	if strings.HasPrefix(lower, "x-pgoutbox-") || strings.HasPrefix(lower, "webhook-") {
		return "set by the sink (pgoutbox and Standard Webhooks headers)"
	}
	return ""
}

// messageReason says why a message may not set header name to value, or "" when it may.
func (s *Sink) messageReason(name, value string) string {
	if !validName(name) {
		return "not a valid header name (RFC 9110 token)"
	}
	if !validValue(value) {
		return "value has control characters (CR, LF, NUL, …)"
	}
	lower := strings.ToLower(name)
	if r := transportReason(lower); r != "" {
		return r
	}
	switch {
	case lower == "authorization" || lower == "proxy-authorization" || lower == "cookie":
		return "credentials come from the configuration only"
	case strings.HasPrefix(lower, "proxy-"):
		return "hop-by-hop header"
	case s.configured[http.CanonicalHeaderKey(name)]:
		return "set by the configuration (configured headers win)"
	}
	return ""
}

// ValidateHeader reports whether the configuration may send header name with value: name must be a
// token, value free of control characters, and name not one the HTTP client or the sink sets (Host,
// Content-Length, Transfer-Encoding, Connection and other hop-by-hop headers, Idempotency-Key,
// X-Pgoutbox-*, webhook-*). The error never contains the value.
func ValidateHeader(name, value string) error {
	if !validName(name) {
		return fmt.Errorf("header name %s is not a valid token (RFC 9110: letters, digits and !#$%%&'*+-.^_`|~)", quote(name))
	}
	if !validValue(value) {
		return fmt.Errorf("header %s: the value has control characters (CR, LF, NUL, …)", name)
	}
	if r := transportReason(strings.ToLower(name)); r != "" {
		return fmt.Errorf("header %s cannot be configured: %s", name, r)
	}
	return nil
}

// setHeaders writes the request headers: the configured ones, the message's own (minus those it may
// not set, which are dropped and counted), the Content-Type, the CloudEvents attributes in binary mode,
// the sink's headers and the signature. It returns the body to send: the payload, or the CloudEvents
// envelope in structured mode.
func (s *Sink) setHeaders(h http.Header, r *outbox.Record) []byte {
	for k, v := range s.headers {
		h[k] = []string{v}
	}
	if len(r.Headers) > 0 {
		names := make([]string, 0, len(r.Headers))
		for k := range r.Headers {
			names = append(names, k)
		}
		sort.Strings(names) // case variants of one name: the same one wins every time
		for _, name := range names {
			v := r.Headers[name]
			if why := s.messageReason(name, v); why != "" {
				s.drop(r, name, why)
				continue
			}
			if s.cfg.CloudEvents.Enabled() && len(name) > 3 && strings.EqualFold(name[:3], "ce-") {
				s.drop(r, name, "set by the sink (CloudEvents attributes)")
				continue
			}
			h.Set(name, v)
		}
	}
	body := s.cloudEvent(h, r)
	if len(h["Content-Type"]) == 0 {
		h["Content-Type"] = []string{"application/octet-stream"}
	}
	h[HeaderIdempotencyKey] = []string{r.ID}
	h[HeaderID] = []string{r.ID}
	h[HeaderType] = []string{r.Type}
	h[HeaderDestination] = []string{string(r.Destination)}
	if s.key != nil {
		ts := strconv.FormatInt(s.now().Unix(), 10)
		h[HeaderWebhookID] = []string{r.ID}
		h[HeaderWebhookTimestamp] = []string{ts}
		h[HeaderWebhookSignature] = []string{sign(s.key, r.ID, ts, body)}
	}
	return body
}

// cloudEvent lays r out as a CloudEvent when the sink is configured for one: binary mode writes the
// attributes as ce-… headers (see cloudevents.HeaderValue) and the datacontenttype as the Content-Type (the
// configured or message one when set); structured mode returns the envelope as the body with the
// application/cloudevents+json Content-Type. It returns the body to send.
func (s *Sink) cloudEvent(h http.Header, r *outbox.Record) []byte {
	o := s.cfg.CloudEvents
	if !o.Enabled() {
		return r.Payload
	}
	ev := cloudevents.New(r, o, h.Get("Content-Type"))
	if o.Format == cloudevents.Structured {
		h.Set("Content-Type", cloudevents.StructuredContentType)
		return ev.Envelope()
	}
	for _, a := range ev.Attributes() {
		h.Set("ce-"+a[0], cloudevents.HeaderValue(a[1]))
	}
	h.Set("Content-Type", ev.DataContentType)
	return r.Payload
}

// drop counts a message header that is not sent and logs it once per destination and header name
// (never its value).
func (s *Sink) drop(r *outbox.Record, name, why string) {
	s.dropped.Add(1)
	k := string(r.Destination) + "\x00" + strings.ToLower(name)
	s.mu.Lock()
	first := !s.logged[k] && len(s.logged) < maxLoggedDrops
	if first {
		s.logged[k] = true
	}
	s.mu.Unlock()
	if first {
		s.log.Warn("message header dropped; further drops of this header for this destination are counted, not logged",
			zap.String("destination", string(r.Destination)), zap.String("header", quote(name)),
			zap.String("reason", why), zap.String("message_id", r.ID))
	}
}

// checkRecord reports a record whose own fields cannot travel as headers: a permanent failure.
func (s *Sink) checkRecord(r *outbox.Record) error {
	bad := func(field, v, why string) error {
		return outbox.Permanent(fmt.Errorf("webhook: message %s: %s %s cannot be sent: %s", quote(r.ID), field, quote(v), why))
	}
	switch {
	case r.ID == "":
		return outbox.Permanent(errors.New("webhook: a message without an id cannot be sent"))
	case !validValue(r.ID):
		return bad("id", r.ID, "it has control characters")
	case s.key != nil && strings.Contains(r.ID, "."):
		return bad("id", r.ID, "Standard Webhooks signs id.timestamp.body, so a signed message id must not contain '.'")
	case !validValue(r.Type):
		return bad("type", r.Type, "it has control characters")
	case !validValue(string(r.Destination)):
		return bad("destination", string(r.Destination), "it has control characters")
	}
	return nil
}

// validName reports whether name is an RFC 9110 token.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue reports whether v can be a header value: no control characters but horizontal tab
// (what net/http accepts; CR and LF would split the header).
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// quote returns s quoted for a log or an error, shortened to 64 bytes.
func quote(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "…"
	}
	return strconv.Quote(s)
}
