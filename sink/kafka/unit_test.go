package kafka

import (
	"crypto/tls"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// Vectors from the Java client: org.apache.kafka.common.utils.Utils.murmur2 (kafka-clients 4.4.0).
func TestPartitionerMatchesJava(t *testing.T) {
	t.Parallel()
	for key, javaHash := range map[string]int32{
		"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
		"a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107, "order-42": 501153024, "ключ": 2122343024,
	} {
		sc, _ := DefaultConfig().withBrokers().saramaConfig()
		p := sc.Producer.Partitioner("t")
		for _, n := range []int32{1, 7, 12, math.MaxInt32} {
			got, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, n)
			if want := (javaHash & 0x7fffffff) % n; err != nil || got != want {
				t.Errorf("partition(%q, %d) = %d, %v; Java picks %d", key, n, got, err, want)
			}
		}
	}
}

func (c Config) withBrokers() Config { c.Brokers = []string{"127.0.0.1:9092"}; return c }

func TestSaramaSettings(t *testing.T) {
	t.Parallel()
	sc, err := DefaultConfig().withBrokers().saramaConfig()
	if err != nil {
		t.Fatal(err)
	}
	if sc.Producer.RequiredAcks != sarama.WaitForAll || !sc.Producer.Idempotent || sc.Net.MaxOpenRequests != 1 ||
		!sc.Producer.Return.Successes || !sc.Producer.Return.Errors || sc.Metadata.AllowAutoTopicCreation {
		t.Fatalf("unsafe producer settings: %+v", sc.Producer)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"Brokers", func(c *Config) { c.Brokers = nil }},
		{"Brokers", func(c *Config) { c.Brokers = []string{"nohost"} }},
		{"Acks", func(c *Config) { c.Acks = "1" }},
		{"Acks", func(c *Config) { c.Acks = "" }},
		{"Linger", func(c *Config) { c.Linger = -time.Millisecond }},
		{"ProduceTimeout", func(c *Config) { c.ProduceTimeout = 0 }},
		{"DialTimeout", func(c *Config) { c.DialTimeout = -1 }},
		{"TopicConfigTTL", func(c *Config) { c.TopicConfigTTL = 0 }},
		{"MaxMessageBytes", func(c *Config) { c.MaxMessageBytes = 0 }},
		{"BatchBytes", func(c *Config) { c.BatchBytes = -1 }},
		{"Retries", func(c *Config) { c.Retries = -1 }},
		{"Compression", func(c *Config) { c.Compression = "brotli" }},
		{"KafkaVersion", func(c *Config) { c.KafkaVersion = "0.10.2.0" }},
		{"SASL.Mechanism", func(c *Config) { c.SASL.Mechanism = "GSSAPI" }},
		{"SASL.User", func(c *Config) { c.SASL.Mechanism = "SCRAM-SHA-512" }},
		{"TLS.CertFile", func(c *Config) { c.TLS.CertFile = "x.pem" }},
		{`Topics["d"]: topic name "a b"`, func(c *Config) { c.Topics = map[string]string{"d": "a b"} }},
		{`AllowedTopics["d"][1]: pattern "a*b"`, func(c *Config) { c.AllowedTopics = map[string][]string{"d": {"ok", "a*b"}} }},
		{`AllowedTopics["d"] is empty`, func(c *Config) { c.AllowedTopics = map[string][]string{"d": {}} }},
		{`AllowedTopics["d"] is set but Topics["d"] is "t"`, func(c *Config) {
			c.Topics, c.AllowedTopics = map[string]string{"d": "t"}, map[string][]string{"d": {"t"}}
		}},
	} {
		c := DefaultConfig().withBrokers()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate = %v, want an error naming it", tc.field, err)
		}
	}
	if err := DefaultConfig().withBrokers().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]kind{
		sarama.ErrNotEnoughReplicas:          kindUnavailable,
		sarama.ErrLeaderNotAvailable:         kindUnavailable,
		sarama.ErrRequestTimedOut:            kindUnavailable,
		sarama.ErrOutOfBrokers:               kindUnavailable,
		sarama.ErrNotConnected:               kindUnavailable,
		sarama.ErrUnknownTopicOrPartition:    kindUnknownTopic,
		sarama.ErrMessageSizeTooLarge:        kindPermanent,
		sarama.ErrInvalidRecord:              kindPermanent,
		sarama.ConfigurationError("too big"): kindPermanent,
		sarama.ErrInvalidMessage:             kindRetry,
		sarama.KError(9999):                  kindRetry,
	} {
		if got := classify(err); got != want {
			t.Errorf("classify(%v) = %d, want %d", err, got, want)
		}
	}
}

// RFC 7677 section 3 example exchange.
func TestSCRAMSHA256RFC7677(t *testing.T) {
	t.Parallel()
	c := newSCRAMClient(sha256Hash)
	c.nonceForTesting = "rOprNGfwEbeRWgbNEkqO"
	if err := c.Begin("user", "pencil", ""); err != nil {
		t.Fatal(err)
	}
	first, _ := c.Step("")
	if first != "n,,n=user,r=rOprNGfwEbeRWgbNEkqO" {
		t.Fatalf("client-first = %q", first)
	}
	final, err := c.Step("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
	if err != nil {
		t.Fatal(err)
	}
	if want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="; final != want {
		t.Fatalf("client-final = %q, want %q", final, want)
	}
	if _, err := c.Step("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="); err != nil || !c.Done() {
		t.Fatalf("server-final: %v done=%v", err, c.Done())
	}
	c2 := newSCRAMClient(sha256Hash)
	c2.nonceForTesting = "rOprNGfwEbeRWgbNEkqO"
	_ = c2.Begin("user", "pencil", "")
	_, _ = c2.Step("")
	_, _ = c2.Step("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
	if _, err := c2.Step("v=AAAA"); err == nil {
		t.Fatal("a wrong server signature verified")
	}
}

// The broker TLS settings are read by the shared sink/internal/tlsconfig; errors keep the sink's prefix.
func TestTLSConfigBuild(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.Brokers = []string{"127.0.0.1:9092"}
	c.TLS = TLSConfig{Enable: true, ServerName: "kafka.internal"}
	sc, err := c.saramaConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !sc.Net.TLS.Enable || sc.Net.TLS.Config.ServerName != "kafka.internal" || sc.Net.TLS.Config.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLS = %v %+v, want enabled, TLS 1.2+, server name kafka.internal", sc.Net.TLS.Enable, sc.Net.TLS.Config)
	}
	c.TLS.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := c.saramaConfig(); err == nil || !strings.HasPrefix(err.Error(), "kafka: config: TLS.CAFile: ") {
		t.Errorf("missing CA file: %v, want it named with the sink's prefix", err)
	}
}
