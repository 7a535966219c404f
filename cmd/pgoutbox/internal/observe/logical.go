package observe

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// ignoredMessages is pgoutbox_logical_messages_ignored_total, fed from the relay's counters.
type ignoredMessages struct {
	mu   sync.Mutex
	vec  *prometheus.CounterVec
	last outbox.IgnoredMessages
}

// SetIgnoredMessages records the relay's counts of logical decoding messages that are not its own
// (registered with the first call, so that a relay without logical_messages shows no such metric).
func (m *Metrics) SetIgnoredMessages(s outbox.IgnoredMessages) {
	im := &m.ignored
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.vec == nil {
		im.vec = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgoutbox_logical_messages_ignored_total",
			Help: "Logical decoding messages the relay received and did not deliver (logical_messages: true): reason other_prefix " +
				"(transactional, with a prefix other than pgoutbox:<schema>) or non_transactional (pg_logical_emit_message(false, ...), " +
				"sent even when its transaction rolls back)."}, []string{"reason"})
		m.reg.MustRegister(im.vec)
		im.vec.WithLabelValues("other_prefix")
		im.vec.WithLabelValues("non_transactional")
	}
	if d := s.OtherPrefix - im.last.OtherPrefix; d > 0 {
		im.vec.WithLabelValues("other_prefix").Add(float64(d))
	}
	if d := s.NonTransactional - im.last.NonTransactional; d > 0 {
		im.vec.WithLabelValues("non_transactional").Add(float64(d))
	}
	im.last = s
}
