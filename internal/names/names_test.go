package names_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

// The schema limit is the one the derived slot and publication names need, and no other.
func TestSchemaLimitFitsTheDerivedNames(t *testing.T) {
	t.Parallel()
	longest := "S" + strings.Repeat("x", names.MaxSchemaLen-1)
	if err := names.ValidateSchema(longest); err != nil {
		t.Fatalf("a %d-byte schema: %v", len(longest), err)
	}
	if err := names.ValidateSlot(names.Slot(longest)); err != nil {
		t.Errorf("default slot of the longest schema: %v", err)
	}
	if err := names.ValidatePublication(names.Publication(longest)); err != nil {
		t.Errorf("publication of the longest schema: %v", err)
	}
	if n := len(names.Slot(longest)); n != names.MaxIdentifierLen {
		t.Errorf("slot of the longest schema is %d bytes, want exactly %d (the limit wastes nothing)", n, names.MaxIdentifierLen)
	}
	err := names.ValidateSchema(longest + "x")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("limit is %d", names.MaxSchemaLen)) {
		t.Fatalf("a %d-byte schema: %v, want an error naming the limit", len(longest)+1, err)
	}
}

func TestValidateSchema(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		schema string
		ok     bool
	}{
		{"app", true}, {"Mixed_Case", true}, {"_x9", true},
		{"", false}, {"9app", false}, {"a;b", false}, {"a b", false}, {"pg_app", false}, {"PG_app", false}, {"ä", false},
	} {
		if err := names.ValidateSchema(tt.schema); (err == nil) != tt.ok {
			t.Errorf("ValidateSchema(%q) = %v, want ok=%v", tt.schema, err, tt.ok)
		}
	}
}

func TestInstanceID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 40) + ".example.internal.cluster.local" // 71 bytes (Linux allows 64)
	for _, tt := range []struct {
		host string
		pid  int
		want string // "" = only check validity
	}{
		{"web-1", 42, "web-1-42"},
		{"", 7, "unknown-7"},
		{"host with spaces\x00", 1, "host_with_spaces_-1"},
		{strings.Repeat("h", 64), 4194304, ""},
		{long, 4194304, ""},
		{"höst", 3, ""},
	} {
		got := names.InstanceID(tt.host, tt.pid)
		if err := names.ValidateInstanceID(got); err != nil {
			t.Errorf("InstanceID(%q, %d) = %q: %v", tt.host, tt.pid, got, err)
		}
		if tt.want != "" && got != tt.want {
			t.Errorf("InstanceID(%q, %d) = %q, want %q", tt.host, tt.pid, got, tt.want)
		}
		if !strings.HasSuffix(got, fmt.Sprintf("-%d", tt.pid)) {
			t.Errorf("InstanceID(%q, %d) = %q lost the pid", tt.host, tt.pid, got)
		}
	}
	// Two long host names with one prefix stay distinct.
	a, b := names.InstanceID(long+"a", 1), names.InstanceID(long+"b", 1)
	if a == b {
		t.Errorf("long host names sharing a prefix give the same id %q", a)
	}
	if err := names.ValidateInstanceID(names.DefaultInstanceID()); err != nil {
		t.Errorf("DefaultInstanceID: %v", err)
	}
	for _, bad := range []string{"", strings.Repeat("i", names.MaxInstanceIDLen+1), "a b", "é", "a\nb"} {
		if err := names.ValidateInstanceID(bad); err == nil {
			t.Errorf("ValidateInstanceID(%q) accepted it", bad)
		}
	}
	err := names.ValidateInstanceID(strings.Repeat("i", 60))
	if err == nil || !strings.Contains(err.Error(), "60 bytes, the limit is 54") {
		t.Errorf("long instance id: %v, want the length and the limit", err)
	}
}

func TestValidateRouteAndHeaderName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		route string
		ok    bool
	}{
		{"", true}, {"orders.v1", true}, {"ordres/é", true}, {strings.Repeat("r", 255), true},
		{strings.Repeat("r", 256), false}, {"a\tb", false}, {"a\x00b", false}, {"a\x7f", false}, {"a\u009b", false}, {"\xff", false},
	} {
		if err := names.ValidateRoute(tt.route); (err == nil) != tt.ok {
			t.Errorf("ValidateRoute(%q) = %v, want ok=%v", tt.route, err, tt.ok)
		}
	}
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"content-type", true}, {"X-Trace_ID.v2", true}, {"!#$%&'*+-.^_`|~", true},
		{"", false}, {"a b", false}, {"a:b", false}, {"a\r\nb", false}, {"é", false}, {"(x)", false}, {`"q"`, false},
	} {
		if err := names.ValidateHeaderName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateHeaderName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestSQLState(t *testing.T) {
	t.Parallel()
	wrap := func(code string) error { return fmt.Errorf("query: %w", &pgconn.PgError{Code: code}) }
	if !names.IsMissingRelation(wrap("42P01")) || !names.IsMissingRelation(wrap("3F000")) || names.IsMissingRelation(wrap("42703")) {
		t.Error("IsMissingRelation")
	}
	if !names.IsServerStopping(wrap("57P01")) || !names.IsServerStopping(wrap("57P03")) || names.IsServerStopping(wrap("57014")) {
		t.Error("IsServerStopping")
	}
	if !names.IsAuthError(wrap("28P01")) || !names.IsAuthError(wrap("28000")) || names.IsAuthError(wrap("42501")) {
		t.Error("IsAuthError")
	}
	if names.SQLState(fmt.Errorf("plain")) != "" || names.SQLState(wrap("42P01")) != "42P01" {
		t.Error("SQLState")
	}
}
