package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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

// daemon is one `pgoutbox run`: its configuration and what it opened.
type daemon struct {
	a       *app
	cfg     config.Config
	dev     bool
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
	dsn, err := cfg.DSN()
	if err != nil {
		return err
	}

	// The first signal starts a graceful stop; a second one exits at once.
	sigCtx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	// Metrics and health come up first, so that a slow start is visible.
	d := &daemon{a: a, cfg: cfg, dev: f.dev, log: log}
	stopHTTP, err := d.serveHTTP(ctx)
	if err != nil {
		return err
	}
	defer stopHTTP()

	log.Info("connecting to PostgreSQL", zap.String("database", config.RedactDSN(dsn)), zap.String("schema", cfg.Schema),
		zap.String("slot", cfg.SlotName()))
	if d.pool, err = openPool(sigCtx, dsn); err != nil {
		return err
	}
	defer d.pool.Close()

	if cfg.StartLSN != 0 {
		if err := advanceToStartLSN(sigCtx, dsn, cfg, log); err != nil {
			return err
		}
	}

	if d.sinks, err = buildSinks(sigCtx, d.pool, cfg, f.dev, a.stdout, log, d.probe); err != nil {
		return err
	}
	defer d.sinks.close(log)
	d.metrics.InitDestinations(d.sinks.destinations())
	d.sinks.exportWebhookStats(d.metrics)

	// The relay outlives the signal context: a signal must drain it through Stop, not cut it off.
	relayCtx, cancelRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRelay()
	relay, err := d.startRelay(sigCtx, relayCtx, cancelRelay)
	if relay == nil {
		return err
	}
	return d.serve(ctx, sigCtx, relayCtx, stopSignals, relay)
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
	return cfg, cfg.ValidateRun(f.dev)
}

// serveHTTP sets up the metrics and the health probe and serves them on http.listen; stop shuts the
// server down.
func (d *daemon) serveHTTP(ctx context.Context) (stop func(), err error) {
	cfg := d.cfg
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.metrics = observe.NewMetrics(reg, version)
	d.probe = &observe.Probe{MaxLagBytes: int64(cfg.Readiness.MaxLagBytes), StandbyReady: cfg.Readiness.StandbyReady,
		MaxParkedAge: cfg.Readiness.MaxParkedAge.D()}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, usageErr("http.listen %q: %v", cfg.HTTP.Listen, err)
	}
	srv := &http.Server{Handler: observe.Handler(reg, d.probe), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("http server failed", zap.Error(err))
		}
	}()
	d.log.Info("http server listening", zap.String("addr", ln.Addr().String()),
		zap.Strings("paths", []string{"/metrics", "/healthz", "/readyz"}))
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
		outbox.WithLogger(d.log),
		outbox.WithObserver(d.metrics),
	}
	if cfg.Streaming.MemoryLimit > 0 {
		opts = append(opts, outbox.WithStreamMemoryLimit(int(cfg.Streaming.MemoryLimit)))
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
		return nil, d.a.fatal(d.log, d.probe, d.metrics, err)
	}
	return relay, nil
}

// serve monitors the running relay until it fails (a fatal error) or a signal asks for a graceful
// stop, after which a second signal exits at once.
func (d *daemon) serve(ctx, sigCtx, relayCtx context.Context, stopSignals func(), relay *outbox.Relay) error {
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
		return d.a.fatal(d.log, d.probe, d.metrics, err)
	case <-sigCtx.Done():
	}

	// Graceful stop. From here a second signal exits at once.
	second := make(chan os.Signal, 1)
	signal.Notify(second, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(second)
	stopSignals()
	go func() {
		s, ok := <-second
		if !ok {
			return
		}
		fmt.Fprintf(d.a.stderr, "pgoutbox: second signal (%s): exiting without draining; unconfirmed messages will be re-delivered\n", s)
		os.Exit(exitInterrupted)
	}()
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

// fatal reports a relay failure on stderr (with the replay hint for a lost slot) and returns the error
// with its exit code.
func (a *app) fatal(log *zap.Logger, probe *observe.Probe, metrics *observe.Metrics, err error) error {
	probe.SetFailed(err.Error())
	metrics.SetState("failed")
	log.Error("relay failed", zap.Error(err))
	code := exitCode(err)
	var lost *replication.SlotLostError
	switch {
	case errors.As(err, &lost):
		fmt.Fprintf(a.stderr, "pgoutbox: FATAL: %v\n", err)
		fmt.Fprintf(a.stderr, "pgoutbox: messages committed after the last confirmed commit time were not delivered; "+
			"inspect with `pgoutbox status`, replay them with `pgoutbox replay --since <time>` (add --dry-run first) "+
			"once a new slot streams, and see docs/daemon.md#slot-lost.\n")
	case code == exitNotMigrated:
		fmt.Fprintf(a.stderr, "pgoutbox: FATAL: %v\npgoutbox: run `pgoutbox migrate` as the schema owner first.\n", err)
	default:
		fmt.Fprintf(a.stderr, "pgoutbox: FATAL: %v\n", err)
	}
	return withCode(code, fmt.Errorf("%w: %w", errReported, err))
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
