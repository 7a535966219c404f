package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
)

// Config holds the webhook sink's settings. Start from [DefaultConfig].
type Config struct {
	// URL is the endpoint, http or https. Required. Every record goes to this URL; redirects are not
	// followed.
	URL string
	// AppendRoute appends each record's Route to URL as one escaped path segment (URL /hooks, Route
	// orders → /hooks/orders). A Route of more than MaxRouteBytes, with a control character, "/", "\",
	// "..", "?", "#" or "%" is a permanent failure. Off (the default), the Route is ignored.
	AppendRoute bool
	// Timeout bounds one request, including reading the answer (default 10s). Keep it shorter than the
	// relay's handler timeout (outbox.WithHandlerTimeout), which bounds a whole Send.
	Timeout time.Duration
	// Headers are sent with every request (for example Authorization). They win over message headers:
	// a message cannot set a configured header. Names must be tokens, values free of control
	// characters, and not headers the HTTP client or the sink sets (see [ValidateHeader]).
	Headers map[string]string
	// SigningSecret, when set, signs every request the Standard Webhooks way: webhook-id (the message
	// id), webhook-timestamp (unix seconds of the attempt) and webhook-signature ("v1," and the base64
	// HMAC-SHA256 of "id.timestamp.body"). It is "whsec_" followed by the base64 of 24 to 64 random
	// bytes (see [ValidateSigningSecret]). It is never logged.
	SigningSecret string
	// Concurrency is how many requests the sink has in flight at once, across all Sends and keys
	// (default 16): the relay keeps several Sends in flight per lane, and this bounds what the
	// endpoint sees whatever their number.
	Concurrency int
	// CloudEvents lays every request out as a CloudEvents 1.0 event per the HTTP binding: binary mode
	// (ce-… headers, Content-Type = datacontenttype) or structured mode (an
	// application/cloudevents+json envelope as the body, which the signature then covers). The
	// default, raw, posts the payload as the body.
	CloudEvents cloudevents.Options
}

// DefaultConfig returns a Config with the defaults and no URL.
func DefaultConfig() Config { return Config{Timeout: 10 * time.Second, Concurrency: 16} }

// Validate reports invalid settings, naming the field. Its errors never contain a header value or the
// signing secret.
func (c Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, errors.New("webhook: config: URL is empty"))
	case err != nil:
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue's text repeats the URL, password included
		}
		errs = append(errs, fmt.Errorf("webhook: config: URL does not parse: %w", err))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("webhook: config: URL %q is not an absolute http(s) URL", u.Redacted()))
	case u.Fragment != "":
		errs = append(errs, fmt.Errorf("webhook: config: URL %q has a #fragment, which is never sent", u.Redacted()))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("webhook: config: Timeout is %v; it must be positive", c.Timeout))
	}
	if c.Concurrency <= 0 {
		errs = append(errs, fmt.Errorf("webhook: config: Concurrency is %d; it must be positive", c.Concurrency))
	}
	if err := c.CloudEvents.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("webhook: config: CloudEvents: %w", err))
	}
	seen := map[string]string{}
	for name, v := range c.Headers {
		if err := ValidateHeader(name, v); err != nil {
			errs = append(errs, fmt.Errorf("webhook: config: Headers: %w", err))
		}
		canon := http.CanonicalHeaderKey(name)
		if other, ok := seen[canon]; ok {
			errs = append(errs, fmt.Errorf("webhook: config: Headers: %q and %q are the same header", other, name))
		}
		seen[canon] = name
	}
	if c.SigningSecret != "" {
		if err := ValidateSigningSecret(c.SigningSecret); err != nil {
			errs = append(errs, fmt.Errorf("webhook: config: SigningSecret: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Stats are counters of a Sink since New.
type Stats struct {
	// DroppedHeaders counts message headers not sent: names the configuration sets, credentials,
	// hop-by-hop and the sink's own headers, invalid names and values with control characters.
	DroppedHeaders uint64
}

// Sink posts records to a webhook. It is safe for concurrent use.
type Sink struct {
	cfg        Config
	url        string            // cfg.URL, parsed and re-serialised
	base       *url.URL          // cfg.URL parsed
	basePath   string            // base's escaped path without a trailing slash
	display    string            // scheme://host/path, for errors and logs: no user info, no query
	headers    map[string]string // cfg.Headers, canonical names
	configured map[string]bool   // canonical names of cfg.Headers
	key        []byte            // HMAC key, nil without signing
	client     *http.Client
	log        *zap.Logger
	now        func() time.Time
	sem        chan struct{} // request slots, shared by every Send (Config.Concurrency)

	epoch    time.Time
	answered atomic.Int64 // time since epoch (+1) of the last answer that was not systemic; 0: none
	dropped  atomic.Uint64

	mu     sync.Mutex
	logged map[string]bool // destination + "\x00" + lower-case header name, for drops logged once
}

// Option configures optional dependencies of a Sink.
type Option func(*Sink)

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(s *Sink) {
		if l != nil {
			s.log = l
		}
	}
}

// WithHTTPClient sets the HTTP client (default: a client with its own transport). Its Timeout is
// left as is; Config.Timeout bounds each request through its context. The sink uses a copy that does
// not follow redirects.
func WithHTTPClient(c *http.Client) Option {
	return func(s *Sink) {
		if c != nil {
			cp := *c
			s.client = &cp
		}
	}
}

// WithClock sets the clock used for webhook-timestamp and Retry-After dates (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Sink) {
		if now != nil {
			s.now = now
		}
	}
}

// New validates cfg and returns a Sink.
func New(cfg Config, opts ...Option) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base, _ := url.Parse(cfg.URL) // Validate parsed it
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Concurrency
	s := &Sink{
		cfg: cfg, url: base.String(), base: base, basePath: strings.TrimSuffix(base.EscapedPath(), "/"),
		display: (&url.URL{Scheme: base.Scheme, Host: base.Host, Path: base.Path, RawPath: base.RawPath}).String(),
		headers: map[string]string{}, configured: map[string]bool{},
		client: &http.Client{Transport: tr}, log: zap.NewNop(), now: time.Now, epoch: time.Now(), logged: map[string]bool{},
		sem: make(chan struct{}, cfg.Concurrency),
	}
	for k, v := range cfg.Headers {
		s.headers[http.CanonicalHeaderKey(k)] = v
		s.configured[http.CanonicalHeaderKey(k)] = true
	}
	if cfg.SigningSecret != "" {
		s.key, _ = parseSecret(cfg.SigningSecret) // Validate checked it
	}
	for _, o := range opts {
		o(s)
	}
	s.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s.log = s.log.Named("webhook")
	return s, nil
}

// Stats returns the sink's counters.
func (s *Sink) Stats() Stats { return Stats{DroppedHeaders: s.dropped.Load()} }

// Close releases idle connections. It is idempotent.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
