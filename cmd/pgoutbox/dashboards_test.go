package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// series is a metric the daemon registers and the labels its samples carry.
type series map[string]map[string]bool

// registeredMetrics gathers what the daemon registers: one outbox's metrics with every setter called
// (vectors show no series before their first label values), the build info, and histograms' _bucket,
// _sum and _count series.
func registeredMetrics(t *testing.T) series {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := observe.NewMetrics(reg, "shop")
	observe.RegisterBuildInfo(reg, "test")
	m.InitDestinations([]string{"orders"})
	m.Delivered("orders", time.Millisecond)
	m.Failed("orders", nil)
	m.DeadLettered("orders")
	m.Blocked("orders", nil)
	m.SetState("streaming")
	m.SetInFlight(1)
	m.SetParked(outbox.ParkedStats{}, 0)
	m.Reconnected(1)
	m.SetSlot(observe.SlotStatus{Exists: true, WALStatus: "reserved"}, nil)
	m.WebhookDroppedHeaders("orders", func() uint64 { return 0 })
	m.KafkaTransactions(func() observe.KafkaTxn { return observe.KafkaTxn{} })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := series{}
	add := func(name string, labels map[string]bool) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for l := range labels {
			out[name][l] = true
		}
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			labels := map[string]bool{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = true
			}
			add(mf.GetName(), labels)
			if mf.GetType() == dto.MetricType_HISTOGRAM {
				add(mf.GetName()+"_sum", labels)
				add(mf.GetName()+"_count", labels)
				labels["le"] = true
				add(mf.GetName()+"_bucket", labels)
			}
		}
	}
	return out
}

var (
	metricRE   = regexp.MustCompile(`\bpgoutbox_[a-zA-Z0-9_]+`)
	selectorRE = regexp.MustCompile(`\b(pgoutbox_[a-zA-Z0-9_]+)\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
)

// errorer is where checkExpr reports: a *testing.T, or a recorder.
type errorer interface {
	Errorf(format string, args ...any)
}

// recorder keeps the errors reported to it.
type recorder struct{ errs []string }

func (r *recorder) Errorf(format string, args ...any) { r.errs = append(r.errs, format) }

// checkExpr reports every pgoutbox_* metric expr names that the daemon does not register, and every
// label a selector matches on that the metric does not carry.
func checkExpr(t errorer, where, expr string, reg series) {
	if !metricRE.MatchString(expr) {
		t.Errorf("%s: %q names no pgoutbox metric", where, expr)
	}
	for _, name := range metricRE.FindAllString(expr, -1) {
		if reg[name] == nil {
			t.Errorf("%s: %q names %s, which the daemon does not register", where, expr, name)
		}
	}
	for _, sel := range selectorRE.FindAllStringSubmatch(expr, -1) {
		for _, mt := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
			if labels := reg[sel[1]]; labels != nil && !labels[mt[1]] {
				t.Errorf("%s: %q matches label %s, which %s does not carry", where, expr, mt[1], sel[1])
			}
		}
	}
}

// TestAlertRulesNameRegisteredMetrics parses deploy/prometheus/alerts.yml: every rule is complete and
// names only metrics (and labels) the daemon registers; docs/daemon.md lists every alert.
func TestAlertRulesNameRegisteredMetrics(t *testing.T) {
	t.Parallel()
	reg := registeredMetrics(t)
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr, For string
				Labels           map[string]string
				Annotations      map[string]string
			}
		}
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	docs, err := os.ReadFile(filepath.Join(repoRoot, "docs", "daemon.md"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v: want alert, expr, labels.severity and annotations.summary", r)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			checkExpr(t, "alerts.yml "+r.Alert, r.Expr, reg)
			if !strings.Contains(string(docs), r.Alert) {
				t.Errorf("docs/daemon.md does not list the alert %s", r.Alert)
			}
		}
	}
	for _, want := range []string{"PgoutboxSlotLag", "PgoutboxWALRetention", "PgoutboxSlotAtRisk", "PgoutboxNoActiveRelay",
		"PgoutboxDestinationBlocked", "PgoutboxDeadLettersGrowing", "PgoutboxKeysParked", "PgoutboxReconnects", "PgoutboxDeliveryLatency"} {
		if !slices.Contains(names, want) {
			t.Errorf("alerts.yml lacks %s (have %v)", want, names)
		}
	}
}

// TestDashboardNamesRegisteredMetrics parses deploy/grafana/pgoutbox.json: every query names only
// metrics (and labels) the daemon registers, every panel query is filtered by the $outbox template
// variable, and the dashboard shows what an operator looks for.
func TestDashboardNamesRegisteredMetrics(t *testing.T) {
	t.Parallel()
	reg := registeredMetrics(t)
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "pgoutbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string
		Templating struct {
			List []struct {
				Name, Type string
				Definition string
			}
		}
		Panels []struct {
			Title   string
			Type    string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("pgoutbox.json: %v", err)
	}
	var hasOutboxVar bool
	for _, v := range dash.Templating.List {
		if v.Name == "outbox" {
			hasOutboxVar = true
			checkExpr(t, "variable outbox", v.Definition, reg)
		}
	}
	if !hasOutboxVar || dash.UID == "" {
		t.Errorf("the dashboard needs a uid and an outbox template variable (uid %q, variables %+v)", dash.UID, dash.Templating.List)
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			checkExpr(t, "panel "+p.Title, q.Expr, reg)
			if !strings.Contains(q.Expr, `outbox=~"$outbox"`) {
				t.Errorf("panel %q: %q is not filtered by outbox=~\"$outbox\"", p.Title, q.Expr)
			}
			for _, n := range metricRE.FindAllString(q.Expr, -1) {
				used[n] = true
			}
		}
	}
	for _, want := range []string{"pgoutbox_messages_delivered_total", "pgoutbox_slot_lag_bytes", "pgoutbox_slot_retained_wal_bytes",
		"pgoutbox_commit_to_ack_seconds_bucket", "pgoutbox_dead_letters", "pgoutbox_messages_dead_lettered_total",
		"pgoutbox_destination_blocked", "pgoutbox_parked_keys", "pgoutbox_replication_reconnects_total", "pgoutbox_role"} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	if t.Failed() {
		var all []string
		for n := range reg {
			all = append(all, n)
		}
		sort.Strings(all)
		t.Logf("registered: %s", strings.Join(all, " "))
	}
}

// A dashboard or alert naming a metric the daemon does not register, or a label it does not carry, is
// caught: the check can fail.
func TestCheckExprCatchesDrift(t *testing.T) {
	t.Parallel()
	reg := registeredMetrics(t)
	for _, expr := range []string{`max(pgoutbox_slot_lag)`, `pgoutbox_role{state="streaming"}`,
		`rate(pgoutbox_commit_to_ack_bucket[5m])`, `sum(rate(http_requests_total[5m]))`} {
		var r recorder
		checkExpr(&r, "test", expr, reg)
		if len(r.errs) == 0 {
			t.Errorf("%q: no error", expr)
		}
	}
	var r recorder
	checkExpr(&r, "test", `histogram_quantile(0.99, sum by (outbox, le) (rate(pgoutbox_commit_to_ack_seconds_bucket{outbox=~"a"}[5m])))`, reg)
	if len(r.errs) != 0 {
		t.Errorf("a valid expression: %v", r.errs)
	}
}

// TestComposeMonitoring: the compose stack runs Prometheus with the alert rules and Grafana with the
// provisioned data source and dashboard, from the files under deploy/.
func TestComposeMonitoring(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml")}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("pgoutbox", true) })
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	mounts := func(svc string) map[string]string {
		out := map[string]string{}
		for _, v := range p.Services[svc].Volumes {
			rel, err := filepath.Rel(root, v.Source)
			if err != nil {
				t.Fatal(err)
			}
			out[v.Target] = rel
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which does not exist: %v", svc, v.Source, err)
			}
		}
		return out
	}
	for svc, want := range map[string]map[string]string{
		"prometheus": {"/etc/prometheus/prometheus.yml": "deploy/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml": "deploy/prometheus/alerts.yml"},
		"grafana": {"/etc/grafana/provisioning": "deploy/grafana/provisioning",
			"/var/lib/grafana/dashboards/pgoutbox.json": "deploy/grafana/pgoutbox.json"},
	} {
		got := mounts(svc)
		for target, src := range want {
			if got[target] != src {
				t.Errorf("%s mounts %q at %s, want %s", svc, got[target], target, src)
			}
		}
	}
	if !strings.HasPrefix(p.Services["prometheus"].Image, "prom/prometheus:") || !strings.HasPrefix(p.Services["grafana"].Image, "grafana/grafana:") {
		t.Errorf("images: prometheus %q, grafana %q", p.Services["prometheus"].Image, p.Services["grafana"].Image)
	}
	read := func(rel string, into any) {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, into); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
	}
	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			StaticConfigs []struct{ Targets []string } `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	read("deploy/prometheus/prometheus.yml", &prom)
	if !slices.Contains(prom.RuleFiles, "/etc/prometheus/alerts.yml") || len(prom.ScrapeConfigs) == 0 ||
		len(prom.ScrapeConfigs[0].StaticConfigs) == 0 || !slices.Contains(prom.ScrapeConfigs[0].StaticConfigs[0].Targets, "pgoutbox:9090") {
		t.Errorf("prometheus.yml: %+v, want the alert rules loaded and pgoutbox:9090 scraped", prom)
	}
	var dsrc struct{ Datasources []struct{ Type, URL string } }
	read("deploy/grafana/provisioning/datasources/prometheus.yml", &dsrc)
	if len(dsrc.Datasources) != 1 || dsrc.Datasources[0].Type != "prometheus" || dsrc.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana data source: %+v", dsrc)
	}
	var prov struct {
		Providers []struct{ Options struct{ Path string } }
	}
	read("deploy/grafana/provisioning/dashboards/pgoutbox.yml", &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("grafana dashboard provider: %+v", prov)
	}
}
