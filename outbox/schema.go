package outbox

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/names"
	outboxsql "github.com/pgoutbox/pgoutbox/sql"
)

// MaxSchemaNameLen is the longest schema name accepted: the slot and publication names derived from it,
// "pgoutbox_<schema>", must fit PostgreSQL's 63-byte identifier limit.
const MaxSchemaNameLen = names.MaxSchemaLen

// ValidateSchemaName checks that schema is a plain identifier pgoutbox can derive its names from:
// non-empty, at most MaxSchemaNameLen bytes, letters, digits and underscores, not starting with a digit
// and not with the reserved prefix "pg_". It runs before any SQL is built.
func ValidateSchemaName(schema string) error {
	if err := names.ValidateSchema(schema); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSchema, err)
	}
	return nil
}

// PublicationName returns the name of the publication created for schema: "pgoutbox_<schema>".
func PublicationName(schema string) string { return names.Publication(schema) }

// DefaultSlotName returns the replication slot name the relay uses for schema unless told otherwise:
// "pgoutbox_<schema>" in lower case (slot names allow only [a-z0-9_]).
func DefaultSlotName(schema string) string { return names.Slot(schema) }

// TableName returns the quoted, schema-qualified name of the outbox table.
func TableName(schema string) string { return names.Table(schema, names.OutboxTable) }

func sqlNames(schema string) outboxsql.Names {
	pub := PublicationName(schema)
	return outboxsql.Names{
		Schema:             pgx.Identifier{schema}.Sanitize(),
		Publication:        pgx.Identifier{pub}.Sanitize(),
		PublicationLiteral: quoteLiteral(pub),
		RelayTableLiteral:  quoteLiteral(names.Table(schema, names.RelayTable)),
	}
}

// GetSchemaSQL returns the SQL that creates the outbox schema in schema: the outbox, dead-letter and relay
// tables and the publication. Running it again is a no-op, also inside a migration tool's transaction
// (for example a goose migration). Run it as the owner of the schema.
func GetSchemaSQL(schema string) (string, error) {
	if err := ValidateSchemaName(schema); err != nil {
		return "", err
	}
	return outboxsql.Schema(sqlNames(schema))
}

// GetTeardownSQL returns the SQL that removes what GetSchemaSQL created (the schema itself stays), including
// the inactive replication slots recorded in the relay table.
func GetTeardownSQL(schema string) (string, error) {
	if err := ValidateSchemaName(schema); err != nil {
		return "", err
	}
	return outboxsql.Teardown(sqlNames(schema))
}

// Migrate applies GetSchemaSQL(schema) on conn in one implicit transaction. It is idempotent.
func Migrate(ctx context.Context, conn Execer, schema string) error {
	q, err := GetSchemaSQL(schema)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("outbox: migrate schema %q: %w", schema, err)
	}
	return nil
}

// Teardown applies GetTeardownSQL(schema) on conn.
func Teardown(ctx context.Context, conn Execer, schema string) error {
	q, err := GetTeardownSQL(schema)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("outbox: tear down schema %q: %w", schema, err)
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func truncate(s string, n int) string { return names.Truncate(s, n) }
