package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/stdout"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// kafkaSink is what the daemon needs of the Kafka sink; the seam keeps the wiring in one place.
type kafkaSink interface {
	outbox.Sink
	Close() error
	Blocked() map[string]string
}

// sinkSet holds the sinks built from the routes.
type sinkSet struct {
	byDest map[string]outbox.Sink
	// fallback takes destinations without a route (dev mode only).
	fallback outbox.Sink
	kafka    kafkaSink
	webhooks map[string]*webhook.Sink
	closers  []interface{ Close() error }
}

func (s *sinkSet) destinations() []string {
	out := make([]string, 0, len(s.byDest))
	for d := range s.byDest {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

func (s *sinkSet) blockedTopics() map[string]string {
	if s.kafka == nil {
		return nil
	}
	return s.kafka.Blocked()
}

func (s *sinkSet) close(log *zap.Logger) {
	for _, c := range s.closers {
		if err := c.Close(); err != nil {
			log.Warn("close sink", zap.Error(err))
		}
	}
}

// buildSinks creates one sink per route. In dev mode, every destination without a route is printed
// to stdout (outbox.WithDefaultSink).
func buildSinks(ctx context.Context, pool *pgxpool.Pool, cfg config.Config, dev bool, out io.Writer,
	log *zap.Logger, probe *observe.Probe) (*sinkSet, error) {
	set := &sinkSet{byDest: map[string]outbox.Sink{}}
	var std *stdout.Sink
	stdoutSink := func() *stdout.Sink {
		if std == nil {
			std = stdout.New(out)
		}
		return std
	}
	topics := map[string]string{}
	var kafkaDests []string
	for _, dest := range cfg.Destinations() {
		r := cfg.Routes[dest]
		switch {
		case r.Stdout != nil:
			set.byDest[dest] = stdoutSink()
		case r.Webhook != nil:
			ws, err := newWebhookSink(dest, *r.Webhook, log)
			if err != nil {
				set.close(log)
				return nil, err
			}
			set.addWebhook(dest, ws)
		case r.Kafka != nil:
			kafkaDests = append(kafkaDests, dest)
			if r.Kafka.Topic != "" {
				topics[dest] = r.Kafka.Topic
			}
		}
	}
	if len(kafkaDests) > 0 {
		ks, err := connectKafka(ctx, cfg.Kafka, topics, log, probe)
		if err != nil {
			set.close(log)
			return nil, err
		}
		set.kafka = ks
		set.closers = append(set.closers, ks)
		for _, d := range kafkaDests {
			set.byDest[d] = ks
		}
	}
	if dev {
		set.fallback = stdoutSink()
		log.Info("dev mode: destinations without a route are printed to stdout")
	}
	for _, d := range set.destinations() {
		log.Info("route", zap.String("destination", d), zap.String("sink", kindOf(cfg, d)))
	}
	return set, nil
}

func kindOf(cfg config.Config, dest string) string {
	if r, ok := cfg.Routes[dest]; ok {
		if r.Kafka != nil && r.Kafka.Topic != "" {
			return "kafka topic " + r.Kafka.Topic
		}
		return r.Kind()
	}
	return "stdout (dev)"
}

// connectKafka creates the Kafka sink, retrying while the brokers are unreachable (until ctx ends).
func connectKafka(ctx context.Context, k config.Kafka, topics map[string]string, log *zap.Logger, probe *observe.Probe) (kafkaSink, error) {
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ks, err := newKafkaSink(k, topics, log)
		if err == nil {
			probe.SetBlocked(nil)
			return ks, nil
		}
		if !outbox.IsUnavailable(err) {
			return nil, err
		}
		probe.SetState("connecting")
		probe.SetBlocked(map[string]string{"kafka": err.Error()})
		log.Warn("kafka unavailable, retrying", zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kafka unavailable: %w", err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 15*time.Second)
	}
}
