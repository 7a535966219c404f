package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/replication"
	outboxsql "github.com/pgoutbox/pgoutbox/sql"
)

// adminCtx is the context of a one-shot command: cancelled by SIGINT/SIGTERM.
func adminCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
}

// withPool loads the configuration, connects and runs f.
func (a *app) withPool(ctx context.Context, f func(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) error) error {
	cfg, err := a.loadOutbox()
	if err != nil {
		return err
	}
	dsn, err := cfg.DSN()
	if err != nil {
		return err
	}
	ctx, cancel := adminCtx(ctx)
	defer cancel()
	pool, err := openPool(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	return f(ctx, cfg, pool)
}

func (a *app) migrateCmd() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create the outbox tables and publication in the schema (run as the schema owner)",
		Long: `migrate applies the idempotent pgoutbox schema: <schema>.pkg_outbox, pkg_outbox_dead_letter,
pkg_outbox_relay and the publication pgoutbox_<schema>. Run it as the owner of the schema, not as the
relay role. With --dry-run it prints the SQL instead (to put into your own migrations).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dryRun {
				cfg, err := a.loadConfigNoDB()
				if err != nil {
					return err
				}
				q, err := outbox.GetSchemaSQL(cfg.Schema)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(a.stdout, strings.TrimRight(q, "\n"))
				return err
			}
			return a.withPool(cmd.Context(), func(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) error {
				if err := outbox.Migrate(ctx, pool, cfg.Schema); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "schema %q migrated (tables pkg_outbox, pkg_outbox_dead_letter, pkg_outbox_relay; publication %s)\n",
					cfg.Schema, names.Publication(cfg.Schema))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the SQL, do not connect")
	return cmd
}

// loadConfigNoDB loads the outbox for commands that do not connect: database.url may be missing.
func (a *app) loadConfigNoDB() (config.Config, error) {
	cfg, err := a.loadOutbox()
	if err != nil && cfg.Database.URL == "" && strings.Contains(err.Error(), "database.url: required") {
		// Re-validate with a placeholder URL so that every other key is still checked.
		cfg, err = a.loadOutbox("database.url=postgres://placeholder/placeholder")
	}
	return cfg, err
}

var roleNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (a *app) rolesCmd() *cobra.Command {
	var dryRun bool
	var relayRole, appRole string
	cmd := &cobra.Command{
		Use:   "roles",
		Short: "Create the least-privilege relay (LOGIN REPLICATION) and application (INSERT only) roles",
		Long: `roles creates, idempotently, a relay role (LOGIN REPLICATION, no superuser; reads the outbox, writes
dead letters and the slot record, prunes delivered rows) and an application role (INSERT on the outbox
only), and grants them what they need on the schema. Run it as a superuser after migrate. Passwords are
not set: use ALTER ROLE ... PASSWORD. With --dry-run it prints the SQL.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for flag, v := range map[string]string{"--relay-role": relayRole, "--app-role": appRole} {
				if !roleNameRE.MatchString(v) {
					return usageErr("%s %q: must match %s", flag, v, roleNameRE)
				}
			}
			if relayRole == appRole {
				return usageErr("--relay-role and --app-role must differ")
			}
			cfg, err := a.loadConfigNoDB()
			if err != nil {
				return err
			}
			q, err := rolesSQL(cfg.Schema, relayRole, appRole)
			if err != nil {
				return err
			}
			if dryRun {
				_, err = fmt.Fprintln(a.stdout, strings.TrimRight(q, "\n"))
				return err
			}
			return a.withPool(cmd.Context(), func(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) error {
				if _, err := pool.Exec(ctx, q); err != nil {
					return fmt.Errorf("create roles: %w", err)
				}
				fmt.Fprintf(a.stdout, "roles %s (relay) and %s (app) ready on schema %q; set their passwords with ALTER ROLE ... PASSWORD\n",
					relayRole, appRole, cfg.Schema)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the SQL, do not connect")
	cmd.Flags().StringVar(&relayRole, "relay-role", "pgoutbox_relay", "name of the relay role")
	cmd.Flags().StringVar(&appRole, "app-role", "pgoutbox_app", "name of the application role")
	return cmd
}

func rolesSQL(schema, relayRole, appRole string) (string, error) {
	if err := names.ValidateSchema(schema); err != nil {
		return "", fmt.Errorf("%w: %w", outbox.ErrInvalidSchema, err)
	}
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	pub := names.Publication(schema)
	return outboxsql.Roles(outboxsql.Names{
		Schema:             pgx.Identifier{schema}.Sanitize(),
		Publication:        pgx.Identifier{pub}.Sanitize(),
		PublicationLiteral: lit(pub),
		RelayTableLiteral:  lit(pgx.Identifier{schema, "pkg_outbox_relay"}.Sanitize()),
	}, outboxsql.RoleNames{
		Relay: pgx.Identifier{relayRole}.Sanitize(), RelayLiteral: lit(relayRole),
		App: pgx.Identifier{appRole}.Sanitize(), AppLiteral: lit(appRole),
	})
}

func (a *app) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the slot (confirmed LSN, lag, wal_status, active instance), its relay record and the dead-letter depth",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withPool(cmd.Context(), func(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) error {
				st, err := observe.QuerySlot(ctx, pool, cfg.Schema, cfg.SlotName())
				if errors.Is(err, observe.ErrNoDeadLetterTable) {
					return withCode(exitNotMigrated, fmt.Errorf("%w: schema %q has no pgoutbox tables: run `pgoutbox migrate`", outbox.ErrNotMigrated, cfg.Schema))
				}
				if err != nil {
					return err
				}
				out := statusOutput{Outbox: cfg.Name, Schema: cfg.Schema, Publication: names.Publication(cfg.Schema), SlotStatus: st,
					Routes: describeRoutes(cfg)}
				if asJSON {
					enc := json.NewEncoder(a.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(out)
				}
				printStatus(a.stdout, out)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

type statusOutput struct {
	Outbox      string `json:"outbox"`
	Schema      string `json:"schema"`
	Publication string `json:"publication"`
	observe.SlotStatus
	Routes []routeInfo `json:"routes"` // where each configured destination's records go, and why
}

func printStatus(w io.Writer, s statusOutput) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("outbox", s.Outbox)
	row("schema", s.Schema)
	row("publication", s.Publication)
	row("slot", s.Slot)
	if !s.Exists {
		row("slot exists", "no (created on the first `pgoutbox run` unless create_slot is false)")
	} else {
		active := "no"
		if s.Active {
			active = fmt.Sprintf("yes (pid %d, %s)", s.ActivePID, s.ActiveApp)
		}
		row("active", active)
		row("wal_status", s.WALStatus)
		row("confirmed_flush_lsn", s.Confirmed)
		row("restart_lsn", s.Restart)
		row("current_wal_lsn", s.CurrentWAL)
		row("lag_bytes", s.LagBytes)
		row("retained_wal_bytes", s.RetainedBytes)
	}
	if r := s.Record; r != nil {
		row("relay record", "created "+r.CreatedAt.UTC().Format(time.RFC3339)+" at "+r.CreatedLSN)
		row("  confirmed_lsn", orDash(r.ConfirmedLSN))
		ct := "-"
		if r.ConfirmedCommitTime != nil {
			ct = r.ConfirmedCommitTime.UTC().Format(time.RFC3339Nano)
		}
		row("  confirmed_commit_time", ct)
		row("  active_instance", orDash(r.ActiveInstance))
		if r.SnapshotPending {
			row("  initial snapshot", "pending: rows committed before the slot's creation are still being delivered")
		} else {
			row("  initial snapshot", "complete (or not taken)")
		}
		row("  parked keys", parkedLine(r.Parked, r.UpdatedAt))
		row("  updated_at", r.UpdatedAt.UTC().Format(time.RFC3339))
	} else {
		row("relay record", "none")
	}
	row("dead_letters", s.DeadLetters)
	if len(s.Routes) == 0 {
		row("routes", "none configured (`run` needs one per destination, or --dev)")
	}
	for _, r := range s.Routes {
		row("route "+r.Destination, r.Rule)
	}
	_ = tw.Flush()
}

// parkedLine describes the parked keys of the relay's last report.
func parkedLine(p observe.Parked, reported time.Time) string {
	if p.Keys == 0 || p.Since == nil {
		return "none"
	}
	return fmt.Sprintf("%d (%d messages held back behind failed ones; the oldest parked since %s, %s before this report; the slot waits at %s, retaining %d bytes of WAL)",
		p.Keys, p.Messages, p.Since.UTC().Format(time.RFC3339), reported.Sub(*p.Since).Round(time.Second), p.LSN, p.WALBytes)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) replayCmd() *cobra.Command {
	var ids []string
	var since, until, dest string
	var margin time.Duration
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Deliver retained outbox rows again (same ids), by id and/or commit-time range",
		Long: `replay inserts copies of retained outbox rows (same id, destination, key, payload and headers) so that
the relay delivers them again; consumers dedupe on the message id and see duplicates only. Select rows with
--id (repeatable) and/or --since/--until (RFC3339, both inclusive), optionally narrowed by --destination.
The range is on commit time when the server runs with track_commit_timestamp=on (widened by 1s). Otherwise
the commit time is unknown and rows are matched by created_at (their transaction's start) from --since
minus --margin (default 1h, 0 for none) up to --until: a transaction that began before --since and
committed after it is replayed if it ran shorter than the margin, one that began before --until is
included even if it committed later. Both runs print how many rows the margin added.
Rows older than the retention may have been pruned; rows committed after the relay's confirmed position
never are. Messages written with the LogicalMessage transport (logical_messages: true) are not retained
anywhere and cannot be replayed. --dry-run only counts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := outbox.ReplayFilter{IDs: ids, Destination: outbox.Destination(dest), Margin: margin}
			if margin == 0 {
				f.Margin = -1 // --margin 0: none
			}
			var err error
			if f.From, err = parseTimeFlag("--since", since); err != nil {
				return err
			}
			if f.To, err = parseTimeFlag("--until", until); err != nil {
				return err
			}
			if len(ids) == 0 && f.From.IsZero() && f.To.IsZero() {
				return usageErr("replay: give --id, --since or --until (replaying everything must be asked for with a range)")
			}
			if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
				return usageErr("replay: --since %s is not before --until %s", since, until)
			}
			if margin < 0 {
				return usageErr("replay: --margin %s: must not be negative (0 for none)", margin)
			}
			return a.withPool(cmd.Context(), func(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) error {
				res, err := outbox.Replay(ctx, pool, cfg.Schema, f, dryRun)
				if err != nil {
					return err
				}
				if dryRun {
					fmt.Fprintf(a.stdout, "dry run: %d message(s) would be replayed%s\n", res.Rows, replayNote(f, res, margin))
				} else {
					fmt.Fprintf(a.stdout, "replayed %d message(s)%s: the relay delivers them again with their ids\n", res.Rows, replayNote(f, res, margin))
				}
				if cfg.LogicalMessages {
					fmt.Fprintln(a.stdout, logicalReplayNote)
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&ids, "id", nil, "message id to replay (repeatable)")
	fl.StringVar(&since, "since", "", "replay rows committed at or after this RFC3339 time")
	fl.StringVar(&until, "until", "", "replay rows committed at or before this RFC3339 time")
	fl.DurationVar(&margin, "margin", names.DefaultReplayMargin, "without commit timestamps, also replay rows created this long before --since (0 for none)")
	fl.StringVar(&dest, "destination", "", "only this destination")
	fl.BoolVar(&dryRun, "dry-run", false, "count, do not replay")
	return cmd
}

// replayNote says how a time-range replay matched rows and how many the margin added.
func replayNote(f outbox.ReplayFilter, res outbox.ReplayResult, margin time.Duration) string {
	if f.From.IsZero() && f.To.IsZero() {
		return ""
	}
	if res.ByCommitTime {
		return fmt.Sprintf(" (by commit time, track_commit_timestamp is on; %d of them only through the 1s slack "+
			"or, for rows committed before it was on, the --margin %s)", res.MarginRows, margin)
	}
	return fmt.Sprintf(" (by created_at, track_commit_timestamp is off; %d of them only through the --margin %s: "+
		"consumers dedupe on the message id)", res.MarginRows, margin)
}

func parseTimeFlag(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, usageErr("%s %q: not an RFC3339 time (e.g. 2024-05-01T12:00:00Z)", flag, v)
	}
	return t, nil
}

func (a *app) dlqCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, requeue or purge dead letters",
	}
	var lf filterFlags
	var limit int
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first (all of them unless filtered)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(lf.ids) == 0 && lf.dest == "" {
				lf.all = true
			}
			f, err := filter(lf, "list")
			if err != nil {
				return err
			}
			f.Limit = limit
			return a.withPool(cmd.Context(), func(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) error {
				dls, err := outbox.ListDeadLetters(ctx, pool, cfg.Schema, f)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(a.stdout).Encode(deadLetterJSON(dls))
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tDESTINATION\tKEY\tTYPE\tATTEMPTS\tDEAD-LETTERED\tERROR")
				for _, d := range dls {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Destination, orDash(d.Key), orDash(d.Type), d.Attempts,
						d.DeadLetteredAt.UTC().Format(time.RFC3339), oneLine(d.Error, 120))
				}
				return tw.Flush()
			})
		},
	}
	addFilter(list, &lf)
	list.Flags().IntVar(&limit, "limit", 100, "most rows to show")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	requeue := a.dlqActionCommand("requeue", "requeued",
		"Move dead letters back into the outbox (same ids): the relay delivers them again", outbox.RequeueDeadLetters)
	purge := a.dlqActionCommand("purge", "purged", "Delete dead letters for good", outbox.PurgeDeadLetters)

	cmd.AddCommand(list, requeue, purge)
	return cmd
}

// filterFlags select dead letters: --id (repeatable), --destination or --all.
type filterFlags struct {
	ids  []string
	dest string
	all  bool
}

func addFilter(c *cobra.Command, f *filterFlags) {
	c.Flags().StringArrayVar(&f.ids, "id", nil, "dead letter (message) id (repeatable)")
	c.Flags().StringVar(&f.dest, "destination", "", "every dead letter of this destination")
	c.Flags().BoolVar(&f.all, "all", false, "every dead letter")
}

func filter(f filterFlags, verb string) (outbox.DeadLetterFilter, error) {
	if len(f.ids) == 0 && f.dest == "" && !f.all {
		return outbox.DeadLetterFilter{}, usageErr("dlq %s: give --id, --destination or --all", verb)
	}
	if f.all && (len(f.ids) > 0 || f.dest != "") {
		return outbox.DeadLetterFilter{}, usageErr("dlq %s: --all cannot be combined with --id or --destination", verb)
	}
	return outbox.DeadLetterFilter{IDs: f.ids, Destination: outbox.Destination(f.dest), All: f.all}, nil
}

// dlqActionCommand builds `dlq requeue` and `dlq purge`: a filter (ids, destination or --all), a dry
// run that counts, and the action.
func (a *app) dlqActionCommand(verb, done, short string,
	action func(context.Context, outbox.Execer, string, outbox.DeadLetterFilter) (int64, error)) *cobra.Command {
	var ff filterFlags
	var dry bool
	c := &cobra.Command{
		Use:   verb,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := filter(ff, verb)
			if err != nil {
				return err
			}
			return a.withPool(cmd.Context(), func(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) error {
				if dry {
					n, err := countDeadLetters(ctx, pool, cfg.Schema, f)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "dry run: %d dead letter(s) would be %s\n", n, done)
					return nil
				}
				n, err := action(ctx, pool, cfg.Schema, f)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s %d dead letter(s)\n", done, n)
				return nil
			})
		},
	}
	addFilter(c, &ff)
	c.Flags().BoolVar(&dry, "dry-run", false, "count, do not "+verb)
	return c
}

func countDeadLetters(ctx context.Context, pool *pgxpool.Pool, schema string, f outbox.DeadLetterFilter) (int, error) {
	f.Limit = 1 << 30
	dls, err := outbox.ListDeadLetters(ctx, pool, schema, f)
	return len(dls), err
}

type deadLetterOut struct {
	ID             string            `json:"id"`
	Destination    string            `json:"destination"`
	Route          string            `json:"route,omitempty"`
	Key            string            `json:"key,omitempty"`
	Type           string            `json:"type,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	PayloadBytes   int               `json:"payload_bytes"`
	Error          string            `json:"error"`
	Attempts       int               `json:"attempts"`
	CommitLSN      string            `json:"commit_lsn"`
	CreatedAt      time.Time         `json:"created_at"`
	FirstFailedAt  time.Time         `json:"first_failed_at"`
	LastFailedAt   time.Time         `json:"last_failed_at"`
	DeadLetteredAt time.Time         `json:"dead_lettered_at"`
}

func deadLetterJSON(dls []outbox.DeadLetter) []deadLetterOut {
	out := make([]deadLetterOut, 0, len(dls))
	for _, d := range dls {
		out = append(out, deadLetterOut{ID: d.ID, Destination: string(d.Destination), Route: d.Route, Key: d.Key, Type: d.Type,
			Headers: d.Headers, PayloadBytes: len(d.Payload), Error: d.Error, Attempts: d.Attempts, CommitLSN: d.CommitLSN,
			CreatedAt: d.CreatedAt, FirstFailedAt: d.FirstFailedAt, LastFailedAt: d.LastFailedAt, DeadLetteredAt: d.DeadLetteredAt})
	}
	return out
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (a *app) skipCmd() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "skip --to <LSN>",
		Short: "Move the slot forward to an LSN, skipping (never delivering) what lies before it",
		Long: `skip moves the replication slot forward to the given LSN with pg_replication_slot_advance: messages
committed before it are never delivered by the relay (they stay in the outbox table and can be replayed).
The relay must be stopped. A slot cannot move backwards: replay older messages instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return usageErr("skip: --to <LSN> is required (e.g. --to 0/16B3748)")
			}
			lsn, err := config.ParseLSN(to)
			if err != nil {
				return usageErr("skip: --to: %v", err)
			}
			cfg, err := a.loadOutbox()
			if err != nil {
				return err
			}
			dsn, err := cfg.DSN()
			if err != nil {
				return err
			}
			ctx, cancel := adminCtx(cmd.Context())
			defer cancel()
			conn, err := config.Connect(ctx, dsn)
			if err != nil {
				return withCode(exitDatabase, fmt.Errorf("connect to PostgreSQL: %w", err))
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if err := replication.AdvanceSlot(ctx, conn, cfg.SlotName(), lsn); err != nil {
				return err
			}
			st, err := observe.QuerySlot(ctx, conn, cfg.Schema, cfg.SlotName())
			if err != nil && !errors.Is(err, observe.ErrNoDeadLetterTable) {
				return err
			}
			fmt.Fprintf(a.stdout, "slot %s moved to %s (confirmed_flush_lsn now %s)\n", cfg.SlotName(), lsn, st.Confirmed)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "target LSN, e.g. 0/16B3748")
	return cmd
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			rev := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						rev = " " + s.Value
					}
				}
			}
			_, err := fmt.Fprintf(a.stdout, "pgoutbox %s%s %s %s/%s\n", version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
