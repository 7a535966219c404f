package sql

import (
	"bytes"
	"fmt"
)

// RoleNames are the roles the roles template creates, already quoted by the caller.
type RoleNames struct {
	Relay        string // quoted identifier of the relay role (LOGIN REPLICATION)
	RelayLiteral string // the relay role name as a SQL string literal
	App          string // quoted identifier of the application role (INSERT on the outbox only)
	AppLiteral   string // the application role name as a SQL string literal
}

// Roles renders the idempotent SQL that creates the least-privilege relay and application roles
// and grants them what they need on the outbox schema n.Schema.
func Roles(n Names, r RoleNames) (string, error) {
	var buf bytes.Buffer
	data := struct {
		Names
		RoleNames
		Version string
	}{n, r, Version}
	if err := templates.ExecuteTemplate(&buf, "roles.sql.tmpl", data); err != nil {
		return "", fmt.Errorf("sql: render roles.sql.tmpl: %w", err)
	}
	return buf.String(), nil
}
