// Package observe holds the daemon's Prometheus metrics, the slot poller they feed on and the
// /healthz and /readyz probes. Metrics register on the registry given to NewMetrics, never on the
// global default one.
package observe

import (
	"errors"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// States are the values of the pgoutbox_role gauge's role label.
var States = []string{"starting", "connecting", "snapshot", "streaming", "standby", "backoff", "stopped", "failed"}

// WALStatuses are the values of pgoutbox_slot_wal_status's status label (pg_replication_slots.wal_status).
var WALStatuses = []string{"reserved", "extended", "unreserved", "lost", "missing"}

// OutboxLabel names the outbox a relay's series belong to: every series of a Metrics carries it.
const OutboxLabel = "outbox"

// Metrics are the metrics of one outbox's relay, each series labelled outbox="<name>". It implements
// outbox.Observer; all methods are safe for concurrent use.
type Metrics struct {
	delivered    *prometheus.CounterVec
	failed       *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	blocked      *prometheus.GaugeVec
	inFlight     prometheus.Gauge
	role         *prometheus.GaugeVec
	reconnects   prometheus.Counter
	lag          prometheus.Gauge
	retained     prometheus.Gauge
	confirmed    prometheus.Gauge
	slotActive   prometheus.Gauge
	snapshot     prometheus.Gauge
	walStatus    *prometheus.GaugeVec
	deadLetters  prometheus.Gauge
	pollErrors   prometheus.Counter
	parked       [4]prometheus.Gauge   // keys, messages, oldest age, WAL pinned
	reg          prometheus.Registerer // for metrics added after NewMetrics (webhook.go)
	ignored      ignoredMessages       // logical.go
	source       sourceDelay           // source.go
}

var _ outbox.Observer = (*Metrics)(nil)

// NewMetrics creates the metrics of the outbox named outbox and registers them on reg, labelled
// outbox="<outbox>"; the metrics of several outboxes share one registry.
func NewMetrics(reg prometheus.Registerer, outbox string) *Metrics {
	reg = prometheus.WrapRegistererWith(prometheus.Labels{OutboxLabel: outbox}, reg)
	dest := []string{"destination"}
	m := &Metrics{
		reg: reg,
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgoutbox_messages_delivered_total",
			Help: "Messages acked by their sink or handler, per destination."}, dest),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgoutbox_delivery_failures_total",
			Help: "Failed delivery attempts (each retry counts), per destination."}, dest),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgoutbox_messages_dead_lettered_total",
			Help: "Messages written to the dead-letter table, per destination."}, dest),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pgoutbox_commit_to_ack_seconds",
			Help:    "Time from the message's commit in PostgreSQL to its ack by the sink, per destination.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800}}, dest),
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgoutbox_destination_blocked",
			Help: "1 while a destination's sink reports itself unavailable (the slot does not advance)."}, dest),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_in_flight_messages",
			Help: "Messages received from the WAL and not yet acked."}),
		role: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgoutbox_role",
			Help: "1 for the relay's current state: streaming (active), standby (another instance holds the slot), connecting, backoff, starting, stopped, failed."},
			[]string{"role"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "pgoutbox_replication_reconnects_total",
			Help: "Times the replication connection was lost and the relay went into backoff (sampled state transitions)."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_slot_lag_bytes",
			Help: "pg_current_wal_lsn() minus the slot's confirmed_flush_lsn: WAL not yet confirmed as delivered."}),
		retained: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_slot_retained_wal_bytes",
			Help: "pg_current_wal_lsn() minus the slot's restart_lsn: WAL the server keeps for the slot."}),
		confirmed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_slot_confirmed_lsn",
			Help: "The slot's confirmed_flush_lsn as a number."}),
		slotActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_slot_active",
			Help: "1 when a walsender (this or another instance) streams the slot."}),
		snapshot: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_snapshot_pending",
			Help: "1 while the slot's initial snapshot (rows committed before its creation) is not yet delivered."}),
		walStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgoutbox_slot_wal_status",
			Help: "1 for the slot's wal_status (reserved, extended, unreserved, lost), or missing when the slot does not exist."},
			[]string{"status"}),
		deadLetters: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_dead_letters",
			Help: "Rows in the dead-letter table."}),
		pollErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "pgoutbox_slot_poll_errors_total",
			Help: "Failed polls of pg_replication_slots and the dead-letter table."}),
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m.parked = [4]prometheus.Gauge{
		gauge("pgoutbox_parked_keys", "Keys held back because a message of theirs failed and waits for its next attempt (its later messages wait behind it; other keys flow)."),
		gauge("pgoutbox_parked_messages", "Messages held back by parked keys, the failed ones included."),
		gauge("pgoutbox_parked_oldest_age_seconds", "How long the longest-parked key has been parked (0 when none is)."),
		gauge("pgoutbox_parked_wal_bytes", "WAL the server retains because of parked keys: the server's WAL end minus the lowest commit LSN among the parked messages (the slot cannot be confirmed past it)."),
	}
	reg.MustRegister(m.delivered, m.failed, m.deadLettered, m.latency, m.blocked, m.inFlight, m.role, m.reconnects,
		m.lag, m.retained, m.confirmed, m.slotActive, m.snapshot, m.walStatus, m.deadLetters, m.pollErrors,
		m.parked[0], m.parked[1], m.parked[2], m.parked[3])
	m.source = newSourceDelay(reg)
	m.SetState("starting")
	return m
}

// RegisterBuildInfo registers pgoutbox_build_info{version}, the one series of the process rather than
// of an outbox.
func RegisterBuildInfo(reg prometheus.Registerer, version string) {
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_build_info", Help: "Always 1; labels carry the version.",
		ConstLabels: prometheus.Labels{"version": version}})
	info.Set(1)
	reg.MustRegister(info)
}

// Delivered implements outbox.Observer.
func (m *Metrics) Delivered(dest outbox.Destination, commitToAck time.Duration) {
	m.delivered.WithLabelValues(string(dest)).Inc()
	m.latency.WithLabelValues(string(dest)).Observe(commitToAck.Seconds())
}

// Failed implements outbox.Observer.
func (m *Metrics) Failed(dest outbox.Destination, _ error) {
	m.failed.WithLabelValues(string(dest)).Inc()
}

// DeadLettered implements outbox.Observer.
func (m *Metrics) DeadLettered(dest outbox.Destination) {
	m.deadLettered.WithLabelValues(string(dest)).Inc()
}

// Blocked implements outbox.Observer.
func (m *Metrics) Blocked(dest outbox.Destination, err error) {
	v := 0.0
	if err != nil {
		v = 1
	}
	m.blocked.WithLabelValues(string(dest)).Set(v)
}

// InitDestinations creates the per-destination series at zero, so dashboards see them before traffic.
func (m *Metrics) InitDestinations(dests []string) {
	for _, d := range dests {
		m.delivered.WithLabelValues(d)
		m.failed.WithLabelValues(d)
		m.deadLettered.WithLabelValues(d)
		m.blocked.WithLabelValues(d).Set(0)
	}
}

// SetState sets the role gauge to state.
func (m *Metrics) SetState(state string) {
	for _, s := range States {
		v := 0.0
		if s == state {
			v = 1
		}
		m.role.WithLabelValues(s).Set(v)
	}
}

// SetInFlight sets the in-flight gauge.
func (m *Metrics) SetInFlight(n int) { m.inFlight.Set(float64(n)) }

// SetParked sets the parked-key gauges from the relay's stats; walEnd is the server's WAL end.
func (m *Metrics) SetParked(s outbox.ParkedStats, walEnd pglogrepl.LSN) {
	var age, pinned float64
	if s.Keys > 0 {
		age = time.Since(s.Since).Seconds()
		if walEnd > s.OldestLSN {
			pinned = float64(walEnd - s.OldestLSN)
		}
	}
	m.parked[0].Set(float64(s.Keys))
	m.parked[1].Set(float64(s.Records))
	m.parked[2].Set(age)
	m.parked[3].Set(pinned)
}

// Reconnected counts one lost replication connection.
func (m *Metrics) Reconnected(n uint64) { m.reconnects.Add(float64(n)) }

// SetSlot records a poll of the slot and the dead-letter depth; a failed poll counts as an error.
func (m *Metrics) SetSlot(s SlotStatus, err error) {
	if err != nil && !errors.Is(err, ErrNoDeadLetterTable) {
		m.pollErrors.Inc()
		return
	}
	status := "missing"
	if s.Exists {
		status = s.WALStatus
		m.lag.Set(float64(s.LagBytes))
		m.retained.Set(float64(s.RetainedBytes))
		m.confirmed.Set(float64(s.ConfirmedLSN))
	}
	active := 0.0
	if s.Active {
		active = 1
	}
	m.slotActive.Set(active)
	pending := 0.0
	if s.Record != nil && s.Record.SnapshotPending {
		pending = 1
	}
	m.snapshot.Set(pending)
	for _, st := range WALStatuses {
		v := 0.0
		if st == status {
			v = 1
		}
		m.walStatus.WithLabelValues(st).Set(v)
	}
	m.deadLetters.Set(float64(s.DeadLetters))
}
