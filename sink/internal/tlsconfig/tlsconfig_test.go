package tlsconfig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/internal/testenv"
	"github.com/pgoutbox/pgoutbox/sink/internal/tlsconfig"
)

func TestBuild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := testenv.SelfSigned(t, dir)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		files   tlsconfig.Files
		wantErr string
		wantSN  string
	}{
		{name: "system pool", wantSN: "host"},
		{name: "CA, client certificate and server name", files: tlsconfig.Files{CAFile: cert, CertFile: cert, KeyFile: key, ServerName: "other"}, wantSN: "other"},
		{name: "missing CA file", files: tlsconfig.Files{CAFile: filepath.Join(dir, "none.pem")}, wantErr: "TLS.CAFile: "},
		{name: "CA file without PEM", files: tlsconfig.Files{CAFile: garbage}, wantErr: "holds no PEM certificate"},
		{name: "key that is no key", files: tlsconfig.Files{CertFile: cert, KeyFile: garbage}, wantErr: "TLS.CertFile/KeyFile: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := tc.files.Build("host")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Build: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ServerName != tc.wantSN || c.MinVersion != 0x0303 || (tc.files.CAFile != "") != (c.RootCAs != nil) || (tc.files.CertFile != "") != (len(c.Certificates) == 1) {
				t.Fatalf("config: server name %q, min version %x, roots %v, %d certificates", c.ServerName, c.MinVersion, c.RootCAs != nil, len(c.Certificates))
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	if err := (tlsconfig.Files{CertFile: "c.pem"}).Validate(); err == nil {
		t.Fatal("a certificate without its key passed")
	}
	if err := (tlsconfig.Files{KeyFile: "k.pem"}).Validate(); err == nil {
		t.Fatal("a key without its certificate passed")
	}
	if err := (tlsconfig.Files{CertFile: "c.pem", KeyFile: "k.pem"}).Validate(); err != nil {
		t.Fatal(err)
	}
}
