package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
)

const base = "database:\n  url: postgres://u@localhost/db\n"

func TestParseErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"unknown top-level key", base + "slott: x\n", []string{"slott", "unknown key"}},
		{"unknown nested key", base + "delivery:\n  max_attempt: 3\n", []string{"delivery.max_attempt", "unknown key"}},
		{"unknown route key", base + "routes:\n  orders:\n    kafka:\n      topik: x\n", []string{"routes.orders.kafka.topik", "unknown key"}},
		{"unknown kafka key", base + "kafka:\n  brokerz: [a:1]\n", []string{"kafka.brokerz", "unknown key"}},
		{"bad duration", base + "delivery:\n  backoff_min: 5x\n", []string{"delivery.backoff_min", "invalid duration", "line 4"}},
		{"bad drain timeout", base + "drain_timeout: soon\n", []string{"drain_timeout", "invalid duration"}},
		{"bad webhook timeout", base + "routes:\n  h:\n    webhook:\n      url: http://x\n      timeout: 1y\n", []string{"routes.h.webhook.timeout", "invalid duration"}},
		{"bad LSN", base + "start_lsn: 16-B374\n", []string{"start_lsn", "invalid LSN"}},
		{"bad LSN hex", base + "start_lsn: 0/XYZ\n", []string{"start_lsn", "invalid LSN"}},
		{"unsafe acks 1", base + "kafka:\n  acks: \"1\"\n", []string{"kafka.acks", "unsafe"}},
		{"unsafe acks 0", base + "kafka:\n  acks: 0\n", []string{"kafka.acks", "unsafe"}},
		{"unsafe acks leader", base + "kafka:\n  acks: leader\n", []string{"kafka.acks", "unsafe"}},
		{"bad integer", base + "delivery:\n  lanes: many\n", []string{"delivery.lanes", "invalid integer"}},
		{"bad boolean", base + "create_slot: maybe\n", []string{"create_slot", "invalid boolean"}},
		{"bad snapshot flag", base + "initial_snapshot: sometimes\n", []string{"initial_snapshot", "invalid boolean"}},
		{"read timeout below twice the status interval", base + "replication:\n  status_interval: 20s\n", []string{"replication.read_timeout", "twice replication.status_interval"}},
		{"status interval too small", base + "replication:\n  status_interval: 1ms\n", []string{"replication.status_interval", "at least 10ms"}},
		{"bad read timeout", base + "replication:\n  read_timeout: later\n", []string{"replication.read_timeout", "invalid duration"}},
		{"bad size", base + "streaming:\n  memory_limit: 64 parsecs\n", []string{"streaming.memory_limit", "invalid size"}},
		{"lanes out of range", base + "delivery:\n  lanes: 0\n", []string{"delivery.lanes", "between 1 and 4096"}},
		{"max attempts zero", base + "delivery:\n  max_attempts: 0\n", []string{"delivery.max_attempts"}},
		{"backoff max below min", base + "delivery:\n  backoff_min: 2s\n  backoff_max: 1s\n", []string{"delivery.backoff_max"}},
		{"negative retention", base + "retention: -1h\n", []string{"retention", "negative"}},
		{"bad schema", base + "schema: \"bad-name\"\n", []string{"schema"}},
		{"bad slot", base + "slot: Bad-Slot\n", []string{"slot", "a-z"}},
		{"bad listen", base + "http:\n  listen: nine\n", []string{"http.listen"}},
		{"bad log level", base + "log:\n  level: loud\n", []string{"log.level"}},
		{"bad log format", base + "log:\n  format: xml\n", []string{"log.format"}},
		{"no database", "schema: app\n", []string{"database.url", "required"}},
		{"route with two sinks", base + "routes:\n  o:\n    stdout: {}\n    kafka: {topic: t}\nkafka: {brokers: [\"k:9092\"]}\n", []string{"routes.o", "exactly one"}},
		{"route with no sink", base + "routes:\n  o: {}\n", []string{"routes.o", "exactly one"}},
		{"kafka route without brokers", base + "routes:\n  o:\n    kafka: {topic: t}\n", []string{"kafka.brokers", "routes.o"}},
		{"bad broker", base + "kafka:\n  brokers: [nohostport]\n", []string{"kafka.brokers[0]"}},
		{"bad webhook url", base + "routes:\n  h:\n    webhook: {url: \"ftp://x\"}\n", []string{"routes.h.webhook.url"}},
		{"bad compression", base + "kafka:\n  compression: rar\n", []string{"kafka.compression"}},
		{"bad sasl", base + "kafka:\n  sasl: {mechanism: GSSAPI}\n", []string{"kafka.sasl.mechanism"}},
		{"wrong shape", base + "delivery: 5\n", []string{"delivery", "mapping"}},
		{"list for scalar", base + "schema: [a, b]\n", []string{"schema", "single value"}},
		{"duplicate key", base + "schema: a\nschema: b\n", []string{"schema", "duplicate"}},
		{"yaml syntax", base + "routes: [\n", []string{"parse"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse(strings.NewReader(tt.yaml), "test.yaml")
			if err == nil {
				t.Fatalf("no error for:\n%s", tt.yaml)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseFull(t *testing.T) {
	t.Parallel()
	y := `
database:
  url: postgres://relay@db:5432/app
schema: app
slot: app_slot
instance_id: pod-1
create_slot: false
start_lsn: 0/16B3748
streaming: {enabled: true, memory_limit: 32MiB, spill_dir: /tmp/spill}
delivery:
  max_attempts: 5
  backoff_min: 50ms
  backoff_max: 10s
  lanes: 8
  max_in_flight: 1000
  batch_size: 100
  handler_timeout: 5s
retention: 48h
http: {listen: "127.0.0.1:9100"}
readiness: {max_lag_bytes: 1GiB, standby_ready: true}
drain_timeout: 10s
log: {level: debug, format: console}
routes:
  orders:
    kafka: {topic: orders.v1}
  hooks:
    webhook:
      url: https://example.com/hook
      timeout: 3s
      headers: {Authorization: Bearer x}
  debug:
    stdout:
kafka:
  brokers: ["k1:9092", "k2:9092"]
  acks: -1
  compression: zstd
  linger: 10ms
  sasl: {mechanism: SCRAM-SHA-512, user: relay, password: s3cret}
  tls: {enable: true}
`
	c, err := config.Parse(strings.NewReader(y), "full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Schema != "app" || c.SlotName() != "app_slot" || c.CreateSlot || c.InstanceID != "pod-1" {
		t.Errorf("top level: %+v", c)
	}
	if c.StartLSN != 0x16B3748 {
		t.Errorf("start_lsn = %X", uint64(c.StartLSN))
	}
	if !c.Streaming.Enabled || c.Streaming.MemoryLimit != 32<<20 {
		t.Errorf("streaming: %+v", c.Streaming)
	}
	if c.Delivery.BackoffMin.D() != 50*time.Millisecond || c.Delivery.Lanes != 8 || c.Retention.D() != 48*time.Hour {
		t.Errorf("delivery: %+v", c.Delivery)
	}
	if c.Readiness.MaxLagBytes != 1<<30 || !c.Readiness.StandbyReady {
		t.Errorf("readiness: %+v", c.Readiness)
	}
	if got := c.Destinations(); strings.Join(got, ",") != "debug,hooks,orders" {
		t.Errorf("destinations = %v", got)
	}
	if c.Routes["debug"].Kind() != "stdout" || c.Routes["orders"].Kafka.Topic != "orders.v1" ||
		c.Routes["hooks"].Webhook.Headers["Authorization"] != "Bearer x" || c.Routes["hooks"].Webhook.Timeout.D() != 3*time.Second {
		t.Errorf("routes: %+v", c.Routes)
	}
	if len(c.Kafka.Brokers) != 2 || c.Kafka.Acks != "-1" || c.Kafka.SASL.Password != "s3cret" || !c.Kafka.TLS.Enable {
		t.Errorf("kafka: %+v", c.Kafka)
	}
}

func TestDefaultsAreValid(t *testing.T) {
	t.Parallel()
	c, err := config.Parse(strings.NewReader(base), "x")
	if err != nil {
		t.Fatal(err)
	}
	if c.Schema != "public" || !c.CreateSlot || c.Delivery.MaxAttempts != 10 || c.HTTP.Listen != ":9090" || c.Kafka.Acks != "all" {
		t.Errorf("defaults: %+v", c)
	}
	if err := c.ValidateRun(false); err == nil || !strings.Contains(err.Error(), "routes") {
		t.Errorf("ValidateRun without routes = %v, want an error naming routes", err)
	}
	if err := c.ValidateRun(true); err != nil {
		t.Errorf("ValidateRun(dev) = %v", err)
	}
}

func TestPrecedenceFlagsOverEnvOverFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte(base+"schema: from_file\nslot: file_slot\ndelivery: {lanes: 2, max_attempts: 3}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"PGOUTBOX_SCHEMA=from_env", "PGOUTBOX_DELIVERY_LANES=4", "PGOUTBOX_KAFKA_BROKERS=a:1, b:2", "PGOUTBOX_TEST_DATABASE_URL=ignored", "OTHER=x"}
	c, err := config.Load(config.Source{File: file, Env: env, Set: []string{"schema=from_flag", "routes.o.kafka.topic=t", "routes.s.stdout="}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Schema != "from_flag" {
		t.Errorf("schema = %q, want the flag's", c.Schema)
	}
	if c.Delivery.Lanes != 4 {
		t.Errorf("lanes = %d, want env's 4", c.Delivery.Lanes)
	}
	if c.Slot != "file_slot" || c.Delivery.MaxAttempts != 3 {
		t.Errorf("file values lost: slot %q attempts %d", c.Slot, c.Delivery.MaxAttempts)
	}
	if strings.Join(c.Kafka.Brokers, ",") != "a:1,b:2" {
		t.Errorf("brokers = %v", c.Kafka.Brokers)
	}
	if c.Routes["o"].Kafka.Topic != "t" || c.Routes["s"].Kind() != "stdout" {
		t.Errorf("routes = %+v", c.Routes)
	}
}

func TestLoadErrorsNameEnvAndFlag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  config.Source
		want []string
	}{
		{"env bad duration", config.Source{Env: []string{"PGOUTBOX_DATABASE_URL=postgres://x/y", "PGOUTBOX_DRAIN_TIMEOUT=10"}},
			[]string{"drain_timeout", "PGOUTBOX_DRAIN_TIMEOUT", "invalid duration"}},
		{"env unsafe acks", config.Source{Env: []string{"PGOUTBOX_DATABASE_URL=postgres://x/y", "PGOUTBOX_KAFKA_ACKS=1"}},
			[]string{"kafka.acks", "unsafe"}},
		{"flag unknown key", config.Source{Set: []string{"database.url=postgres://x/y", "delivery.retries=3"}},
			[]string{"delivery.retries", "unknown key"}},
		{"flag bad LSN", config.Source{Set: []string{"database.url=postgres://x/y", "start_lsn=42"}},
			[]string{"start_lsn", "invalid LSN", "flag"}},
		{"flag without =", config.Source{Set: []string{"schema"}}, []string{"key=value"}},
		{"missing file", config.Source{File: "/nonexistent/pgoutbox.yaml"}, []string{"config file"}},
		{"missing url file", config.Source{Set: []string{"database.url_file=/nonexistent/url"}}, []string{"database.url_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(tt.src)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSecretsFromFilesAndDSN(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	urlFile, pwFile := filepath.Join(dir, "url"), filepath.Join(dir, "pw")
	if err := os.WriteFile(urlFile, []byte("postgres://relay@db:5432/app?sslmode=disable\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte("p@ss/word\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(config.Source{Set: []string{"database.url_file=" + urlFile, "database.password_file=" + pwFile}})
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := c.DSN()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dsn, "relay:p%40ss%2Fword@db:5432") {
		t.Errorf("DSN = %q, want the password in it", dsn)
	}
	if r := config.RedactDSN(dsn); strings.Contains(r, "p%40ss") || !strings.Contains(r, "xxxxx") {
		t.Errorf("RedactDSN = %q", r)
	}

	kv := config.Default()
	kv.Database.URL = "host=db user=relay dbname=app"
	kv.Database.Password = "it's"
	dsn, _ = kv.DSN()
	if dsn != `host=db user=relay dbname=app password='it\'s'` {
		t.Errorf("keyword DSN = %q", dsn)
	}
	if r := config.RedactDSN(dsn); strings.Contains(r, "it") {
		t.Errorf("RedactDSN = %q", r)
	}
	if r := config.RedactDSN("postgres://u:secret@h/db?password=other"); strings.Contains(r, "secret") || strings.Contains(r, "other") {
		t.Errorf("RedactDSN = %q", r)
	}
}

func TestKeysAndEnvNames(t *testing.T) {
	t.Parallel()
	keys := strings.Join(config.Keys(), " ")
	for _, k := range []string{"database.url", "delivery.max_attempts", "kafka.sasl.password", "readiness.max_lag_bytes", "kafka.brokers"} {
		if !strings.Contains(keys, k) {
			t.Errorf("Keys() lacks %s", k)
		}
	}
	if strings.Contains(keys, "routes") {
		t.Error("Keys() lists routes, which is map-valued")
	}
	if got := config.EnvName("delivery.max_attempts"); got != "PGOUTBOX_DELIVERY_MAX_ATTEMPTS" {
		t.Errorf("EnvName = %s", got)
	}
}

func TestParseLSNAndByteSize(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		if _, err := config.ParseLSN(s); err != nil {
			t.Errorf("ParseLSN(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "16", "0x16/1", "1/2/3", "G/1", "123456789/1"} {
		if _, err := config.ParseLSN(s); err == nil {
			t.Errorf("ParseLSN(%q) accepted", s)
		}
	}
	sizes := map[string]int64{"0": 0, "1024": 1024, "64MiB": 64 << 20, "1 GB": 1e9, "10KiB": 10240, "5B": 5}
	for s, want := range sizes {
		if got, err := config.ParseByteSize(s); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
}
