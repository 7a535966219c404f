package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
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
	// blockers are the other sinks that report what they hold blocked (NATS subjects, RabbitMQ exchanges).
	blockers []blocker
}

// blocker is a sink's Blocked method with the label of what it lists.
type blocker struct {
	label   string
	blocked func() map[string]string
}

// blockedOther returns what the NATS and RabbitMQ sinks hold blocked, labelled ("nats subject x").
func (s *sinkSet) blockedOther() map[string]string {
	out := map[string]string{}
	for _, b := range s.blockers {
		for k, why := range b.blocked() {
			out[b.label+k] = why
		}
	}
	return out
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
	kafkaRoutes := map[string]config.KafkaRoute{}
	natsRoutes, rabbitRoutes := map[string]config.NATSRoute{}, map[string]config.RabbitMQRoute{}
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
			kafkaRoutes[dest] = *r.Kafka
		case r.NATS != nil:
			natsRoutes[dest] = *r.NATS
		case r.RabbitMQ != nil:
			rabbitRoutes[dest] = *r.RabbitMQ
		}
	}
	if err := set.addNATS(ctx, cfg.NATS, natsRoutes, log, probe); err != nil {
		set.close(log)
		return nil, err
	}
	if err := set.addRabbitMQ(ctx, cfg.RabbitMQ, rabbitRoutes, log, probe); err != nil {
		set.close(log)
		return nil, err
	}
	if len(kafkaRoutes) > 0 {
		ks, err := connectKafka(ctx, cfg.Kafka, kafkaRoutes, log, probe)
		if err != nil {
			set.close(log)
			return nil, err
		}
		set.kafka = ks
		set.closers = append(set.closers, ks)
		for d := range kafkaRoutes {
			set.byDest[d] = ks
		}
	}
	if dev {
		set.fallback = stdoutSink()
		log.Info("dev mode: destinations without a route are printed to stdout")
	}
	for _, d := range set.destinations() {
		ri := describeRoute(cfg, d)
		fields := []zap.Field{zap.String("destination", d), zap.String("sink", ri.Rule)}
		if ri.TopicFrom != "" {
			fields = append(fields, zap.String("topic_from", ri.TopicFrom))
		}
		if ri.AllowedTopics != nil {
			fields = append(fields, zap.Strings("allowed_topics", ri.AllowedTopics))
		}
		log.Info("route", fields...)
	}
	return set, nil
}

// connectKafka creates the Kafka sink, retrying while the brokers are unreachable (until ctx ends).
func connectKafka(ctx context.Context, k config.Kafka, routes map[string]config.KafkaRoute, log *zap.Logger, probe *observe.Probe) (kafkaSink, error) {
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ks, err := newKafkaSink(k, routes, log)
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

// routeInfo says where the records of one destination go and why: the startup log and `status` show it.
type routeInfo struct {
	Destination string `json:"destination"`
	Sink        string `json:"sink"` // kafka, webhook, stdout
	// Topic is the configured Kafka topic; TopicFrom is "config" (Topic, the message's Route is ignored)
	// or "route" (each message's Route, within AllowedTopics when set).
	Topic         string   `json:"topic,omitempty"`
	TopicFrom     string   `json:"topic_from,omitempty"`
	AllowedTopics []string `json:"allowed_topics,omitempty"`
	URL           string   `json:"url,omitempty"` // webhook URL without credentials or query values
	// Subject, SubjectFrom and AllowedSubjects are a nats route's, like Topic… for kafka.
	Subject         string   `json:"subject,omitempty"`
	SubjectFrom     string   `json:"subject_from,omitempty"`
	AllowedSubjects []string `json:"allowed_subjects,omitempty"`
	// Exchange, RoutingKey, RoutingKeyFrom and AllowedRoutingKeys are a rabbitmq route's.
	Exchange           string   `json:"exchange,omitempty"`
	RoutingKey         string   `json:"routing_key,omitempty"`
	RoutingKeyFrom     string   `json:"routing_key_from,omitempty"`
	AllowedRoutingKeys []string `json:"allowed_routing_keys,omitempty"`
	// Format is the record format (raw, cloudevents-binary, cloudevents-structured, debezium-outbox);
	// ExactlyOnce is set on the kafka routes of an outbox with kafka.exactly_once.
	Format      string `json:"format,omitempty"`
	ExactlyOnce bool   `json:"exactly_once,omitempty"`
	Rule        string `json:"rule"` // all of the above in words
}

// describeRoutes describes every configured destination, sorted.
func describeRoutes(cfg config.Config) []routeInfo {
	out := make([]routeInfo, 0, len(cfg.Routes))
	for _, d := range cfg.Destinations() {
		out = append(out, describeRoute(cfg, d))
	}
	return out
}

func describeRoute(cfg config.Config, dest string) routeInfo {
	ri := routeInfo{Destination: dest}
	r, ok := cfg.Routes[dest]
	switch {
	case !ok:
		ri.Sink, ri.Rule = "stdout", "stdout (dev mode: destination without a route)"
	case r.Kafka != nil && r.Kafka.Topic != "":
		ri.Sink, ri.Topic, ri.TopicFrom = "kafka", r.Kafka.Topic, "config"
		ri.Rule = fmt.Sprintf("kafka topic %s (configured: every message goes there, its Route is ignored)", r.Kafka.Topic)
	case r.Kafka != nil && r.Kafka.AllowedTopics != nil:
		ri.Sink, ri.TopicFrom, ri.AllowedTopics = "kafka", "route", r.Kafka.AllowedTopics
		ri.Rule = fmt.Sprintf("kafka topic from each message's Route, allowed: %s (any other Route is dead-lettered)",
			strings.Join(r.Kafka.AllowedTopics, ", "))
	case r.Kafka != nil:
		ri.Sink, ri.TopicFrom = "kafka", "route"
		ri.Rule = "kafka topic from each message's Route (any topic: no allowed_topics)"
	case r.NATS != nil:
		describeNATSRoute(&ri, r.NATS)
	case r.RabbitMQ != nil:
		describeRabbitMQRoute(&ri, r.RabbitMQ)
	case r.Webhook != nil:
		ri.Sink, ri.URL = "webhook", safeURL(r.Webhook.URL)
		ri.Rule = "webhook " + ri.URL + " (configured URL; the message's Route is ignored)"
		if r.Webhook.AppendRoute {
			ri.Rule = "webhook " + ri.URL + " (configured URL + the message's Route as one path segment)"
		}
	default:
		ri.Sink = r.Kind()
		ri.Rule = ri.Sink
	}
	describeFormat(&ri, r, cfg.Kafka.ExactlyOnce)
	return ri
}

// describeFormat adds the route's record format, and exactly-once for a kafka route, to ri.
func describeFormat(ri *routeInfo, r config.Route, exactlyOnce bool) {
	switch {
	case r.Kafka != nil:
		ri.Format, ri.ExactlyOnce = r.Kafka.Format, exactlyOnce
	case r.NATS != nil:
		ri.Format = r.NATS.Format
	case r.RabbitMQ != nil:
		ri.Format = r.RabbitMQ.Format
	case r.Webhook != nil:
		ri.Format = r.Webhook.Format
	}
	if ri.Format == "" && ri.Sink != "stdout" {
		ri.Format = "raw"
	}
	if ri.Format != "" {
		ri.Rule += "; format " + ri.Format
	}
	if ri.ExactlyOnce {
		ri.Rule += "; exactly once (Kafka transactions)"
	}
}

// safeURL returns u without user info and with query values elided: a URL may carry a token.
func safeURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	return u.String()
}
