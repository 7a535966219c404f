package replication

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestConnectionsKeepTheGivenConfig: both connections of a stream carry the hooks and run-time
// parameters of the configuration they were made from (OnNotice, AfterConnect, BeforeConnect,
// search_path), with the stream's own application_name set over whatever the hook chose and
// replication=database on the replication connection only.
func TestConnectionsKeepTheGivenConfig(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(db.ConnString)
	if err != nil {
		t.Fatal(err)
	}
	var notices, afterConnect, beforeConnect atomic.Int64
	cfg.RuntimeParams["search_path"] = "given_path"
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if n.Message == "hello" {
			notices.Add(1)
		}
	}
	cfg.AfterConnect = func(context.Context, *pgconn.PgConn) error { afterConnect.Add(1); return nil }
	hook := func(_ context.Context, c *pgx.ConnConfig) error {
		beforeConnect.Add(1)
		c.RuntimeParams["application_name"] = "chosen-by-the-hook"
		return nil
	}
	cc := newConnConfigs(cfg, "pgoutbox-conntest", hook)

	sqlConn, err := cc.connectSQL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sqlConn.Close(ctx)
	var app, path string
	if err := sqlConn.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('search_path')").Scan(&app, &path); err != nil {
		t.Fatal(err)
	}
	if app != "pgoutbox-conntest" || path != "given_path" {
		t.Errorf("regular connection: application_name %q, search_path %q", app, path)
	}
	if _, err := sqlConn.Exec(ctx, `DO $$BEGIN RAISE NOTICE 'hello'; END$$`); err != nil {
		t.Fatal(err)
	}

	repl, err := cc.connectReplication(ctx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(ctx)
	if repl.ParameterStatus("application_name") != "pgoutbox-conntest" {
		t.Errorf("replication connection: application_name %q", repl.ParameterStatus("application_name"))
	}
	res, err := repl.Exec(ctx, `SELECT current_setting('search_path'); DO $$BEGIN RAISE NOTICE 'hello'; END$$`).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res[0].Rows[0][0]); got != "given_path" {
		t.Errorf("replication connection: search_path %q", got)
	}
	if _, err := pglogrepl.IdentifySystem(ctx, repl); err != nil {
		t.Errorf("not a replication connection: %v", err)
	}
	if notices.Load() != 2 || afterConnect.Load() != 2 || beforeConnect.Load() != 2 {
		t.Errorf("hooks: OnNotice %d, AfterConnect %d, BeforeConnect %d times; want 2 each (one per connection)",
			notices.Load(), afterConnect.Load(), beforeConnect.Load())
	}
	if _, ok := cfg.RuntimeParams["replication"]; ok || cfg.RuntimeParams["application_name"] == "pgoutbox-conntest" {
		t.Error("the caller's configuration was modified")
	}
}
