package main

import (
	"fmt"
	"testing"

	"github.com/pgoutbox/pgoutbox/replication"
)

// logical_messages: true on a server older than PostgreSQL 14 is a configuration problem: exit 2.
func TestExitCodeUnsupportedServer(t *testing.T) {
	t.Parallel()
	if code := exitCode(fmt.Errorf("outbox: %w", replication.ErrUnsupportedServer)); code != exitUsage {
		t.Fatalf("exit code %d, want %d", code, exitUsage)
	}
}
