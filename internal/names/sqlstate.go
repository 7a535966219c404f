package names

import (
	"errors"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// SQLState returns the SQLSTATE of err (a *pgconn.PgError anywhere in its chain), or "".
func SQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// IsMissingRelation reports whether err says a table or its schema does not exist (undefined_table,
// invalid_schema_name): the outbox schema was not migrated.
func IsMissingRelation(err error) bool {
	switch SQLState(err) {
	case pgerrcode.UndefinedTable, pgerrcode.InvalidSchemaName:
		return true
	}
	return false
}

// IsServerStopping reports the SQLSTATEs of a server that terminates sessions or refuses new ones
// (admin_shutdown, crash_shutdown, cannot_connect_now).
func IsServerStopping(err error) bool {
	switch SQLState(err) {
	case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow:
		return true
	}
	return false
}

// IsAuthError reports an authentication failure (SQLSTATE class 28: invalid authorization).
func IsAuthError(err error) bool {
	return pgerrcode.IsInvalidAuthorizationSpecification(SQLState(err))
}
