package observe

import "github.com/prometheus/client_golang/prometheus"

// WebhookDroppedHeaders exports read, a webhook sink's count of message headers it did not send
// (credentials, hop-by-hop, configured or invalid headers), as
// pgoutbox_webhook_dropped_headers_total{destination}.
func (m *Metrics) WebhookDroppedHeaders(dest string, read func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "pgoutbox_webhook_dropped_headers_total",
		Help:        "Message headers a webhook sink did not send: credentials, hop-by-hop, configured, its own or invalid headers, per destination.",
		ConstLabels: prometheus.Labels{"destination": dest},
	}, func() float64 { return float64(read()) }))
}
