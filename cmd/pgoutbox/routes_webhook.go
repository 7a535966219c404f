package main

import (
	"fmt"
	"sort"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// newWebhookSink builds the webhook sink of route dest and logs its settings (never header values or
// the signing secret; the route line says where it posts).
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
	wc.CloudEvents = config.RecordFormat(r.Format, r.CloudEventsSource, r.CloudEventsType)
	ws, err := webhook.New(wc, webhook.WithLogger(log))
	if err != nil {
		return nil, withCode(exitUsage, fmt.Errorf("%w: routes.%s.webhook: %w", config.ErrInvalid, dest, err))
	}
	names := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	log.Info("webhook sink", zap.String("destination", dest), zap.Bool("append_route", r.AppendRoute),
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
