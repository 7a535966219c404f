package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/observe"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	natssink "github.com/pgoutbox/pgoutbox/sink/nats"
)

// natsConfig translates the nats section and the nats routes into the sink's configuration.
func natsConfig(n config.NATS, routes map[string]config.NATSRoute) natssink.Config {
	nc := natssink.DefaultConfig()
	nc.URLs, nc.Name = n.URLs, n.Name
	nc.User, nc.Password, nc.Token, nc.CredsFile, nc.NKeySeedFile = n.User, n.Password, n.Token, n.CredsFile, n.NKeySeedFile
	nc.TLS = natssink.TLSConfig{Enable: n.TLS.Enable, CAFile: n.TLS.CAFile, CertFile: n.TLS.CertFile, KeyFile: n.TLS.KeyFile,
		ServerName: n.TLS.ServerName, InsecureSkipVerify: n.TLS.InsecureSkipVerify}
	nc.MaxInFlight, nc.AckTimeout = n.MaxInFlight, n.AckTimeout.D()
	nc.ConnectTimeout, nc.ReconnectWait = n.ConnectTimeout.D(), n.ReconnectWait.D()
	nc.Subjects, nc.AllowedSubjects, nc.Formats = map[string]string{}, map[string][]string{}, map[string]cloudevents.Options{}
	for dest, r := range routes {
		nc.Formats[dest] = config.RecordFormat(r.Format, r.CloudEventsSource, r.CloudEventsType)
		if r.Subject != "" {
			nc.Subjects[dest] = r.Subject // always wins over the message's Route
		} else if r.AllowedSubjects != nil {
			nc.AllowedSubjects[dest] = r.AllowedSubjects
		}
	}
	return nc
}

// addNATS connects the one NATS sink shared by every nats route, retrying while the servers are
// unreachable (until ctx ends).
func (s *sinkSet) addNATS(ctx context.Context, n config.NATS, routes map[string]config.NATSRoute, log *zap.Logger, probe *observe.Probe) error {
	if len(routes) == 0 {
		return nil
	}
	nc := natsConfig(n, routes)
	if err := nc.Validate(); err != nil {
		return withCode(exitUsage, fmt.Errorf("%w: nats: %w", config.ErrInvalid, err))
	}
	ns, err := connectRetrying(ctx, "nats", log, probe, func() (*natssink.Sink, error) { return natssink.New(nc, natssink.WithLogger(log)) })
	if err != nil {
		return err
	}
	s.closers = append(s.closers, ns)
	s.blockers = append(s.blockers, blocker{label: "nats subject ", blocked: ns.Blocked})
	for d := range routes {
		s.byDest[d] = ns
	}
	return nil
}

// describeNATSRoute says where a nats route's messages go.
func describeNATSRoute(ri *routeInfo, r *config.NATSRoute) {
	ri.Sink = "nats"
	switch {
	case r.Subject != "":
		ri.Subject, ri.SubjectFrom = r.Subject, "config"
		ri.Rule = fmt.Sprintf("nats subject %s (configured: every message goes there, its Route is ignored)", r.Subject)
	case r.AllowedSubjects != nil:
		ri.SubjectFrom, ri.AllowedSubjects = "route", r.AllowedSubjects
		ri.Rule = fmt.Sprintf("nats subject from each message's Route, allowed: %s (any other Route is dead-lettered)",
			strings.Join(r.AllowedSubjects, ", "))
	default:
		ri.SubjectFrom = "route"
		ri.Rule = "nats subject from each message's Route (any subject: no allowed_subjects)"
	}
}

// connectRetrying calls connect until it succeeds, fails with anything but an unavailable server, or
// ctx ends; meanwhile the probe says it is connecting and what is unavailable.
func connectRetrying[S any](ctx context.Context, name string, log *zap.Logger, probe *observe.Probe, connect func() (S, error)) (S, error) {
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		s, err := connect()
		if err == nil {
			probe.SetBlocked(nil)
			return s, nil
		}
		if !outbox.IsUnavailable(err) {
			return s, err
		}
		probe.SetState("connecting")
		probe.SetBlocked(map[string]string{name: err.Error()})
		log.Warn(name+" unavailable, retrying", zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("%s unavailable: %w", name, err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 15*time.Second)
	}
}
