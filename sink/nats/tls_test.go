package nats_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/natstest"
	"github.com/pgoutbox/pgoutbox/internal/testenv"
	"github.com/pgoutbox/pgoutbox/outbox"
	natssink "github.com/pgoutbox/pgoutbox/sink/nats"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// A server that requires TLS: the sink connects with the configured CA (tls:// URL) and delivers; without
// the CA it refuses the server's certificate.
func TestTLS(t *testing.T) {
	certFile, keyFile := testenv.SelfSigned(t, t.TempDir())
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.Start(t, func(o *server.Options) {
		o.TLS, o.TLSConfig = true, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	_, port, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(srv.URL(), "nats://"), "tls://"), ":")
	url := "tls://127.0.0.1:" + port
	_, err = natssink.New(func() natssink.Config {
		c := natssink.DefaultConfig()
		c.URLs, c.Subjects = []string{url}, map[string]string{"sinktest": "tls.one"}
		return c
	}())
	if !outbox.IsUnavailable(err) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("New without the CA: %v, want unavailable naming the certificate", err)
	}
	s := newLocal(t, url, func(c *natssink.Config) {
		c.Subjects = map[string]string{"sinktest": "tls.one"}
		c.TLS.CAFile = certFile
	})
	nc, err := nats.Connect(url, nats.RootCAs(certFile))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: "TLS", Subjects: []string{"tls.one"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx(t), []outbox.Record{sinktest.Record("a", 0)}); err != nil {
		t.Fatalf("Send over TLS: %v", err)
	}
}
