package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// MaxRetryAfter caps the wait an endpoint can ask for with Retry-After, so that a wrong header cannot
// stall a destination for days.
const MaxRetryAfter = 10 * time.Minute

// MaxRouteBytes is the longest Route appended to the URL (Config.AppendRoute).
const MaxRouteBytes = 255

// answer classifies an HTTP answer to the post of r; snippet is the start of the body.
//
//   - 2xx: delivered.
//   - 429, 502, 503, 504: the endpoint is overloaded or down, not the message: systemic
//     (outbox.ErrUnavailable), with the Retry-After wait.
//   - 3xx: redirects are not followed (the configured URL is the one used): systemic, fix the URL.
//   - 408 and other 5xx: this request failed; retried (counting an attempt), with Retry-After if given.
//   - other 4xx: the endpoint rejected the message: permanent.
func (s *Sink) answer(r *outbox.Record, resp *http.Response, snippet []byte) error {
	code := resp.StatusCode
	body := quote(strings.TrimSpace(string(snippet)))
	wait := retryAfter(resp.Header.Get("Retry-After"), s.now())
	switch {
	case code >= 200 && code < 300:
		s.markAnswered()
		return nil
	case code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		return outbox.RetryAfter(outbox.Unavailable(fmt.Errorf("webhook: %s answered %s (message %s): %s",
			s.display, resp.Status, r.ID, body)), wait)
	case code >= 300 && code < 400:
		return outbox.Unavailable(fmt.Errorf("webhook: %s answered %s (message %s): redirects are not followed; "+
			"configure the URL it points to", s.display, resp.Status, r.ID))
	}
	s.markAnswered()
	if code >= 400 && code < 500 && code != http.StatusRequestTimeout {
		return outbox.Permanent(fmt.Errorf("webhook: message %s: %s rejected it with %s: %s", r.ID, s.display, resp.Status, body))
	}
	return outbox.RetryAfter(fmt.Errorf("webhook: message %s: %s answered %s: %s", r.ID, s.display, resp.Status, body), wait)
}

// transportError classifies a post of r that got no HTTP answer. started is when it began (see
// markAnswered). The endpoint counts as alive when it answered another request meanwhile.
//
//   - cut by the Send's deadline: not attempted (the endpoint answered others; the record was not given
//     its full Timeout), or systemic (the endpoint answered nothing).
//   - its own Timeout: a per-record failure, retried, when the endpoint answered others meanwhile (this
//     message is the slow one); systemic when it answered nothing (the whole endpoint times out).
//   - anything else (connection refused or reset, DNS, TLS): systemic.
func (s *Sink) transportError(sendCtx context.Context, r *outbox.Record, started time.Duration, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its text repeats the URL, query included
	}
	alive := s.answeredSince(started)
	switch {
	case sendCtx.Err() != nil && alive:
		return outbox.NotAttempted(fmt.Errorf("webhook: message %s: cut short by the send's deadline while %s answered other requests: %v",
			r.ID, s.display, err))
	case sendCtx.Err() != nil:
		return outbox.Unavailable(fmt.Errorf("webhook: %s answered nothing before the send's deadline: %w", s.display, err))
	case isTimeout(err) && alive:
		return fmt.Errorf("webhook: message %s: %s did not answer it within %s, while it answered other requests: %w",
			r.ID, s.display, s.cfg.Timeout, err)
	case isTimeout(err):
		return outbox.Unavailable(fmt.Errorf("webhook: %s answered nothing within %s: %w", s.display, s.cfg.Timeout, err))
	}
	return outbox.Unavailable(fmt.Errorf("webhook: %s unreachable: %w", s.display, err))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// markAnswered records that the endpoint answered a request (anything but a systemic status).
func (s *Sink) markAnswered() { s.answered.Store(int64(time.Since(s.epoch)) + 1) }

// answeredSince reports whether the endpoint answered a request after started (a time since s.epoch).
func (s *Sink) answeredSince(started time.Duration) bool { return s.answered.Load() > int64(started)+1 }

// retryAfter parses a Retry-After value, delay-seconds or an HTTP date, into a wait capped at
// MaxRetryAfter; 0 when v is empty, unparsable or in the past.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return max(time.Duration(n)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), MaxRetryAfter)
	}
	return 0
}

// target returns the URL to post r to: the configured URL, plus r's Route as one escaped path segment
// when Config.AppendRoute is set. A Route that is not one plain segment is a permanent failure.
func (s *Sink) target(r *outbox.Record) (string, error) {
	if !s.cfg.AppendRoute || r.Route == "" {
		return s.url, nil
	}
	if err := checkSegment(r.Route); err != nil {
		return "", outbox.Permanent(fmt.Errorf("webhook: message %s: Route %s cannot be appended to the URL: %w", r.ID, quote(r.Route), err))
	}
	u := *s.base
	u.RawPath = s.basePath + "/" + url.PathEscape(r.Route)
	u.Path = strings.TrimSuffix(s.base.Path, "/") + "/" + r.Route
	return u.String(), nil
}

// checkSegment reports why route cannot be one path segment under the configured URL, naming the rule.
func checkSegment(route string) error {
	if len(route) > MaxRouteBytes {
		return fmt.Errorf("it is %d bytes, the limit is %d (append_route)", len(route), MaxRouteBytes)
	}
	for i := 0; i < len(route); i++ {
		if c := route[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("it has a control character at byte %d (append_route allows one path segment)", i)
		}
	}
	if route == "." {
		return errors.New(`"." is not a segment (append_route allows one path segment)`)
	}
	for _, bad := range []string{"/", `\`, "..", "?", "#", "%"} {
		if strings.Contains(route, bad) {
			return fmt.Errorf("it contains %q (append_route allows one path segment without /, \\, .., ?, # or %%)", bad)
		}
	}
	return nil
}
