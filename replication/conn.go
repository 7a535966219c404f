package replication

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// connConfigs derives the two connections of a stream from one connection string: a regular one
// for SQL (slot lookups, the relay record) and a replication=database one for the stream.
type connConfigs struct {
	sql      *pgx.ConnConfig
	repl     *pgconn.Config
	redacted string
}

func newConnConfigs(connString, appName string) (*connConfigs, error) {
	sqlCfg, err := pgx.ParseConfig(connString)
	if err != nil {
		// pgx's parse errors never include the password.
		return nil, fmt.Errorf("%w: connection string: %w", ErrInvalidConfig, err)
	}
	delete(sqlCfg.RuntimeParams, "replication")
	sqlCfg.RuntimeParams["application_name"] = appName
	if sqlCfg.ConnectTimeout == 0 {
		sqlCfg.ConnectTimeout = connectTimeout
	}
	replCfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %w", ErrInvalidConfig, err)
	}
	replCfg.RuntimeParams["replication"] = "database"
	replCfg.RuntimeParams["application_name"] = appName
	if replCfg.ConnectTimeout == 0 {
		replCfg.ConnectTimeout = connectTimeout
	}
	return &connConfigs{sql: sqlCfg, repl: replCfg, redacted: redact(replCfg)}, nil
}

// redact describes a connection without its password, for logs and errors.
func redact(c *pgconn.Config) string {
	return "postgres://" + c.User + "@" + c.Host + ":" + strconv.Itoa(int(c.Port)) + "/" + c.Database
}

func (cc *connConfigs) connectSQL(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cc.sql.Copy())
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cc.redacted, err)
	}
	return conn, nil
}

func (cc *connConfigs) connectReplication(ctx context.Context, log *zap.Logger) (*pgconn.PgConn, error) {
	cfg := cc.repl.Copy()
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		log.Warn("server notice on the replication connection", zap.String("severity", n.Severity),
			zap.String("code", n.Code), zap.String("message", n.Message), zap.String("detail", n.Detail))
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect (replication) to %s: %w", cc.redacted, err)
	}
	return conn, nil
}
