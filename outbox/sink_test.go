package outbox_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
)

func TestRetryAfterKeepsClassAndWait(t *testing.T) {
	base := errors.New("503")
	cases := []struct {
		name        string
		err         error
		wait        time.Duration
		unavailable bool
		permanent   bool
	}{
		{"plain", outbox.RetryAfter(base, 2*time.Second), 2 * time.Second, false, false},
		{"unavailable", outbox.RetryAfter(outbox.Unavailable(base), time.Second), time.Second, true, false},
		{"wrapped", fmt.Errorf("post: %w", outbox.RetryAfter(outbox.Unavailable(base), 3*time.Second)), 3 * time.Second, true, false},
		{"inside classified", outbox.Permanent(outbox.RetryAfter(base, 4*time.Second)), 4 * time.Second, false, true},
		{"joined takes the largest", errors.Join(outbox.RetryAfter(base, time.Second), outbox.RetryAfter(base, 5*time.Second)), 5 * time.Second, false, false},
		{"none", base, 0, false, false},
		{"zero wait is the error itself", outbox.RetryAfter(base, 0), 0, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := outbox.RetryAfterOf(c.err); got != c.wait {
				t.Errorf("RetryAfterOf = %v, want %v", got, c.wait)
			}
			if got := outbox.IsUnavailable(c.err); got != c.unavailable {
				t.Errorf("IsUnavailable = %v, want %v", got, c.unavailable)
			}
			if got := outbox.IsPermanent(c.err); got != c.permanent {
				t.Errorf("IsPermanent = %v, want %v", got, c.permanent)
			}
			if !errors.Is(c.err, base) {
				t.Error("the cause is lost")
			}
		})
	}
	if outbox.RetryAfter(nil, time.Second) != nil {
		t.Error("RetryAfter(nil) is not nil")
	}
}
