package config

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// envNameRE is what signing_secret_env may name.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// resolveWebhookSecrets reads each webhook route's signing secret from signing_secret_file or from
// the variable signing_secret_env names (looked up in environ). Errors name the key, never the secret.
func (c *Config) resolveWebhookSecrets(environ []string) error {
	for _, dest := range c.Destinations() {
		w := c.Routes[dest].Webhook
		if w == nil || w.SigningSecret != "" {
			continue
		}
		key := "routes." + dest + ".webhook."
		switch {
		case w.SigningSecretFile != "" && w.SigningSecretEnv != "":
			return keyError(key+"signing_secret_env", "set only one of signing_secret_file and signing_secret_env")
		case w.SigningSecretFile != "":
			b, err := os.ReadFile(w.SigningSecretFile)
			if err != nil {
				return fmt.Errorf("%w: %ssigning_secret_file: %w", ErrInvalid, key, err)
			}
			if w.SigningSecret = strings.TrimSpace(string(b)); w.SigningSecret == "" {
				return keyError(key+"signing_secret_file", "%s is empty", w.SigningSecretFile)
			}
		case w.SigningSecretEnv != "":
			if !envNameRE.MatchString(w.SigningSecretEnv) {
				return keyError(key+"signing_secret_env", "%q is not an environment variable name", w.SigningSecretEnv)
			}
			if w.SigningSecret = strings.TrimSpace(lookupEnv(environ, w.SigningSecretEnv)); w.SigningSecret == "" {
				return keyError(key+"signing_secret_env", "the environment variable %s is not set or empty", w.SigningSecretEnv)
			}
		}
	}
	return nil
}

func lookupEnv(environ []string, name string) string {
	v := ""
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val // the last one wins, as in os.Getenv
		}
	}
	return v
}

// validateWebhook checks one webhook route; key is "routes.<dest>.webhook". Errors never contain a
// header value or the signing secret.
func validateWebhook(key string, w *WebhookRoute, handlerTimeout Duration) []error {
	var errs []error
	bad := func(k, format string, args ...any) { errs = append(errs, keyError(key+"."+k, format, args...)) }
	u, err := url.Parse(w.URL)
	switch {
	case w.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		bad("url", "%q is not an absolute http(s) URL", redactURL(w.URL))
	case u.Fragment != "":
		bad("url", "%q has a #fragment, which is never sent", redactURL(w.URL))
	}
	timeout := webhook.DefaultConfig().Timeout
	switch {
	case w.Timeout < 0:
		bad("timeout", "must not be negative")
	case w.Timeout > 0:
		timeout = w.Timeout.D()
	}
	if w.Timeout >= 0 && timeout >= handlerTimeout.D() {
		// A request that cannot finish within the relay's bound on a Send would be cut short forever.
		def := ""
		if w.Timeout == 0 {
			def = " (the default)"
		}
		bad("timeout", "%s%s must be shorter than delivery.handler_timeout (%s), which bounds a whole send",
			timeout, def, handlerTimeout.D())
	}
	if w.Concurrency < 0 {
		bad("concurrency", "must not be negative")
	}
	names := make([]string, 0, len(w.Headers))
	for name := range w.Headers {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[string]string{}
	for _, name := range names {
		if err := webhook.ValidateHeader(name, w.Headers[name]); err != nil {
			bad("headers."+name, "%v", err)
		}
		canon := http.CanonicalHeaderKey(name)
		if other, ok := seen[canon]; ok {
			bad("headers."+name, "the same header as headers.%s (names are case-insensitive)", other)
		}
		seen[canon] = name
	}
	if w.SigningSecret != "" {
		origin := "signing_secret_file"
		if w.SigningSecretEnv != "" {
			origin = "signing_secret_env"
		}
		if err := webhook.ValidateSigningSecret(w.SigningSecret); err != nil {
			bad(origin, "%v", err)
		}
	}
	return errs
}
