// Command pgoutbox is the pgoutbox daemon and its admin CLI: `run` streams the outbox slot and delivers
// messages to Kafka, webhooks or stdout with metrics, health endpoints and graceful shutdown; `migrate`,
// `roles`, `status`, `replay`, `dlq`, `skip` and `version` operate it. See docs/daemon.md.
//
// Exit codes (see exitCode): 0 success or clean shutdown; 1 unexpected error; 2 bad flags or
// configuration; 3 schema, publication or relay table missing (run `pgoutbox migrate`); 4 slot lost
// or invalidated (replay needed); 5 slot missing, unusable or position invalid; 6 database
// unreachable or authentication failed; 130 a second signal interrupted the drain. With several
// outboxes, run keeps running while one runs and exits when all have stopped (see process.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/replication"
)

// Exit codes. They are part of the CLI's contract (docs/daemon.md).
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitNotMigrated = 3
	exitSlotLost    = 4
	exitSlot        = 5
	exitDatabase    = 6
	exitInterrupted = 130
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Environ()))
}

// exitErr carries an exit code chosen where the error is understood best.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitErr{code: code, err: err}
}

func usageErr(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

// exitCode classifies err into the documented exit codes.
func exitCode(err error) int {
	var ee *exitErr
	var connErr *pgconn.ConnectError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, config.ErrInvalid), errors.Is(err, replication.ErrInvalidConfig), errors.Is(err, outbox.ErrInvalidSchema),
		errors.Is(err, replication.ErrUnsupportedServer):
		return exitUsage
	case errors.Is(err, replication.ErrSlotLost):
		return exitSlotLost
	case errors.Is(err, outbox.ErrNotMigrated), errors.Is(err, replication.ErrPublicationMissing),
		errors.Is(err, replication.ErrRelayTableMissing):
		return exitNotMigrated
	case errors.Is(err, replication.ErrSlotMissing), errors.Is(err, replication.ErrSlotMismatch),
		errors.Is(err, replication.ErrBehindConfirmed), errors.Is(err, replication.ErrDiverged):
		return exitSlot
	case errors.As(err, &connErr):
		return exitDatabase
	case names.IsAuthError(err) || names.SQLState(err) == pgerrcode.InvalidCatalogName:
		return exitDatabase
	case names.IsMissingRelation(err):
		return exitNotMigrated
	}
	return exitError
}

// app holds what every command shares: the streams, the environment and the global flags.
type app struct {
	stdout, stderr io.Writer
	env            []string

	configFile string
	set        []string
	// shortcuts for common keys, applied after --set
	databaseURL, schema, slot, logLevel, logFormat string
	// outbox names the outbox a command works on (required when the configuration has several)
	outbox string
}

func execute(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) int {
	a := &app{stdout: stdout, stderr: stderr, env: env}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if !errors.Is(err, errReported) {
		fmt.Fprintf(stderr, "pgoutbox: %v\n", err)
		if code == exitUsage && !errors.Is(err, config.ErrInvalid) {
			fmt.Fprintln(stderr, "Run 'pgoutbox --help' for usage.")
		}
	}
	return code
}

// errReported marks an error whose message was already written to stderr.
var errReported = errors.New("reported")

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "pgoutbox",
		Short: "Transactional outbox relay for PostgreSQL: streams committed messages from the WAL to Kafka, webhooks or stdout",
		Long: `pgoutbox relays messages that applications write into <schema>.pkg_outbox (with outbox.Enqueue, inside
their own transactions) from a logical replication slot to Kafka, webhooks or stdout, and moves the
slot forward only after the sink acknowledged.

Configuration: a YAML file (--config, or PGOUTBOX_CONFIG), PGOUTBOX_* environment variables and flags;
flags win over the environment, which wins over the file. Every key is listed in docs/daemon.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(exitUsage, err) })
	pf := root.PersistentFlags()
	defaultConfig := lookupEnv(a.env, "PGOUTBOX_CONFIG")
	pf.StringVarP(&a.configFile, "config", "c", defaultConfig, "YAML configuration file (env PGOUTBOX_CONFIG)")
	pf.StringArrayVar(&a.set, "set", nil, "set any configuration key, e.g. --set delivery.max_attempts=5 or --set routes.orders.kafka.topic=orders (repeatable)")
	pf.StringVar(&a.databaseURL, "database-url", "", "PostgreSQL connection URL (key database.url)")
	pf.StringVar(&a.schema, "schema", "", "schema holding the outbox tables (key schema)")
	pf.StringVar(&a.slot, "slot", "", "replication slot name (key slot)")
	pf.StringVar(&a.logLevel, "log-level", "", "debug, info, warn or error (key log.level)")
	pf.StringVar(&a.logFormat, "log-format", "", "json or console (key log.format)")
	pf.StringVar(&a.outbox, "outbox", "", "the outbox (a name from the outboxes list) to work on; required when the configuration has several; run: run only this one")

	root.AddCommand(a.runCmd(), a.migrateCmd(), a.rolesCmd(), a.statusCmd(), a.replayCmd(), a.dlqCmd(), a.skipCmd(), a.versionCmd(), a.probeCmd())
	return root
}

func lookupEnv(env []string, name string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// loadConfig loads the configuration from the file, the environment and the flags (extra are
// command-specific key=value settings, applied last).
func (a *app) loadConfig(extra ...string) (config.Config, error) {
	set := append([]string(nil), a.set...)
	for _, kv := range [][2]string{
		{"database.url", a.databaseURL}, {"schema", a.schema}, {"slot", a.slot},
		{"log.level", a.logLevel}, {"log.format", a.logFormat},
	} {
		if kv[1] != "" {
			set = append(set, kv[0]+"="+kv[1])
		}
	}
	set = append(set, extra...)
	return config.Load(config.Source{File: a.configFile, Env: a.env, Set: set})
}

// loadOutbox loads the configuration and returns the outbox --outbox names (or the only one).
func (a *app) loadOutbox(extra ...string) (config.Config, error) {
	cfg, err := a.loadConfig(extra...)
	if err != nil {
		return cfg, err
	}
	return cfg.Outbox(a.outbox)
}

// newLogger builds the process logger: JSON to stderr, or colourless console output in dev mode.
func newLogger(c config.Config, dev bool, stderr io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Log.Level)
	if err != nil {
		return nil, usageErr("log.level: %v", err)
	}
	var enc zapcore.Encoder
	if dev || c.Log.Format == "console" {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "ts"
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), level)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(stderr)))), nil
}
