package main

import (
	"fmt"
	"net/url"
	"sort"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// newWebhookSink builds the webhook sink of route dest and logs where it posts (never the query,
// user info, header values or the signing secret).
func newWebhookSink(dest string, r config.WebhookRoute, log *zap.Logger) (*webhook.Sink, error) {
	wc := webhook.DefaultConfig()
	wc.URL = r.URL
	wc.AppendRoute = r.AppendRoute
	if r.Timeout > 0 {
		wc.Timeout = r.Timeout.D()
	}
	if r.Concurrency > 0 {
		wc.Concurrency = r.Concurrency
	}
	wc.Headers = r.Headers
	wc.SigningSecret = r.SigningSecret
	ws, err := webhook.New(wc, webhook.WithLogger(log))
	if err != nil {
		return nil, withCode(exitUsage, fmt.Errorf("%w: routes.%s.webhook: %w", config.ErrInvalid, dest, err))
	}
	names := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	where := "the configured URL; message Route ignored"
	if r.AppendRoute {
		where = "the configured URL + message Route as one path segment"
	}
	u, _ := url.Parse(r.URL) // validated
	log.Info("webhook route", zap.String("destination", dest),
		zap.String("url", (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()), zap.String("records_go_to", where),
		zap.Bool("signed", r.SigningSecret != ""), zap.Strings("configured_headers", names), zap.Duration("timeout", wc.Timeout))
	return ws, nil
}

func (s *sinkSet) addWebhook(dest string, ws *webhook.Sink) {
	if s.webhooks == nil {
		s.webhooks = map[string]*webhook.Sink{}
	}
	s.webhooks[dest] = ws
	s.byDest[dest] = ws
	s.closers = append(s.closers, ws)
}

// exportWebhookStats exports the webhook sinks' counters as metrics.
func (s *sinkSet) exportWebhookStats(m *observe.Metrics) {
	for dest, ws := range s.webhooks {
		m.WebhookDroppedHeaders(dest, func() uint64 { return ws.Stats().DroppedHeaders })
	}
}
