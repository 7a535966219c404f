package nats_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/natstest"
	"github.com/pgoutbox/pgoutbox/outbox"
	natssink "github.com/pgoutbox/pgoutbox/sink/nats"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key into dir and returns their paths.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "natstest"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// A server that requires TLS: the sink connects with the configured CA (tls:// URL) and delivers; without
// the CA it refuses the server's certificate.
func TestTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t, t.TempDir())
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
