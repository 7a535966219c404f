package rabbitmq

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"time"

	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	"github.com/pgoutbox/pgoutbox/sink/internal/tlsconfig"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq/routingkey"
)

// Unroutable says what a record the exchange could not route to any queue (returned, since the sink
// publishes with mandatory set) becomes.
const (
	// UnroutablePermanent dead-letters it at once (the default): a binding is missing for its key.
	UnroutablePermanent = "permanent"
	// UnroutableUnavailable blocks the destination until it routes: for setups where queues and
	// bindings may appear after the relay starts.
	UnroutableUnavailable = "unavailable"
)

// Config holds the RabbitMQ sink's settings. Start from [DefaultConfig]; [New] calls [Config.Validate].
type Config struct {
	// URL is the broker, amqp://host:port/vhost or amqps://… (TLS). Required. Credentials in it are
	// used unless User is set.
	URL string
	// User and Password override the URL's credentials. Never logged.
	User     string
	Password string
	// Name is the connection name the broker shows (default "pgoutbox").
	Name string
	// Destinations maps a Destination to where its records go. A record of a destination not listed
	// fails permanently.
	Destinations map[string]Destination
	// Unroutable is UnroutablePermanent (default) or UnroutableUnavailable.
	Unroutable string
	// Channels is the number of AMQP channels publishing (default 16); the broker runs each in a
	// process of its own, and the client scans a channel's unconfirmed messages on each multiple ack,
	// so more channels spread both (BenchmarkSendChannels).
	Channels int
	// MaxInFlight bounds the records published and awaiting their confirm, over all Sends (default 4096).
	MaxInFlight int
	// ConfirmTimeout is how long a record's publisher confirm is awaited before the broker counts as
	// unavailable (default 10s).
	ConfirmTimeout time.Duration
	// MaxMessageBytes is the largest body sent (default 16 MiB, at or below the broker's
	// max_message_size): a larger one fails permanently instead of making the broker close the channel.
	MaxMessageBytes int
	// DialTimeout bounds each connection attempt (default 5s); Heartbeat is the AMQP heartbeat
	// (default 10s); ReconnectWait is the first pause between reconnection attempts, doubling up to 15s
	// (default 500ms). The sink reconnects forever.
	DialTimeout   time.Duration
	Heartbeat     time.Duration
	ReconnectWait time.Duration

	TLS TLSConfig
}

// Destination is where the records of one destination go: Exchange (required; "" is the default
// exchange, which routes to the queue named by the routing key) with RoutingKey, which always wins
// when set. Without one, each record's Route is the routing key, restricted to AllowedRoutingKeys when
// set (topic-exchange patterns, see [routingkey.AllowList]); RoutingKey and AllowedRoutingKeys are
// exclusive.
type Destination struct {
	Exchange           string
	RoutingKey         string
	AllowedRoutingKeys []string
	// CloudEvents sets how records are laid out: raw (the default: the payload as the body, pgoutbox
	// headers) or as CloudEvents 1.0 in binary mode (cloudEvents_… headers, the content_type property)
	// or structured mode (a JSON envelope as the body), per the AMQP protocol binding.
	CloudEvents cloudevents.Options
}

// TLSConfig configures TLS to the broker (used with an amqps:// URL or Enable).
type TLSConfig struct {
	Enable bool
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for mutual TLS.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the broker's certificate.
	ServerName string
	// InsecureSkipVerify disables certificate checks. For tests only.
	InsecureSkipVerify bool
}

// DefaultConfig returns a Config with every default filled in and no broker.
func DefaultConfig() Config {
	return Config{
		Name: "pgoutbox", Unroutable: UnroutablePermanent, Channels: 16, MaxInFlight: 4096, ConfirmTimeout: 10 * time.Second,
		MaxMessageBytes: 16 << 20, DialTimeout: 5 * time.Second, Heartbeat: 10 * time.Second, ReconnectWait: 500 * time.Millisecond,
	}
}

// Validate reports every invalid setting, naming its field.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("rabbitmq: config: "+format, args...))
	}
	u, err := url.Parse(c.URL)
	if c.URL == "" || err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
		bad("URL %q is not amqp://host:port/vhost or amqps://…", redact(c.URL))
	}
	if c.Password != "" && c.User == "" {
		bad("Password is set without User")
	}
	if len(c.Destinations) == 0 {
		bad("Destinations is empty")
	}
	for _, dest := range slices.Sorted(maps.Keys(c.Destinations)) {
		errs = append(errs, validateDestination(dest, c.Destinations[dest])...)
	}
	if c.Unroutable != UnroutablePermanent && c.Unroutable != UnroutableUnavailable {
		bad("Unroutable is %q; it must be %q or %q", c.Unroutable, UnroutablePermanent, UnroutableUnavailable)
	}
	if c.Channels < 1 || c.Channels > 64 {
		bad("Channels is %d; it must be between 1 and 64", c.Channels)
	}
	if c.MaxInFlight < 1 {
		bad("MaxInFlight is %d; it must be at least 1", c.MaxInFlight)
	}
	if c.MaxMessageBytes < 1 {
		bad("MaxMessageBytes is %d; it must be positive", c.MaxMessageBytes)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"ConfirmTimeout", c.ConfirmTimeout}, {"DialTimeout", c.DialTimeout}, {"Heartbeat", c.Heartbeat}, {"ReconnectWait", c.ReconnectWait}} {
		if d.d <= 0 {
			bad("%s is %v; it must be positive", d.name, d.d)
		}
	}
	if err := c.TLS.files().Validate(); err != nil {
		bad("%v", err)
	}
	return errors.Join(errs...)
}

func validateDestination(dest string, d Destination) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("rabbitmq: config: Destinations[%q]: "+format, append([]any{dest}, args...)...))
	}
	if dest == "" {
		return []error{fmt.Errorf("rabbitmq: config: Destinations: empty destination")}
	}
	if len(d.Exchange) > routingkey.MaxLen {
		bad("Exchange of %d bytes is over AMQP's limit of %d", len(d.Exchange), routingkey.MaxLen)
	}
	if err := routingkey.Validate(d.RoutingKey); err != nil {
		bad("RoutingKey: %v", err)
	}
	if d.RoutingKey != "" && d.AllowedRoutingKeys != nil {
		bad("set only one of RoutingKey and AllowedRoutingKeys: the configured routing key always wins")
	}
	if d.AllowedRoutingKeys != nil {
		if _, err := routingkey.NewAllowList(d.AllowedRoutingKeys); err != nil {
			bad("AllowedRoutingKeys%v", err)
		}
	}
	if err := d.CloudEvents.Validate(); err != nil {
		bad("CloudEvents: %v", err)
	}
	return errs
}

func (t TLSConfig) files() tlsconfig.Files {
	return tlsconfig.Files{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
}

func (t TLSConfig) build(serverName string) (*tls.Config, error) {
	tc, err := t.files().Build(serverName)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: config: %w", err)
	}
	return tc, nil
}

// redact drops the password from a broker URL, for errors and logs.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
