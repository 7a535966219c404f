// Package sql holds the pgoutbox schema as SQL templates, embedded with go:embed.
//
// Most callers use outbox.GetSchemaSQL and outbox.Migrate, which validate the schema name and
// render these templates; this package only renders already-validated, already-quoted names.
package sql

import (
	"bytes"
	"embed"
	"fmt"
	"text/template"
)

// Version identifies the schema layout these templates create (v2: pkg_outbox_relay.snapshot_pending;
// v3: pkg_outbox_relay.parked_*).
const Version = "v3"

//go:embed *.sql.tmpl
var files embed.FS

var templates = template.Must(template.New("").Option("missingkey=error").ParseFS(files, "*.sql.tmpl"))

// Names are the identifiers a template needs, already quoted for SQL by the caller.
type Names struct {
	Schema             string // quoted schema identifier, e.g. "app"
	Publication        string // quoted publication identifier
	PublicationLiteral string // the publication name as a SQL string literal
	RelayTableLiteral  string // '<schema>.pkg_outbox_relay' as a SQL string literal (quoted identifiers inside)
}

// Schema renders the idempotent schema SQL.
func Schema(n Names) (string, error) { return render("schema.sql.tmpl", n) }

// Teardown renders the SQL that removes what Schema created.
func Teardown(n Names) (string, error) { return render("teardown.sql.tmpl", n) }

func render(name string, n Names) (string, error) {
	var buf bytes.Buffer
	data := struct {
		Names
		Version string
	}{n, Version}
	if err := templates.ExecuteTemplate(&buf, name, data); err != nil {
		return "", fmt.Errorf("sql: render %s: %w", name, err)
	}
	return buf.String(), nil
}
