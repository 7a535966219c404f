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
	blocked  map[string]string
	lag      int64
	lagKnown bool
	parked   outbox.ParkedStats
}

// SetParked records the relay's parked keys.
func (p *Probe) SetParked(s outbox.ParkedStats) { p.mu.Lock(); p.parked = s; p.mu.Unlock() }

// SetState records the relay state ("streaming", "standby", ...).
func (p *Probe) SetState(s string) { p.mu.Lock(); p.state = s; p.mu.Unlock() }

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

// Handler serves /metrics from reg, /healthz and /readyz.
func Handler(reg *prometheus.Registry, p *Probe) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, msg := p.Healthy()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, msg)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := p.Ready()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ok {
			p.mu.Lock()
			st := p.stateLocked()
			p.mu.Unlock()
			fmt.Fprintf(w, "ready (state %s)\n", st)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready:\n- %s\n", strings.Join(why, "\n- "))
	})
	return mux
}
