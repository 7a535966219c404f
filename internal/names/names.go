// Package names owns the names pgoutbox derives and the limits it enforces on them, so that the
// library, the replication stream and the daemon accept exactly the same inputs: schema, slot and
// publication names, table names, the instance id (application_name), the per-message limits of
// Enqueue, the replay margin and the SQLSTATEs the code reacts to.
//
// Every function is pure and safe for concurrent use. Errors name the input and the limit; callers
// wrap them with their own sentinel (outbox.ErrInvalidSchema, replication.ErrInvalidConfig, ...).
package names

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// PostgreSQL and pgoutbox identifier limits.
const (
	// MaxIdentifierLen is PostgreSQL's identifier limit in bytes (NAMEDATALEN-1); longer names are
	// silently truncated by the server, so pgoutbox rejects them instead.
	MaxIdentifierLen = 63

	// Prefix starts the default slot name and the publication name: "pgoutbox_<schema>".
	Prefix = "pgoutbox_"
	// MaxSchemaLen is the longest schema name: "pgoutbox_<schema>" (slot and publication) must fit
	// MaxIdentifierLen. The table and index names pgoutbox creates do not depend on the schema name.
	MaxSchemaLen = MaxIdentifierLen - len(Prefix)

	// AppNamePrefix starts the application_name of the relay's connections: "pgoutbox-<instance id>".
	AppNamePrefix = "pgoutbox-"
	// MaxInstanceIDLen keeps application_name within MaxIdentifierLen (the server truncates it, and
	// the relay finds its own stale walsenders by that name).
	MaxInstanceIDLen = MaxIdentifierLen - len(AppNamePrefix)
)

// DefaultReplayMargin is how far a replay by time widens its range backwards for rows without a commit
// time (outbox.ReplayFilter.Margin 0, the default of pgoutbox replay --margin).
const DefaultReplayMargin = time.Hour

// The tables of an outbox schema.
const (
	OutboxTable     = "pkg_outbox"
	DeadLetterTable = "pkg_outbox_dead_letter"
	RelayTable      = "pkg_outbox_relay"
)

var (
	schemaRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	slotRE   = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
)

// ValidateSchema checks that schema is a plain identifier pgoutbox can derive its names from:
// non-empty, at most MaxSchemaLen bytes of letters, digits and underscores, not starting with a
// digit nor with the reserved prefix "pg_".
func ValidateSchema(schema string) error {
	switch {
	case schema == "":
		return fmt.Errorf("schema name is empty")
	case len(schema) > MaxSchemaLen:
		return fmt.Errorf("schema name %q is %d bytes, the limit is %d (%s<schema> names the slot and the publication, at most %d bytes)",
			Truncate(schema, 64), len(schema), MaxSchemaLen, Prefix, MaxIdentifierLen)
	case !schemaRE.MatchString(schema):
		return fmt.Errorf("schema name %q must match %s", Truncate(schema, 64), schemaRE)
	case strings.HasPrefix(strings.ToLower(schema), "pg_"):
		return fmt.Errorf("schema name %q uses the reserved prefix pg_", schema)
	}
	return nil
}

// Slot returns the default replication slot of schema: "pgoutbox_<schema>" in lower case (slot
// names allow only [a-z0-9_]).
func Slot(schema string) string { return strings.ToLower(Prefix + schema) }

// ValidateSlot checks a replication slot name against ^[a-z0-9_]{1,63}$: pglogrepl interpolates it
// into replication commands unquoted.
func ValidateSlot(slot string) error {
	if !slotRE.MatchString(slot) {
		return fmt.Errorf("slot name %q must match %s (1 to %d of a-z, 0-9, _)", Truncate(slot, 80), slotRE, MaxIdentifierLen)
	}
	return nil
}

// Publication returns the publication of schema: "pgoutbox_<schema>" (case kept; it is quoted).
func Publication(schema string) string { return Prefix + schema }

// ValidatePublication checks a publication name: 1 to MaxIdentifierLen bytes without NUL (it is
// always quoted).
func ValidatePublication(pub string) error {
	if pub == "" || len(pub) > MaxIdentifierLen || strings.ContainsRune(pub, 0) {
		return fmt.Errorf("publication name %q must be 1 to %d bytes without NUL", Truncate(pub, 80), MaxIdentifierLen)
	}
	return nil
}

// Table returns the quoted, schema-qualified name of table in schema, e.g. "app"."pkg_outbox".
func Table(schema, table string) string { return pgx.Identifier{schema, table}.Sanitize() }

// Truncate shortens s to n bytes plus an ellipsis, for error messages.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) { // never cut a character in two
		n--
	}
	return s[:n] + "…"
}
