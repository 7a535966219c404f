package observe_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/outbox"
)

func TestReadiness(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(p *observe.Probe)
		ready   bool
		healthy bool
		why     string
	}{
		{"starting", func(p *observe.Probe) {}, false, true, "state starting"},
		{"streaming", func(p *observe.Probe) { p.SetState("streaming") }, true, true, ""},
		{"standby", func(p *observe.Probe) { p.SetState("standby") }, false, true, "standby"},
		{"standby ready", func(p *observe.Probe) { p.StandbyReady = true; p.SetState("standby") }, true, true, ""},
		{"lag", func(p *observe.Probe) { p.SetState("streaming"); p.SetLag(2000) }, false, true, "slot lag 2000 bytes"},
		{"lag under", func(p *observe.Probe) { p.SetState("streaming"); p.SetLag(10) }, true, true, ""},
		{"blocked", func(p *observe.Probe) {
			p.SetState("streaming")
			p.SetBlocked(map[string]string{"destination orders": "broker down"})
		}, false, true, "blocked destination orders: broker down"},
		{"failed", func(p *observe.Probe) { p.SetFailed("slot lost") }, false, false, "relay failed: slot lost"},
		{"parked too long", func(p *observe.Probe) {
			p.SetState("streaming")
			p.SetParked(outbox.ParkedStats{Keys: 2, Records: 9, Since: time.Now().Add(-2 * time.Minute), OldestLSN: 0x16B3F28})
		}, false, true, "2 keys parked behind failed messages, the oldest for 2m0s (over readiness.max_parked_age 1m0s); the slot waits at 0/16B3F28"},
		{"parked briefly", func(p *observe.Probe) {
			p.SetState("streaming")
			p.SetParked(outbox.ParkedStats{Keys: 1, Records: 1, Since: time.Now().Add(-time.Second), OldestLSN: 0x16B3F28})
		}, true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := &observe.Probe{MaxLagBytes: 1000, MaxParkedAge: time.Minute}
			tt.setup(p)
			var h observe.Health
			h.Add("app", p)
			srv := httptest.NewServer(observe.Handler(prometheus.NewRegistry(), &h))
			defer srv.Close()
			get := func(path string) (int, string) {
				resp, err := srv.Client().Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			code, body := get("/readyz")
			if (code == 200) != tt.ready || !strings.Contains(body, tt.why) {
				t.Errorf("/readyz = %d %q, want ready=%v containing %q", code, body, tt.ready, tt.why)
			}
			if code, body := get("/healthz"); (code == 200) != tt.healthy {
				t.Errorf("/healthz = %d %q, want healthy=%v", code, body, tt.healthy)
			}
		})
	}
}

func TestMetricsRegisterOnTheGivenRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := observe.NewMetrics(reg, "shop")
	observe.NewMetrics(reg, "billing").SetState("failed") // a second outbox on the same registry
	observe.RegisterBuildInfo(reg, "v")
	m.InitDestinations([]string{"orders"})
	m.SetState("standby")
	m.SetSlot(observe.SlotStatus{Exists: true, WALStatus: "lost", LagBytes: 7, DeadLetters: 3}, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	outboxes := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch {
			case mf.GetName() == "pgoutbox_build_info":
				if _, ok := labels["outbox"]; ok {
					t.Errorf("pgoutbox_build_info is the process's, it has no outbox label: %v", labels)
				}
			case labels["outbox"] == "":
				t.Errorf("%s%v has no outbox label", mf.GetName(), labels)
			default:
				outboxes[labels["outbox"]] = true
			}
		}
	}
	for _, n := range []string{"pgoutbox_messages_delivered_total", "pgoutbox_role", "pgoutbox_slot_lag_bytes", "pgoutbox_slot_wal_status", "pgoutbox_dead_letters", "pgoutbox_build_info"} {
		if !names[n] {
			t.Errorf("%s not registered", n)
		}
	}
	if !outboxes["shop"] || !outboxes["billing"] {
		t.Errorf("outbox labels seen: %v, want shop and billing", outboxes)
	}
	// A second set on a fresh registry must not panic (no global registration).
	observe.NewMetrics(prometheus.NewRegistry(), "shop")
}

// With several outboxes /readyz is ready only when every outbox is, and names each; /healthz stays
// green while one outbox still runs; /readyz?outbox=NAME answers for one.
func TestHealthOfSeveralOutboxes(t *testing.T) {
	t.Parallel()
	shop, billing, crm := &observe.Probe{}, &observe.Probe{}, &observe.Probe{}
	var h observe.Health
	h.Add("shop", shop)
	h.Add("billing", billing)
	h.Add("crm", crm)
	srv := httptest.NewServer(observe.Handler(prometheus.NewRegistry(), &h))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []*observe.Probe{shop, billing, crm} {
		p.SetState("streaming")
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "ready: 3 outboxes") || !strings.Contains(body, "crm: ready (state streaming)") {
		t.Errorf("all streaming: /readyz = %d %q", code, body)
	}
	billing.SetFailed("slot lost")
	crm.SetRetrying("connect to PostgreSQL: connection refused")
	code, body := get("/readyz")
	for _, want := range []string{"not ready: 1 of 3 outboxes ready", "shop: ready (state streaming)",
		"billing: not ready: state failed: not streaming; relay failed: slot lost", "crm: not ready: state backoff: not streaming; starting again after: connect"} {
		if code != 503 || !strings.Contains(body, want) {
			t.Errorf("/readyz = %d %q, want 503 with %q", code, body, want)
		}
	}
	if code, body := get("/readyz?outbox=shop"); code != 200 || !strings.HasPrefix(body, "ready (state streaming)") {
		t.Errorf("/readyz?outbox=shop = %d %q", code, body)
	}
	if code, body := get("/readyz?outbox=nope"); code != 404 || !strings.Contains(body, "shop, billing, crm") {
		t.Errorf("/readyz?outbox=nope = %d %q", code, body)
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, "ok: 2 of 3 outboxes run") || !strings.Contains(body, "billing: relay failed: slot lost") {
		t.Errorf("/healthz with one failed = %d %q", code, body)
	}
	shop.SetFailed("x")
	crm.SetFailed("y")
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "every outbox failed") {
		t.Errorf("/healthz with all failed = %d %q", code, body)
	}
}
