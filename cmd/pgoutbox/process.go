package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
)

// process is one `pgoutbox run`: every outbox of the configuration, each with its own daemon (pool,
// slot, relay, sinks, metrics labelled with its name), and what they share: the HTTP server, the
// logger, standard output and the signals.
//
// Exit rule: the process runs while at least one outbox runs (streaming, standing by, or being started
// again). It exits when every outbox has failed for good, with their exit code (1 when they differ),
// or after a signal has drained every outbox: 0, or the failed outboxes' code when some had failed.
type process struct {
	a        *app
	cfg      config.Config
	log      *zap.Logger
	reg      *prometheus.Registry
	health   observe.Health
	outboxes []*daemon
}

func newProcess(a *app, cfg config.Config, dev bool, log *zap.Logger) *process {
	p := &process{a: a, cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	p.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	observe.RegisterBuildInfo(p.reg, version)
	multi := len(cfg.Outboxes) > 1
	var out io.Writer = a.stdout
	if multi {
		out = &lockedWriter{w: a.stdout} // the outboxes' stdout sinks write whole lines, one at a time
	}
	for _, oc := range cfg.Outboxes {
		d := &daemon{a: a, cfg: oc, dev: dev, multi: multi, out: out, log: log.With(zap.String("outbox", oc.Name)),
			metrics: observe.NewMetrics(p.reg, oc.Name),
			probe: &observe.Probe{MaxLagBytes: int64(oc.Readiness.MaxLagBytes), StandbyReady: oc.Readiness.StandbyReady,
				MaxParkedAge: oc.Readiness.MaxParkedAge.D()}}
		p.health.Add(oc.Name, d.probe)
		p.outboxes = append(p.outboxes, d)
	}
	return p
}

// outcome is how one outbox's daemon ended.
type outcome struct {
	d   *daemon
	err error
}

// runAll runs every outbox until all have ended: failed for good, or drained after a signal. From the
// first signal on, a second one exits at once with 130.
func (p *process) runAll(ctx, sigCtx context.Context, stopSignals func()) error {
	done := make(chan outcome, len(p.outboxes))
	for _, d := range p.outboxes {
		go func() { done <- outcome{d, d.run(ctx, sigCtx)} }()
	}
	var failed []outcome
	signalled := sigCtx.Done()
	for pending := len(p.outboxes); pending > 0; {
		select {
		case o := <-done:
			pending--
			if o.err != nil {
				failed = append(failed, o)
			}
		case <-signalled:
			signalled = nil
			p.log.Info("shutting down: draining every outbox", zap.Int("outboxes", pending))
			defer p.exitOnSecondSignal(stopSignals)()
		}
	}
	return p.exitError(failed)
}

// exitOnSecondSignal makes a second SIGTERM or SIGINT exit at once with 130; the returned function
// stops listening.
func (p *process) exitOnSecondSignal(stopSignals func()) func() {
	second := make(chan os.Signal, 1)
	signal.Notify(second, syscall.SIGINT, syscall.SIGTERM)
	stopSignals()
	go func() {
		s, ok := <-second
		if !ok {
			return
		}
		fmt.Fprintf(p.a.stderr, "pgoutbox: second signal (%s): exiting without draining; unconfirmed messages will be re-delivered\n", s)
		os.Exit(exitInterrupted)
	}()
	return func() { signal.Stop(second) }
}

// exitError is the process's error once every outbox has ended: nil when none failed; the error of
// the one outbox; with several, the failed outboxes named with their codes, exiting with their code
// when they agree and 1 when they differ.
func (p *process) exitError(failed []outcome) error {
	if len(failed) == 0 {
		return nil
	}
	if len(p.outboxes) == 1 {
		return failed[0].err
	}
	slices.SortFunc(failed, func(a, b outcome) int { // in configuration order
		return slices.Index(p.outboxes, a.d) - slices.Index(p.outboxes, b.d)
	})
	code := exitCode(failed[0].err)
	var parts []string
	for _, o := range failed {
		c := exitCode(o.err)
		if c != code {
			code = exitError
		}
		parts = append(parts, fmt.Sprintf("%s (exit %d)", o.d.cfg.Name, c))
	}
	err := fmt.Errorf("%d of %d outboxes failed: %s", len(failed), len(p.outboxes), strings.Join(parts, ", "))
	fmt.Fprintf(p.a.stderr, "pgoutbox: %v\n", err)
	return withCode(code, fmt.Errorf("%w: %w", errReported, err))
}

// lockedWriter serialises writes to w: lines of several sinks never interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
