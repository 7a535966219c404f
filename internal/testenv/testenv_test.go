package testenv_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/internal/testenv"
)

// fakeTB records Skip and Fatal instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()            {}
func (f *fakeTB) Skip(args ...any)   { f.skipped = args[0].(string) }
func (f *fakeTB) Fatal(args ...any)  { f.failed = args[0].(string) }
func (f *fakeTB) Name() string       { return f.TB.Name() }
func (f *fakeTB) Cleanup(fn func())  { f.TB.Cleanup(fn) }
func (f *fakeTB) Setenv(k, v string) { f.TB.Setenv(k, v) }

func TestEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name, value, ci       string
		want, skipped, failed string
	}{
		{name: "set", value: " amqp://x/ ", want: "amqp://x/"},
		{name: "unset", skipped: "no Thing: PGOUTBOX_TEST_THING is unset; run `thing.sh up` to start one"},
		{name: "unset under CI", ci: "true", failed: "no Thing: PGOUTBOX_TEST_THING is unset; run `thing.sh up` to start one (CI=true: integration tests may not skip)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PGOUTBOX_TEST_THING", tc.value)
			t.Setenv("CI", tc.ci)
			f := &fakeTB{TB: t}
			got := testenv.Endpoint(f, "PGOUTBOX_TEST_THING", "Thing", "thing.sh up")
			if got != tc.want || f.skipped != tc.skipped || f.failed != tc.failed {
				t.Fatalf("got %q, skipped %q, failed %q; want %q, %q, %q", got, f.skipped, f.failed, tc.want, tc.skipped, tc.failed)
			}
		})
	}
}

func TestName(t *testing.T) {
	t.Parallel()
	unsafe := regexp.MustCompile(`[^a-zA-Z0-9_-]+`)
	a, b := testenv.Name(t, "_", unsafe), testenv.Name(t, "_", unsafe)
	if a == b {
		t.Fatalf("two names are both %q", a)
	}
	if !regexp.MustCompile(`^pgoutbox_TestName_[0-9a-f]{8}$`).MatchString(a) {
		t.Fatalf("name %q", a)
	}
	t.Run(strings.Repeat("x/", 80), func(t *testing.T) {
		n := testenv.Name(t, ".", unsafe)
		if unsafe.MatchString(strings.ReplaceAll(n, ".", "")) || len(n) > len("pgoutbox..")+100+8 {
			t.Fatalf("name %q: unsafe characters or over 100 bytes of test name", n)
		}
	})
}
