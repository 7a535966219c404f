package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
)

// A valid Standard Webhooks secret (the reference libraries' test vector) and its base64 part.
const (
	hookSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	hookSecretB64 = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWebhookRouteKeys(t *testing.T) {
	t.Parallel()
	file := writeFile(t, hookSecret+"\n")
	y := base + `routes:
  billing:
    webhook:
      url: https://billing.internal/hooks?tenant=a
      append_route: true
      timeout: 5s
      headers: {Authorization: Bearer op, X-Tenant: acme}
      signing_secret_file: ` + file + `
  audit:
    webhook: {url: "https://audit.internal/in", signing_secret_env: AUDIT_HOOK_SECRET}
`
	p := writeFile(t, y)
	c, err := config.Load(config.Source{File: p, Env: []string{"AUDIT_HOOK_SECRET=" + hookSecret, "PATH=/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	b := c.Routes["billing"].Webhook
	if !b.AppendRoute || b.SigningSecret != hookSecret || b.Headers["Authorization"] != "Bearer op" || b.Timeout.D().String() != "5s" {
		t.Errorf("billing: %+v", *b)
	}
	if a := c.Routes["audit"].Webhook; a.AppendRoute || a.SigningSecret != hookSecret {
		t.Errorf("audit: append_route %v, secret set %v", a.AppendRoute, a.SigningSecret != "")
	}
	// --set works for the new keys too.
	c, err = config.Load(config.Source{Env: []string{"S=" + hookSecret}, Set: []string{"database.url=postgres://u@h/db",
		"routes.h.webhook.url=http://x/y", "routes.h.webhook.append_route=true", "routes.h.webhook.signing_secret_env=S"}})
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Routes["h"].Webhook; !h.AppendRoute || h.SigningSecret != hookSecret {
		t.Errorf("--set: %+v", *h)
	}
}

func TestWebhookRouteErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	short := writeFile(t, "whsec_c2hvcnQ=")
	empty := writeFile(t, "\n")
	route := func(extra string) string {
		return base + "routes:\n  h:\n    webhook:\n      url: https://x/hooks\n" + extra
	}
	for _, tc := range []struct {
		name string
		yaml string
		env  []string
		want []string
	}{
		{"secret without prefix", route("      signing_secret_env: S\n"), []string{"S=" + hookSecretB64},
			[]string{"routes.h.webhook.signing_secret_env", "whsec_"}},
		{"secret too short", route("      signing_secret_file: " + short + "\n"), nil,
			[]string{"routes.h.webhook.signing_secret_file", "5 bytes"}},
		{"secret file missing", route("      signing_secret_file: /nonexistent/secret\n"), nil,
			[]string{"routes.h.webhook.signing_secret_file", "no such file"}},
		{"secret file empty", route("      signing_secret_file: " + empty + "\n"), nil,
			[]string{"routes.h.webhook.signing_secret_file", "empty"}},
		{"secret env unset", route("      signing_secret_env: NOPE_NOT_SET\n"), nil,
			[]string{"routes.h.webhook.signing_secret_env", "NOPE_NOT_SET", "not set"}},
		{"secret env bad name", route("      signing_secret_env: \"A-B\"\n"), nil,
			[]string{"routes.h.webhook.signing_secret_env", "not an environment variable name"}},
		{"both secret sources", route("      signing_secret_env: S\n      signing_secret_file: " + short + "\n"), []string{"S=" + hookSecret},
			[]string{"routes.h.webhook.signing_secret_env", "only one"}},
		{"header Host", route("      headers: {Host: other}\n"), nil, []string{"routes.h.webhook.headers.Host", "hop-by-hop"}},
		{"header sink's own", route("      headers: {X-Pgoutbox-Id: x}\n"), nil, []string{"routes.h.webhook.headers.X-Pgoutbox-Id", "sink"}},
		{"header bad name", route("      headers: {\"Bad Name\": x}\n"), nil, []string{"routes.h.webhook.headers.Bad Name", "token"}},
		{"header CRLF", route("      headers: {X-A: \"a\\r\\nInjected: 1\"}\n"), nil, []string{"routes.h.webhook.headers.X-A", "control characters"}},
		{"header twice", route("      headers: {X-A: a, x-a: b}\n"), nil, []string{"routes.h.webhook.headers", "case-insensitive"}},
		{"timeout over handler timeout", route("      timeout: 30s\n"), nil,
			[]string{"routes.h.webhook.timeout", "delivery.handler_timeout"}},
		{"default timeout over handler timeout", route("") + "delivery: {handler_timeout: 5s}\n", nil,
			[]string{"routes.h.webhook.timeout", "10s (the default)", "delivery.handler_timeout (5s)"}},
		{"fragment", base + "routes:\n  h:\n    webhook: {url: \"https://x/hooks#frag\"}\n", nil, []string{"routes.h.webhook.url", "fragment"}},
		{"bad append_route", route("      append_route: sometimes\n"), nil, []string{"routes.h.webhook.append_route", "invalid boolean"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(config.Source{File: writeFile(t, tc.yaml), Env: tc.env})
			if err == nil {
				t.Fatalf("no error for:\n%s", tc.yaml)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{hookSecretB64, "c2hvcnQ", "Injected"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a secret or header value", err)
				}
			}
		})
	}
}
