package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutbox/pgoutbox/outbox"
)

var _ outbox.SourceObserver = (*Metrics)(nil)

// sourceDelay is pgoutbox_source_delay_seconds: how far behind PostgreSQL the relay reads, split at
// the walsender's send.
type sourceDelay struct {
	walsender, receive prometheus.Observer
}

func newSourceDelay(reg prometheus.Registerer) sourceDelay {
	vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pgoutbox_source_delay_seconds",
		Help: "Per decoded transaction: stage walsender = from its commit to PostgreSQL's walsender sending it (server clock: " +
			"the server decoding the WAL, short of CPU or waiting for the flush); stage receive = from that send to the relay " +
			"decoding it (network, receive batching, the relay's decode queue; includes the clock skew between the hosts).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}}, []string{"stage"})
	reg.MustRegister(vec)
	return sourceDelay{walsender: vec.WithLabelValues("walsender"), receive: vec.WithLabelValues("receive")}
}

// Decoded implements outbox.SourceObserver.
func (m *Metrics) Decoded(commitToSent, sentToDecoded time.Duration) {
	m.source.walsender.Observe(max(commitToSent, 0).Seconds())
	m.source.receive.Observe(max(sentToDecoded, 0).Seconds())
}
