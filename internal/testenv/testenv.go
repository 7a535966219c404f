// Package testenv holds the rules shared by the packages that give tests a real server
// ([github.com/pgoutbox/pgoutbox/internal/natstest], [github.com/pgoutbox/pgoutbox/internal/rabbitmqtest]):
// an integration test whose server is not configured skips with a message saying how to start one,
// except under CI=true, where that skip is a failure ([Endpoint], [SkipOrFail]); and names of
// streams, exchanges and queues unique to a test run ([Name]).
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// Endpoint returns the value of the environment variable env, trimmed, or skips t (fails it under
// CI=true) saying that there is no server (what names it) and how to start one (start).
func Endpoint(t testing.TB, env, what, start string) string {
	t.Helper()
	if v := strings.TrimSpace(os.Getenv(env)); v != "" {
		return v
	}
	SkipOrFail(t, fmt.Sprintf("no %s: %s is unset; run `%s` to start one", what, env, start))
	return ""
}

// SkipOrFail skips t with msg, or fails it when running under CI=true, where integration tests may
// not skip.
func SkipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: integration tests may not skip)")
		return
	}
	t.Skip(msg)
}

// Name returns "pgoutbox" sep t.Name() sep 8 random hex digits: a name unique to this test run. The
// runs of characters of t.Name() that unsafe matches become "_", and it is cut to 100 bytes.
func Name(t testing.TB, sep string, unsafe *regexp.Regexp) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := unsafe.ReplaceAllString(t.Name(), "_")
	if len(name) > 100 {
		name = name[:100]
	}
	return "pgoutbox" + sep + name + sep + hex.EncodeToString(b[:])
}
