package main

import (
	"context"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq"
)

// rabbitmqConfig translates the rabbitmq section and the rabbitmq routes into the sink's configuration.
func rabbitmqConfig(r config.RabbitMQ, routes map[string]config.RabbitMQRoute) rabbitmq.Config {
	rc := rabbitmq.DefaultConfig()
	rc.URL, rc.User, rc.Password, rc.Name = r.URL, r.User, r.Password, r.Name
	rc.TLS = rabbitmq.TLSConfig{Enable: r.TLS.Enable, CAFile: r.TLS.CAFile, CertFile: r.TLS.CertFile, KeyFile: r.TLS.KeyFile,
		ServerName: r.TLS.ServerName, InsecureSkipVerify: r.TLS.InsecureSkipVerify}
	rc.Unroutable, rc.Channels, rc.MaxInFlight = r.Unroutable, r.Channels, r.MaxInFlight
	rc.ConfirmTimeout, rc.MaxMessageBytes = r.ConfirmTimeout.D(), int(r.MaxMessageBytes)
	rc.DialTimeout, rc.Heartbeat, rc.ReconnectWait = r.DialTimeout.D(), r.Heartbeat.D(), r.ReconnectWait.D()
	rc.Destinations = map[string]rabbitmq.Destination{}
	for dest, rt := range routes {
		rc.Destinations[dest] = rabbitmq.Destination{Exchange: rt.Exchange, RoutingKey: rt.RoutingKey, AllowedRoutingKeys: rt.AllowedRoutingKeys,
			CloudEvents: config.RecordFormat(rt.Format, rt.CloudEventsSource, rt.CloudEventsType)}
	}
	return rc
}

// addRabbitMQ connects the one RabbitMQ sink shared by every rabbitmq route, retrying while the broker
// is unreachable (until ctx ends).
func (s *sinkSet) addRabbitMQ(ctx context.Context, r config.RabbitMQ, routes map[string]config.RabbitMQRoute, log *zap.Logger, probe *observe.Probe) error {
	if len(routes) == 0 {
		return nil
	}
	rc := rabbitmqConfig(r, routes)
	if err := rc.Validate(); err != nil {
		return withCode(exitUsage, fmt.Errorf("%w: rabbitmq: %w", config.ErrInvalid, err))
	}
	rs, err := connectRetrying(ctx, "rabbitmq", log, probe, func() (*rabbitmq.Sink, error) { return rabbitmq.New(rc, rabbitmq.WithLogger(log)) })
	if err != nil {
		return err
	}
	s.closers = append(s.closers, rs)
	s.blockers = append(s.blockers, blocker{label: "rabbitmq exchange ", blocked: rs.Blocked})
	for d := range routes {
		s.byDest[d] = rs
	}
	return nil
}

// describeRabbitMQRoute says where a rabbitmq route's messages go.
func describeRabbitMQRoute(ri *routeInfo, r *config.RabbitMQRoute) {
	ri.Sink, ri.Exchange = "rabbitmq", r.Exchange
	ex := fmt.Sprintf("exchange %q", r.Exchange)
	switch {
	case r.RoutingKey != "":
		ri.RoutingKey, ri.RoutingKeyFrom = r.RoutingKey, "config"
		ri.Rule = fmt.Sprintf("rabbitmq %s, routing key %s (configured: the message's Route is ignored)", ex, r.RoutingKey)
	case r.AllowedRoutingKeys != nil:
		ri.RoutingKeyFrom, ri.AllowedRoutingKeys = "route", r.AllowedRoutingKeys
		ri.Rule = fmt.Sprintf("rabbitmq %s, routing key from each message's Route, allowed: %s (any other Route is dead-lettered)",
			ex, strings.Join(r.AllowedRoutingKeys, ", "))
	default:
		ri.RoutingKeyFrom = "route"
		ri.Rule = fmt.Sprintf("rabbitmq %s, routing key from each message's Route (any key: no allowed_routing_keys)", ex)
	}
}
