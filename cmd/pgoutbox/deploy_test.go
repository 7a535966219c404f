package main_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
)

const repoRoot = "../.."

// TestComposeFile loads docker-compose.yml offline with compose-go (no Docker engine here) and checks
// the stack: services, wal_level=logical, healthchecks and startup ordering.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml")}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("pgoutbox", true) })
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	for _, name := range []string{"postgres", "kafka", "kafka-init", "migrate", "pgoutbox", "producer"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %q missing", name)
		}
	}
	pg := p.Services["postgres"]
	if !strings.HasPrefix(pg.Image, "postgres:17") {
		t.Errorf("postgres image = %q, want postgres:17", pg.Image)
	}
	if !slices.Contains(pg.Command, "wal_level=logical") {
		t.Errorf("postgres command %v lacks -c wal_level=logical", pg.Command)
	}
	if !strings.HasPrefix(p.Services["kafka"].Image, "apache/kafka:") {
		t.Errorf("kafka image = %q, want apache/kafka", p.Services["kafka"].Image)
	}
	if p.Services["kafka"].Environment["KAFKA_PROCESS_ROLES"] == nil {
		t.Error("kafka is not configured for KRaft (KAFKA_PROCESS_ROLES)")
	}
	for _, name := range []string{"postgres", "kafka", "pgoutbox"} {
		if hc := p.Services[name].HealthCheck; hc == nil || len(hc.Test) == 0 {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
	wantDeps := map[string]map[string]string{
		"kafka-init": {"kafka": "service_healthy"},
		"migrate":    {"postgres": "service_healthy"},
		"pgoutbox": {"postgres": "service_healthy", "kafka": "service_healthy",
			"kafka-init": "service_completed_successfully", "migrate": "service_completed_successfully"},
		"producer": {"pgoutbox": "service_healthy"},
	}
	for svc, deps := range wantDeps {
		for dep, cond := range deps {
			if got := p.Services[svc].DependsOn[dep].Condition; got != cond {
				t.Errorf("%s depends_on %s: condition %q, want %q", svc, dep, got, cond)
			}
		}
	}
	relay := p.Services["pgoutbox"]
	if strings.Join(relay.Command, " ") != "run --config /etc/pgoutbox/config.yaml" {
		t.Errorf("pgoutbox command = %v", relay.Command)
	}
	if relay.Build == nil || p.Services["producer"].Build == nil {
		t.Error("pgoutbox and producer must build the image from the Dockerfile")
	}
	if len(relay.Volumes) == 0 || relay.Volumes[0].Target != "/etc/pgoutbox/config.yaml" {
		t.Errorf("pgoutbox volumes = %+v, want the config mounted at /etc/pgoutbox/config.yaml", relay.Volumes)
	}
}

// TestDeployConfigIsValid: the config the compose stack mounts loads and has routes.
func TestDeployConfigIsValid(t *testing.T) {
	t.Parallel()
	c, err := config.Load(config.Source{File: filepath.Join(repoRoot, "deploy", "config.yaml"),
		Env: []string{"PGOUTBOX_DATABASE_URL=postgres://postgres@postgres:5432/app"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateRun(false); err != nil {
		t.Fatal(err)
	}
	if c.Routes["orders"].Kafka == nil || c.Kafka.Acks != "all" {
		t.Errorf("deploy config routes = %+v, kafka = %+v", c.Routes, c.Kafka)
	}
}

// TestDockerfile checks the image recipe offline: multi-stage, static (CGO off), non-root, the Go
// version of go.mod.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	df, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(df)
	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(s, -1)
	if len(from) < 2 {
		t.Fatalf("want a multi-stage build, found %d FROM lines", len(from))
	}
	goVer := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(gomod))
	if goVer == nil || !strings.HasPrefix(from[0][1], "golang:"+goVer[1]) {
		t.Errorf("build stage %q does not match go.mod's go %v", from[0][1], goVer)
	}
	final := from[len(from)-1][1]
	if !strings.Contains(final, "distroless/static") && final != "scratch" {
		t.Errorf("final stage %q is not distroless/static or scratch", final)
	}
	for _, want := range []string{"CGO_ENABLED=0", "USER nonroot", "./cmd/pgoutbox", "./deploy/demo-producer", `ENTRYPOINT ["/usr/local/bin/pgoutbox"]`} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
