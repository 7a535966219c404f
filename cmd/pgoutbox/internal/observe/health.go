package observe

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Probe answers /healthz and /readyz from the daemon's current view. Its setters and handlers are
// safe for concurrent use.
type Probe struct {
	// MaxLagBytes above which the instance is not ready (0 disables the check).
	MaxLagBytes int64
	// StandbyReady makes a standby report ready.
	StandbyReady bool
	// MaxParkedAge above which a parked key makes the instance not ready (0 disables the check).
	MaxParkedAge time.Duration

	mu       sync.Mutex
	state    string
	failure  string
	retry    string // why the outbox is being started again (several outboxes: see SetRetrying)
	blocked  map[string]string
	lag      int64
	lagKnown bool
	parked   outbox.ParkedStats
}

// SetParked records the relay's parked keys.
func (p *Probe) SetParked(s outbox.ParkedStats) { p.mu.Lock(); p.parked = s; p.mu.Unlock() }

// SetState records the relay state ("streaming", "standby", ...).
func (p *Probe) SetState(s string) { p.mu.Lock(); p.state, p.retry = s, ""; p.mu.Unlock() }

// SetRetrying records that the outbox stopped with err and is started again after a backoff: it is
// not ready meanwhile, but not failed either.
func (p *Probe) SetRetrying(reason string) {
	p.mu.Lock()
	p.state, p.retry = "backoff", reason
	p.mu.Unlock()
}

// SetFailed marks the relay failed: /healthz turns red.
func (p *Probe) SetFailed(reason string) {
	p.mu.Lock()
	p.failure, p.state = reason, "failed"
	p.mu.Unlock()
}

// SetBlocked records the blocked destinations (and topics) with their reasons.
func (p *Probe) SetBlocked(b map[string]string) { p.mu.Lock(); p.blocked = b; p.mu.Unlock() }

// SetLag records the slot lag from the last successful poll.
func (p *Probe) SetLag(bytes int64) { p.mu.Lock(); p.lag, p.lagKnown = bytes, true; p.mu.Unlock() }

// Healthy reports whether the process should keep running: false once the relay failed.
func (p *Probe) Healthy() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failure != "" {
		return false, "relay failed: " + p.failure
	}
	return true, "ok (state " + p.stateLocked() + ")"
}

func (p *Probe) stateLocked() string {
	if p.state == "" {
		return "starting"
	}
	return p.state
}

// Ready reports whether the instance serves traffic, and every reason it does not.
func (p *Probe) Ready() (bool, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var why []string
	switch st := p.stateLocked(); {
	case st == "streaming":
	case st == "standby" && p.StandbyReady:
	case st == "standby":
		why = append(why, "state standby: another instance streams the slot")
	default:
		why = append(why, "state "+st+": not streaming")
	}
	if p.failure != "" {
		why = append(why, "relay failed: "+p.failure)
	}
	if p.retry != "" {
		why = append(why, "starting again after: "+p.retry)
	}
	if p.MaxLagBytes > 0 && p.lagKnown && p.lag > p.MaxLagBytes {
		why = append(why, fmt.Sprintf("slot lag %d bytes exceeds readiness.max_lag_bytes %d", p.lag, p.MaxLagBytes))
	}
	if age := time.Since(p.parked.Since); p.MaxParkedAge > 0 && p.parked.Keys > 0 && age > p.MaxParkedAge {
		why = append(why, fmt.Sprintf("%d keys parked behind failed messages, the oldest for %s (over readiness.max_parked_age %s); the slot waits at %s",
			p.parked.Keys, age.Round(time.Second), p.MaxParkedAge, p.parked.OldestLSN))
	}
	keys := make([]string, 0, len(p.blocked))
	for k := range p.blocked {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		why = append(why, fmt.Sprintf("blocked %s: %s", k, p.blocked[k]))
	}
	return len(why) == 0, why
}

// readyLine is the one-line form of a probe's readiness.
func (p *Probe) readyLine() (bool, string) {
	ok, why := p.Ready()
	if ok {
		return true, "ready (state " + p.State() + ")"
	}
	return false, "not ready: " + strings.Join(why, "; ")
}

// State returns the last recorded state ("starting" before any).
func (p *Probe) State() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stateLocked()
}

// Health holds the probe of each outbox the daemon runs and answers /healthz and /readyz for them
// all. Add every probe before serving.
type Health struct {
	names  []string
	probes map[string]*Probe
}

// Add registers the probe of the outbox named name.
func (h *Health) Add(name string, p *Probe) {
	if h.probes == nil {
		h.probes = map[string]*Probe{}
	}
	h.names = append(h.names, name)
	h.probes[name] = p
}

// Healthy reports whether the process should keep running: while at least one outbox has not failed
// (one outbox failing never stops the others; a restart would not mend it). The message names every
// outbox.
func (h *Health) Healthy() (bool, string) {
	if len(h.names) == 1 {
		return h.probes[h.names[0]].Healthy()
	}
	healthy := 0
	var lines []string
	for _, n := range h.names {
		ok, msg := h.probes[n].Healthy()
		if ok {
			healthy++
		}
		lines = append(lines, n+": "+msg)
	}
	head := fmt.Sprintf("ok: %d of %d outboxes run", healthy, len(h.names))
	if healthy == 0 {
		head = fmt.Sprintf("every outbox failed (%d)", len(h.names))
	}
	return healthy > 0, head + "\n- " + strings.Join(lines, "\n- ")
}

// Handler serves /metrics from reg, /healthz and /readyz (/readyz?outbox=NAME for one outbox).
func Handler(reg *prometheus.Registry, h *Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, msg := h.Healthy()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, msg)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		names := h.names
		if n := r.URL.Query().Get("outbox"); n != "" {
			if h.probes[n] == nil {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprintf(w, "no outbox named %q (configured: %s)\n", n, strings.Join(h.names, ", "))
				return
			}
			names = []string{n}
		}
		ok, body := readiness(h, names)
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, body)
	})
	return mux
}

// readiness is /readyz for the named outboxes: ready when every one is. One outbox answers as it
// always did; several answer one line each.
func readiness(h *Health, names []string) (bool, string) {
	if len(names) == 1 {
		p := h.probes[names[0]]
		ok, why := p.Ready()
		if ok {
			return true, "ready (state " + p.State() + ")\n"
		}
		return false, "not ready:\n- " + strings.Join(why, "\n- ") + "\n"
	}
	ready := 0
	var lines []string
	for _, n := range names {
		ok, line := h.probes[n].readyLine()
		if ok {
			ready++
		}
		lines = append(lines, n+": "+line)
	}
	head := fmt.Sprintf("ready: %d outboxes", len(names))
	if ready < len(names) {
		head = fmt.Sprintf("not ready: %d of %d outboxes ready", ready, len(names))
	}
	return ready == len(names), head + "\n- " + strings.Join(lines, "\n- ") + "\n"
}
