package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/replication"
)

type runFlags struct {
	dev          bool
	httpListen   string
	instanceID   string
	drainTimeout string
	routes       []string
	kafkaBrokers string
}

func (a *app) runCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the relay: stream the slot and deliver messages, serving /metrics, /healthz and /readyz",
		Long: `run streams the outbox's replication slot and delivers each message to the sink of its destination
(routes), moving the slot forward only after the sink acknowledged. A second instance on the same slot
waits as a standby and takes over when the active one goes away.

SIGTERM or SIGINT stops reading the WAL, drains the messages in flight (up to drain_timeout), confirms
the final position and exits 0; a second signal exits at once with code 130.

With an outboxes list in the configuration, run runs every outbox (each its own relay, slot and sinks;
one failing never stops the others; --outbox NAME runs one alone): see docs/daemon.md.

With --dev, destinations without a route are printed to stdout as JSON lines and logs are human-readable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.run(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.dev, "dev", false, "development mode: print destinations without a route to stdout, console logs")
	fl.StringVar(&f.httpListen, "http-listen", "", "address of the metrics and health server (key http.listen, default :9090)")
	fl.StringVar(&f.instanceID, "instance-id", "", "name of this instance, stable across restarts (key instance_id, default host-pid)")
	fl.StringVar(&f.drainTimeout, "drain-timeout", "", "how long a shutdown waits for messages in flight (key drain_timeout, default 30s)")
	fl.StringArrayVar(&f.routes, "route", nil, "route a destination: DEST=stdout, DEST=kafka[:TOPIC] or DEST=webhook:URL (repeatable)")
	fl.StringVar(&f.kafkaBrokers, "kafka-brokers", "", "comma-separated Kafka brokers (key kafka.brokers)")
	return cmd
}

// routeSettings turns --route flags into configuration settings.
func routeSettings(routes []string) ([]string, error) {
	var out []string
	for _, r := range routes {
		dest, spec, ok := splitRoute(r)
		if !ok {
			return nil, usageErr("--route %q: want DEST=stdout, DEST=kafka[:TOPIC] or DEST=webhook:URL", r)
		}
		kind, arg, _ := cutColon(spec)
		switch kind {
		case "stdout":
			out = append(out, "routes."+dest+".stdout=")
		case "kafka":
			out = append(out, "routes."+dest+".kafka.topic="+arg)
		case "webhook":
			if arg == "" {
				return nil, usageErr("--route %q: webhook needs a URL: DEST=webhook:https://...", r)
			}
			out = append(out, "routes."+dest+".webhook.url="+arg)
		default:
			return nil, usageErr("--route %q: unknown sink %q (stdout, kafka or webhook)", r, kind)
		}
	}
	return out, nil
}

func splitRoute(s string) (dest, spec string, ok bool) {
	for i := range len(s) {
		if s[i] == '=' {
			return s[:i], s[i+1:], i > 0 && i < len(s)-1
		}
	}
	return "", "", false
}

func cutColon(s string) (before, after string, found bool) {
	for i := range len(s) {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// daemon runs one outbox of a `pgoutbox run`: its configuration and what it opened (its own pool,
// slot, relay and sinks). process.go runs every outbox of the configuration.
type daemon struct {
	a       *app
	cfg     config.Config
	dev     bool
	multi   bool // one of several outboxes: see run
	out     io.Writer
	log     *zap.Logger
	metrics *observe.Metrics
	probe   *observe.Probe
	pool    *pgxpool.Pool
	sinks   *sinkSet
}

func (a *app) run(ctx context.Context, f runFlags) error {
	cfg, err := a.runConfig(f)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, f.dev, a.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	// The first signal starts a graceful stop; a second one exits at once.
	sigCtx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	p := newProcess(a, cfg, f.dev, log)
	// Metrics and health come up first, so that a slow start is visible.
	stopHTTP, err := p.serveHTTP(ctx)
	if err != nil {
		return err
	}
	defer stopHTTP()
	return p.runAll(ctx, sigCtx, stopSignals)
}

// relayFailure is the failure of a started (or starting) relay, as opposed to one of what comes
// before it (the pool, start_lsn, the sinks).
type relayFailure struct{ err error }

func (f relayFailure) Error() string { return f.err.Error() }
func (f relayFailure) Unwrap() error { return f.err }

// run runs the outbox until a signal drains it (nil) or it fails (the error, reported). One of several
// outboxes that fails with an unexpected error or cannot reach its database is started again after a
// backoff, as a supervisor would restart a daemon of its own, without stopping the others; a failure
// that needs an operator (exit codes 2 to 5) stops it for good.
func (d *daemon) run(ctx, sigCtx context.Context) error {
	defer func() {
		if d.sinks != nil {
			d.sinks.close(d.log)
		}
	}()
	wait := time.Second
	for {
		err := d.runOnce(ctx, sigCtx)
		var rf relayFailure
		isRelay := errors.As(err, &rf)
		switch code := exitCode(err); {
		case err == nil:
			return nil
		case sigCtx.Err() != nil && !isRelay:
			return nil // interrupted while starting: nothing to drain
		case d.multi && (code == exitError || code == exitDatabase):
			d.log.Warn("outbox stopped: starting it again", zap.Duration("wait", wait), zap.Int("exit_code", code), zap.Error(err))
			d.probe.SetRetrying(err.Error())
			d.metrics.SetState("backoff")
			select {
			case <-sigCtx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, 30*time.Second)
		case isRelay || d.multi:
			return d.a.fatal(d, rf.err, err)
		default:
			return err
		}
	}
}

// runOnce opens the pool, builds the sinks (the first time), starts the relay and serves it until a
// signal drains it or it fails.
func (d *daemon) runOnce(ctx, sigCtx context.Context) error {
	cfg, log := d.cfg, d.log
	dsn, err := cfg.DSN()
	if err != nil {
		return err
	}
	log.Info("connecting to PostgreSQL", zap.String("database", config.RedactDSN(dsn)), zap.String("schema", cfg.Schema),
		zap.String("slot", cfg.SlotName()))
	d.probe.SetState("connecting")
	if d.pool, err = openPool(sigCtx, dsn); err != nil {
		return err
	}
	defer d.pool.Close()

	if cfg.StartLSN != 0 {
		if err := advanceToStartLSN(sigCtx, dsn, cfg, log); err != nil {
			return err
		}
	}
	if d.sinks == nil {
		if d.sinks, err = buildSinks(sigCtx, d.pool, cfg, d.dev, d.out, log, d.probe); err != nil {
			return err
		}
		d.metrics.InitDestinations(d.sinks.destinations())
		d.sinks.exportWebhookStats(d.metrics)
		d.sinks.exportKafkaStats(d.metrics, cfg.Kafka.ExactlyOnce)
	}

	// The relay outlives the signal context: a signal must drain it through Stop, not cut it off.
	relayCtx, cancelRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRelay()
	relay, err := d.startRelay(sigCtx, relayCtx, cancelRelay)
	if relay == nil {
		return err
	}
	return d.serve(ctx, sigCtx, relayCtx, relay)
}

// runConfig loads the configuration with run's flags over it and checks what run needs.
func (a *app) runConfig(f runFlags) (config.Config, error) {
	extra, err := routeSettings(f.routes)
	if err != nil {
		return config.Config{}, err
	}
	for _, kv := range [][2]string{{"http.listen", f.httpListen}, {"instance_id", f.instanceID},
		{"drain_timeout", f.drainTimeout}, {"kafka.brokers", f.kafkaBrokers}} {
		if kv[1] != "" {
			extra = append(extra, kv[0]+"="+kv[1])
		}
	}
	cfg, err := a.loadConfig(extra...)
	if err != nil {
		return cfg, err
	}
	if a.outbox != "" { // run only this one
		o, err := cfg.Outbox(a.outbox)
		if err != nil {
			return cfg, err
		}
		cfg.Outboxes = []config.Config{o}
	}
	var errs []error
	for _, o := range cfg.Outboxes {
		if err := o.ValidateRun(f.dev); err != nil && len(cfg.Outboxes) > 1 {
			errs = append(errs, fmt.Errorf("outbox %s: %w", o.Name, err))
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	return cfg, errors.Join(errs...)
}

// serveHTTP sets up the registry and serves the metrics and the outboxes' health on http.listen; stop
// shuts the server down.
func (p *process) serveHTTP(ctx context.Context) (stop func(), err error) {
	ln, err := net.Listen("tcp", p.cfg.HTTP.Listen)
	if err != nil {
		return nil, usageErr("http.listen %q: %v", p.cfg.HTTP.Listen, err)
	}
	srv := &http.Server{Handler: observe.Handler(p.reg, &p.health), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("http server failed", zap.Error(err))
		}
	}()
	p.log.Info("http server listening", zap.String("addr", ln.Addr().String()),
		zap.Strings("paths", []string{"/metrics", "/healthz", "/readyz"}), zap.Strings("outboxes", config.Names(p.cfg.Outboxes)))
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

// relayOptions turns the configuration and the sinks into the relay's options.
func (d *daemon) relayOptions() []outbox.Option {
	cfg := d.cfg
	opts := []outbox.Option{
		outbox.WithSlotName(cfg.SlotName()),
		outbox.WithCreateSlot(cfg.CreateSlot),
		outbox.WithInitialSnapshot(cfg.Snapshot),
		outbox.WithStatusInterval(cfg.Replication.StatusInterval.D()),
		outbox.WithReadTimeout(cfg.Replication.ReadTimeout.D()),
		outbox.WithMaxAttempts(cfg.Delivery.MaxAttempts),
		outbox.WithRetryBackoff(cfg.Delivery.BackoffMin.D(), cfg.Delivery.BackoffMax.D()),
		outbox.WithLanes(cfg.Delivery.Lanes),
		outbox.WithMaxInFlight(cfg.Delivery.MaxInFlight),
		outbox.WithMaxParkedPerKey(cfg.Delivery.MaxParkedPerKey),
		outbox.WithMaxParked(cfg.Delivery.MaxParked),
		outbox.WithBatchSize(cfg.Delivery.BatchSize),
		outbox.WithHandlerTimeout(cfg.Delivery.HandlerTimeout.D()),
		outbox.WithRetention(cfg.Retention.D()),
		outbox.WithStreaming(cfg.Streaming.Enabled),
		outbox.WithFailover(cfg.Replication.Failover),
		outbox.WithLogger(d.log),
		outbox.WithObserver(d.metrics),
	}
	if cfg.Streaming.MemoryLimit > 0 {
		opts = append(opts, outbox.WithStreamMemoryLimit(int(cfg.Streaming.MemoryLimit)))
	}
	if cfg.LogicalMessages {
		opts = append(opts, outbox.WithLogicalMessages())
	}
	if cfg.Streaming.SpillDir != "" {
		opts = append(opts, outbox.WithSpillDir(cfg.Streaming.SpillDir))
	}
	if cfg.InstanceID != "" {
		opts = append(opts, outbox.WithInstanceID(cfg.InstanceID))
	}
	for dest, s := range d.sinks.byDest {
		opts = append(opts, outbox.WithSink(outbox.Destination(dest), s))
	}
	if d.sinks.fallback != nil {
		opts = append(opts, outbox.WithDefaultSink(d.sinks.fallback))
	}
	return opts
}

// startRelay starts the relay on relayCtx. Until Start returns there is nothing to drain, so a signal
// then cancels the start: startRelay returns a nil relay and no error. A nil relay with an error is a
// failed start, already reported.
func (d *daemon) startRelay(sigCtx, relayCtx context.Context, cancelRelay context.CancelFunc) (*outbox.Relay, error) {
	started := make(chan struct{})
	go func() {
		select {
		case <-sigCtx.Done():
			cancelRelay()
		case <-started:
		}
	}()
	d.probe.SetState("connecting")
	d.metrics.SetState("connecting")
	relay, err := outbox.Start(relayCtx, d.pool, d.cfg.Schema, nil, d.relayOptions()...)
	close(started)
	if err != nil {
		if sigCtx.Err() != nil {
			d.log.Info("interrupted before the relay started")
			return nil, nil
		}
		return nil, relayFailure{err}
	}
	return relay, nil
}

// serve monitors the running relay until it fails (a relayFailure) or a signal asks for a graceful
// stop (the process handles a second signal).
func (d *daemon) serve(ctx, sigCtx, relayCtx context.Context, relay *outbox.Relay) error {
	monCtx, stopMonitor := context.WithCancel(relayCtx)
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		monitor(monCtx, relay, d.pool, d.cfg, d.metrics, d.probe, d.sinks, d.log)
	}()
	stopMonitoring := func() {
		stopMonitor()
		<-monitorDone
	}
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Wait() }()

	select {
	case err := <-relayDone:
		stopMonitoring()
		if err == nil {
			err = errors.New("relay stopped unexpectedly")
		}
		return relayFailure{err}
	case <-sigCtx.Done():
	}
	d.drain(ctx, relay, stopMonitoring)
	return nil
}

// drain stops the relay: it waits up to drain_timeout for the messages in flight, confirms the final
// position and logs the outcome.
func (d *daemon) drain(ctx context.Context, relay *outbox.Relay, stopMonitoring func()) {
	log := d.log
	st := relay.Stats()
	log.Info("shutting down: draining messages in flight", zap.Int("in_flight", st.InFlight),
		zap.Duration("drain_timeout", d.cfg.DrainTimeout.D()))
	d.probe.SetState("stopping")
	drainCtx, cancelDrain := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.DrainTimeout.D())
	defer cancelDrain()
	stopErr := relay.Stop(drainCtx)
	stopMonitoring()
	d.metrics.SetState("stopped")
	switch {
	case errors.Is(stopErr, context.DeadlineExceeded):
		log.Warn("drain timed out: unconfirmed messages will be re-delivered on the next start",
			zap.Int("in_flight", relay.Stats().InFlight))
	case stopErr != nil:
		log.Warn("relay stopped with an error", zap.Error(stopErr))
	}
	st = relay.Stats()
	log.Info("stopped", zap.Int64("delivered", st.Delivered), zap.Int64("dead_lettered", st.DeadLettered),
		zap.String("confirmed_lsn", st.ConfirmedLSN.String()))
}

// fatal reports the failure of outbox d on stderr (with the replay hint for a lost slot), marks it
// failed and returns the error with its exit code. relayErr is the relay's error, nil when the outbox
// failed before its relay started; err is the whole error.
func (a *app) fatal(d *daemon, relayErr, err error) error {
	if relayErr != nil {
		err = relayErr
	}
	d.probe.SetFailed(err.Error())
	d.metrics.SetState("failed")
	d.log.Error("relay failed", zap.Error(err))
	code := exitCode(err)
	prefix := "pgoutbox: "
	if d.multi {
		prefix = "pgoutbox: outbox " + d.cfg.Name + ": "
	}
	var lost *replication.SlotLostError
	switch {
	case errors.As(err, &lost):
		fmt.Fprintf(a.stderr, "%sFATAL: %v\n", prefix, err)
		fmt.Fprintf(a.stderr, "%smessages committed after the last confirmed commit time were not delivered; "+
			"inspect with `pgoutbox status%s`, replay them with `pgoutbox replay%s --since <time>` (add --dry-run first) "+
			"once a new slot streams, and see docs/daemon.md#slot-lost.\n", prefix, d.outboxFlag(), d.outboxFlag())
	case code == exitNotMigrated:
		fmt.Fprintf(a.stderr, "%sFATAL: %v\n%srun `pgoutbox migrate%s` as the schema owner first.\n", prefix, err, prefix, d.outboxFlag())
	default:
		fmt.Fprintf(a.stderr, "%sFATAL: %v\n", prefix, err)
	}
	return withCode(code, fmt.Errorf("%w: %w", errReported, err))
}

// outboxFlag is the --outbox flag that points a command at this outbox ("" with one outbox).
func (d *daemon) outboxFlag() string {
	if !d.multi {
		return ""
	}
	return " --outbox " + d.cfg.Name
}

func openPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, usageErr("database.url: %v", redactPGError(err))
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "pgoutbox-admin"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, withCode(exitDatabase, fmt.Errorf("connect to PostgreSQL: %w", err))
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, withCode(exitDatabase, fmt.Errorf("connect to PostgreSQL: %w", err))
	}
	return pool, nil
}

// redactPGError drops the message of a DSN parse error, which may quote the connection string.
func redactPGError(err error) string {
	return "cannot parse the connection string (the value is not shown, it may hold a password)"
}

// advanceToStartLSN moves the slot to start_lsn when it is behind it (a one-time skip that later
// restarts ignore once the slot is past it).
func advanceToStartLSN(ctx context.Context, dsn string, cfg config.Config, log *zap.Logger) error {
	conn, err := config.Connect(ctx, dsn)
	if err != nil {
		return withCode(exitDatabase, fmt.Errorf("connect to PostgreSQL: %w", err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := observe.QuerySlot(ctx, conn, cfg.Schema, cfg.SlotName())
	if err != nil && !errors.Is(err, observe.ErrNoDeadLetterTable) {
		return err
	}
	to := config.ParseLSNValue(cfg.StartLSN)
	switch {
	case !st.Exists:
		log.Warn("start_lsn ignored: the slot does not exist yet", zap.String("start_lsn", to.String()))
		return nil
	case st.ConfirmedLSN >= to:
		log.Info("start_lsn already passed, ignored", zap.String("start_lsn", to.String()), zap.String("confirmed", st.Confirmed))
		return nil
	}
	if err := replication.AdvanceSlot(ctx, conn, cfg.SlotName(), to); err != nil {
		return fmt.Errorf("start_lsn: %w", err)
	}
	log.Warn("slot advanced to start_lsn: messages in between are skipped", zap.String("from", st.Confirmed), zap.String("to", to.String()))
	return nil
}

// monitor samples the relay and polls the slot until ctx ends.
func monitor(ctx context.Context, relay *outbox.Relay, pool *pgxpool.Pool, cfg config.Config, m *observe.Metrics,
	p *observe.Probe, sinks *sinkSet, log *zap.Logger) {
	sample := time.NewTicker(250 * time.Millisecond)
	defer sample.Stop()
	poll := time.NewTicker(cfg.SlotPoll.D())
	defer poll.Stop()
	prev := ""
	var reconnects uint64
	pollSlot := func() {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := observe.QuerySlot(qctx, pool, cfg.Schema, cfg.SlotName())
		if ctx.Err() != nil {
			return
		}
		m.SetSlot(st, err)
		if err != nil && !errors.Is(err, observe.ErrNoDeadLetterTable) {
			log.Warn("poll slot", zap.Error(err))
			return
		}
		p.SetLag(st.LagBytes)
	}
	sampleRelay := func() {
		state := string(relay.State())
		if n := relay.ReplicationStats().Reconnects; n > reconnects {
			m.Reconnected(n - reconnects)
			reconnects = n
		}
		if state != prev {
			if prev != "" {
				log.Info("relay state changed", zap.String("from", prev), zap.String("to", state))
			}
			prev = state
		}
		m.SetState(state)
		p.SetState(state)
		st := relay.Stats()
		m.SetInFlight(st.InFlight)
		m.SetParked(st.Parked, relay.ReplicationStats().LastServerWALEnd)
		if cfg.LogicalMessages {
			m.SetIgnoredMessages(st.IgnoredMessages)
		}
		p.SetParked(st.Parked)
		blocked := map[string]string{}
		for d, why := range relay.Blocked() {
			blocked["destination "+string(d)] = why
		}
		for t, why := range sinks.blockedTopics() {
			blocked["kafka topic "+t] = why
		}
		for k, why := range sinks.blockedOther() {
			blocked[k] = why
		}
		p.SetBlocked(blocked)
	}
	sampleRelay()
	pollSlot()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sample.C:
			sampleRelay()
		case <-poll.C:
			pollSlot()
		}
	}
}
