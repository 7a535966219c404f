package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Config holds the webhook sink's settings. Start from [DefaultConfig].
type Config struct {
	// URL is the endpoint, http or https. Required.
	URL string
	// Timeout bounds one request, including reading the answer (default 10s).
	Timeout time.Duration
	// Headers are sent with every request (for example Authorization); message headers and the
	// pgoutbox headers take precedence.
	Headers map[string]string
	// Concurrency is how many requests one Send may have in flight, across keys (default 8).
	Concurrency int
}

// DefaultConfig returns a Config with the defaults and no URL.
func DefaultConfig() Config { return Config{Timeout: 10 * time.Second, Concurrency: 8} }

// Validate reports invalid settings, naming the field.
func (c Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, errors.New("webhook: config: URL is empty"))
	case err != nil:
		errs = append(errs, fmt.Errorf("webhook: config: URL: %w", err))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("webhook: config: URL %q is not an absolute http(s) URL", c.URL))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("webhook: config: Timeout is %v; it must be positive", c.Timeout))
	}
	if c.Concurrency <= 0 {
		errs = append(errs, fmt.Errorf("webhook: config: Concurrency is %d; it must be positive", c.Concurrency))
	}
	return errors.Join(errs...)
}

// Sink posts records to a webhook. It is safe for concurrent use.
type Sink struct {
	cfg    Config
	client *http.Client
	log    *zap.Logger
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
// left as is; Config.Timeout bounds each request through its context.
func WithHTTPClient(c *http.Client) Option {
	return func(s *Sink) {
		if c != nil {
			s.client = c
		}
	}
}

// New validates cfg and returns a Sink.
func New(cfg Config, opts ...Option) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Concurrency
	s := &Sink{cfg: cfg, client: &http.Client{Transport: tr}, log: zap.NewNop()}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.Named("webhook")
	return s, nil
}

// Close releases idle connections. It is idempotent.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// errUnreachable marks a request that never reached the endpoint.
type errUnreachable struct{ err error }

func (e errUnreachable) Error() string { return e.err.Error() }
func (e errUnreachable) Unwrap() error { return e.err }

// Send posts every record and returns once each has been answered. See [outbox.Sink].
func (s *Sink) Send(ctx context.Context, batch []outbox.Record) error {
	if len(batch) == 0 {
		return nil
	}
	// Lanes: the indexes of each key's records, in batch order.
	var lanes [][]int
	laneOf := map[string]int{}
	for i := range batch {
		k := batch[i].Key
		n, ok := laneOf[k]
		if !ok || k == "" {
			n = len(lanes)
			lanes = append(lanes, nil)
			laneOf[k] = n
		}
		lanes[n] = append(lanes[n], i)
	}
	errs := make([]error, len(batch))
	sem := make(chan struct{}, s.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, lane := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var stop error
			for _, i := range lane {
				if stop != nil {
					errs[i] = outbox.NotAttempted(fmt.Errorf("webhook: message %s not sent: an earlier message of key %q failed: %w", batch[i].ID, batch[i].Key, stop))
					continue
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					errs[i] = ctx.Err()
					stop = ctx.Err()
					continue
				}
				errs[i] = s.post(ctx, &batch[i])
				<-sem
				if errs[i] != nil && !outbox.IsPermanent(errs[i]) {
					stop = errs[i]
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("webhook: send: %w", err)
	}
	failed := false
	for _, err := range errs {
		var u errUnreachable
		if errors.As(err, &u) {
			return outbox.Unavailable(fmt.Errorf("webhook: %s unreachable: %w", s.cfg.URL, u.err))
		}
		failed = failed || err != nil
	}
	if failed {
		return &outbox.BatchError{Errs: errs}
	}
	return nil
}

func (s *Sink) target(r *outbox.Record) string {
	if r.Route == "" {
		return s.cfg.URL
	}
	return strings.TrimSuffix(s.cfg.URL, "/") + "/" + strings.TrimPrefix(r.Route, "/")
}

func (s *Sink) post(ctx context.Context, r *outbox.Record) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.target(r), bytes.NewReader(r.Payload))
	if err != nil {
		return outbox.Permanent(fmt.Errorf("webhook: message %s: build request: %w", r.ID, err))
	}
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Idempotency-Key", r.ID)
	req.Header.Set("X-Pgoutbox-Id", r.ID)
	req.Header.Set("X-Pgoutbox-Type", r.Type)
	req.Header.Set("X-Pgoutbox-Destination", string(r.Destination))
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			if unreachable(err) {
				return errUnreachable{err}
			}
		}
		return fmt.Errorf("webhook: message %s: post %s: %w", r.ID, req.URL.Redacted(), err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return fmt.Errorf("webhook: message %s: %s answered %s: %s", r.ID, req.URL.Redacted(), resp.Status, bytes.TrimSpace(body))
	default:
		return outbox.Permanent(fmt.Errorf("webhook: message %s: %s rejected it with %s: %s", r.ID, req.URL.Redacted(), resp.Status, bytes.TrimSpace(body)))
	}
}

// unreachable reports a failure to connect at all (as opposed to a timeout or a broken answer).
func unreachable(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && !op.Timeout() {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}
