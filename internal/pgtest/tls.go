package pgtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TLSCluster is a private cluster that accepts nothing but TLS connections authenticated with
// scram-sha-256 (pg_hba.conf has only hostssl lines), with a self-signed certificate made for it.
// Its URL (and so NewDB's ConnString) carries the password and sslmode=verify-full.
type TLSCluster struct {
	*Cluster
	// User and Password authenticate the superuser.
	User, Password string
	// Host and Port are where it listens (127.0.0.1).
	Host string
	Port string
	// ServerName is a DNS name in the certificate ("localhost"; the certificate also holds 127.0.0.1).
	ServerName string
	// CAFile is the certificate in PEM (sslrootcert), and RootCAs holds it.
	CAFile  string
	RootCAs *x509.CertPool
}

// NewTLSCluster starts a private cluster that only accepts hostssl with scram-sha-256, or skips
// (fails under CI) when PostgreSQL binaries are missing.
func NewTLSCluster(t testing.TB) *TLSCluster {
	t.Helper()
	c := NewCluster(t)
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatalf("pgtest: cluster URL: %v", err)
	}
	tc := &TLSCluster{Cluster: c, User: "postgres", Password: "s3cret-" + RandomSuffix(), Host: u.Hostname(),
		Port: u.Port(), ServerName: "localhost"}
	certPEM, keyPEM := selfSigned(t, tc.ServerName)
	tc.CAFile = filepath.Join(t.TempDir(), "root.crt")
	if err := os.WriteFile(tc.CAFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tc.RootCAs = x509.NewCertPool()
	tc.RootCAs.AppendCertsFromPEM(certPEM)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatalf("pgtest: connect to the new cluster: %v", err)
	}
	for _, q := range []string{
		"ALTER SYSTEM SET ssl = on",
		"ALTER SYSTEM SET password_encryption = 'scram-sha-256'",
		"SET password_encryption = 'scram-sha-256'",
		"ALTER ROLE postgres PASSWORD '" + tc.Password + "'",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("pgtest: %s: %v", q, err)
		}
	}
	_ = conn.Close(ctx)
	// Read at the restart: from then on only TLS with scram-sha-256 gets in.
	data := filepath.Join(c.dir, "data")
	writeOwned(t, data, "server.crt", certPEM)
	writeOwned(t, data, "server.key", keyPEM)
	writeOwned(t, data, "pg_hba.conf", []byte("# pgtest TLS cluster: TLS and scram-sha-256 only\n"+
		"hostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n"))
	c.Restart(t, "fast")
	c.URL = tc.URLWithPassword("postgres")
	return tc
}

// URL returns a URL for database db with sslmode=verify-full and sslrootcert, without the password.
func (tc *TLSCluster) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(tc.User), Host: net.JoinHostPort(tc.Host, tc.Port), Path: "/" + db,
		RawQuery: url.Values{"sslmode": {"verify-full"}, "sslrootcert": {tc.CAFile}}.Encode()}
	return u.String()
}

// URLWithPassword is URL with the password in it.
func (tc *TLSCluster) URLWithPassword(db string) string {
	u, _ := url.Parse(tc.URL(db))
	u.User = url.UserPassword(tc.User, tc.Password)
	return u.String()
}

// selfSigned returns a self-signed ECDSA certificate for name, localhost and 127.0.0.1, and its key.
func selfSigned(t testing.TB, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"pgoutbox tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{name, "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// writeOwned writes name in dir with mode 0600, owned like dir (the server runs as the data
// directory's owner and refuses a key others can read).
func writeOwned(t testing.TB, dir, name string, b []byte) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatalf("pgtest: write %s: %v", p, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		if err := os.Chown(p, int(st.Uid), int(st.Gid)); err != nil {
			t.Fatalf("pgtest: chown %s: %v", p, err)
		}
	}
}
