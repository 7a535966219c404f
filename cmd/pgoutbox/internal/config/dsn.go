package config

import (
	"context"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DSN returns the database connection string with database.password (if set) put into it, so that
// both the pool and the replication connection use it.
func (c *Config) DSN() (string, error) {
	dsn := c.Database.URL
	if dsn == "" {
		return "", ErrNoDatabase
	}
	if c.Database.Password == "" {
		return dsn, nil
	}
	if isURL(dsn) {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", keyError("database.url", "not a valid URL: %v", redactErr(err))
		}
		user := ""
		if u.User != nil {
			user = u.User.Username()
		}
		u.User = url.UserPassword(user, c.Database.Password)
		return u.String(), nil
	}
	pw := strings.ReplaceAll(strings.ReplaceAll(c.Database.Password, `\`, `\\`), `'`, `\'`)
	return dsn + " password='" + pw + "'", nil
}

// Connect opens one connection (not a pool) for dsn. The DSN is parsed as the pool parses it, so that
// pool settings in it (pool_max_conns, ...) configure nothing here instead of reaching the server as
// unknown run-time parameters.
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err // pgx's parse errors never include the password
	}
	return pgx.ConnectConfig(ctx, pcfg.ConnConfig)
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactDSN returns dsn with any password replaced by "xxxxx", for logs and errors.
func RedactDSN(dsn string) string {
	if isURL(dsn) {
		u, err := url.Parse(dsn)
		if err != nil {
			return "<unparsable database URL>"
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// redactErr keeps url.Parse errors from echoing the URL (and so a password).
func redactErr(err error) string {
	if ue, ok := err.(*url.Error); ok {
		return ue.Op + ": " + ue.Err.Error()
	}
	return "parse error"
}
