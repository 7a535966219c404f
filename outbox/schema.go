package outbox

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/names"
	outboxsql "github.com/pgoutbox/pgoutbox/sql"
)

// validateSchema checks schema (internal/names.ValidateSchema) before any SQL is built from it: a plain
// identifier of at most 54 bytes, so that "pgoutbox_<schema>" fits PostgreSQL's 63-byte names.
func validateSchema(schema string) error {
	if err := names.ValidateSchema(schema); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSchema, err)
	}
	return nil
}

func sqlNames(schema string) outboxsql.Names {
	pub := names.Publication(schema)
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
	if err := validateSchema(schema); err != nil {
		return "", err
	}
	return outboxsql.Schema(sqlNames(schema))
}

// GetTeardownSQL returns the SQL that removes what GetSchemaSQL created (the schema itself stays), including
// the inactive replication slots recorded in the relay table.
func GetTeardownSQL(schema string) (string, error) {
	if err := validateSchema(schema); err != nil {
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

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func truncate(s string, n int) string { return names.Truncate(s, n) }
