// Package tlsconfig builds a [tls.Config] from the TLS settings of a sink that names PEM files (the
// Kafka, NATS and RabbitMQ sinks' TLSConfig).
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files are a sink's TLS settings. Errors name the fields as the sinks' TLSConfig does (TLS.CAFile, …).
type Files struct {
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for mutual TLS.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
	// InsecureSkipVerify disables certificate checks. For tests only.
	InsecureSkipVerify bool
}

// Validate reports a certificate without its key or a key without its certificate.
func (f Files) Validate() error {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return errors.New("TLS.CertFile and TLS.KeyFile must be set together")
	}
	return nil
}

// Build reads the files and returns a TLS 1.2+ configuration that checks ServerName, or serverName
// when ServerName is empty.
func (f Files) Build(serverName string) (*tls.Config, error) {
	if f.ServerName != "" {
		serverName = f.ServerName
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, InsecureSkipVerify: f.InsecureSkipVerify} //nolint:gosec // opt-in, documented as test-only
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS.CAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS.CAFile %s holds no PEM certificate", f.CAFile)
		}
		tc.RootCAs = pool
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS.CertFile/KeyFile: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
