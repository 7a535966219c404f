package replication

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// connConfigs derives the two connections of a stream from one parsed configuration: a regular one
// for SQL (slot lookups, the relay record, the snapshot) and a replication=database one for the
// stream. Every connection the stream opens goes through connectSQL or connectReplication, so TLS,
// password, dialer and pgconn hooks of the configuration reach all of them.
type connConfigs struct {
	base          *pgx.ConnConfig
	appName       string
	beforeConnect func(context.Context, *pgx.ConnConfig) error
	redacted      string
}

func newConnConfigs(base *pgx.ConnConfig, appName string, beforeConnect func(context.Context, *pgx.ConnConfig) error) *connConfigs {
	base = base.Copy()
	delete(base.RuntimeParams, "replication")
	if base.ConnectTimeout == 0 {
		base.ConnectTimeout = connectTimeout
	}
	return &connConfigs{base: base, appName: appName, beforeConnect: beforeConnect, redacted: redact(&base.Config)}
}

// redact describes a connection without its password, for logs and errors: every host of a
// multi-host connection string, in order (the TLS fallbacks of one host name it once).
func redact(c *pgconn.Config) string {
	hosts := []string{c.Host + ":" + strconv.Itoa(int(c.Port))}
	for _, f := range c.Fallbacks {
		if h := f.Host + ":" + strconv.Itoa(int(f.Port)); !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return "postgres://" + c.User + "@" + strings.Join(hosts, ",") + "/" + c.Database
}

// config returns a copy of the base configuration after the BeforeConnect hook, with the stream's
// application_name (set last: the stream finds its own stale walsenders by it).
func (cc *connConfigs) config(ctx context.Context) (*pgx.ConnConfig, error) {
	cfg := cc.base.Copy()
	if cc.beforeConnect != nil {
		if err := cc.beforeConnect(ctx, cfg); err != nil {
			return nil, fmt.Errorf("before connect to %s: %w", cc.redacted, err)
		}
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	delete(cfg.RuntimeParams, "replication")
	cfg.RuntimeParams["application_name"] = cc.appName
	return cfg, nil
}

func (cc *connConfigs) connectSQL(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := cc.config(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cc.redacted, err)
	}
	return conn, nil
}

func (cc *connConfigs) connectReplication(ctx context.Context, log *zap.Logger) (*pgconn.PgConn, error) {
	c, err := cc.config(ctx)
	if err != nil {
		return nil, err
	}
	cfg := c.Config.Copy()
	cfg.RuntimeParams["replication"] = "database"
	own := cfg.OnNotice
	cfg.OnNotice = func(pc *pgconn.PgConn, n *pgconn.Notice) {
		log.Warn("server notice on the replication connection", zap.String("severity", n.Severity),
			zap.String("code", n.Code), zap.String("message", n.Message), zap.String("detail", n.Detail))
		if own != nil {
			own(pc, n)
		}
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect (replication) to %s: %w", cc.redacted, err)
	}
	return conn, nil
}
