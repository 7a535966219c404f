package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pgoutbox/pgoutbox/sink/rabbitmq/routingkey"
)

// RabbitMQRoute publishes to Exchange ("" is the default exchange, routing to the queue named by the
// key). A configured RoutingKey always wins over the message's Route; without one, each message's
// Route is the routing key, restricted to AllowedRoutingKeys when set (topic-exchange patterns:
// "orders.*" one word, "orders.#" zero or more). RoutingKey and AllowedRoutingKeys are exclusive.
type RabbitMQRoute struct {
	Exchange           string   `yaml:"exchange"`
	RoutingKey         string   `yaml:"routing_key"`
	AllowedRoutingKeys []string `yaml:"allowed_routing_keys"`
	// Format, CloudEventsSource and CloudEventsType: see RecordFormat.
	Format            string `yaml:"format"`
	CloudEventsSource string `yaml:"cloudevents_source"`
	CloudEventsType   string `yaml:"cloudevents_type"`
}

// RabbitMQ configures the one RabbitMQ connection shared by every rabbitmq route. The password comes
// from password, password_file or PGOUTBOX_RABBITMQ_PASSWORD, never from the URL in a file that is
// shared (url_file keeps a URL with credentials out of the configuration).
type RabbitMQ struct {
	URL             string   `yaml:"url"`
	URLFile         string   `yaml:"url_file"`
	User            string   `yaml:"user"`
	Password        string   `yaml:"password"`
	PasswordFile    string   `yaml:"password_file"`
	Name            string   `yaml:"name"`
	TLS             TLS      `yaml:"tls"`
	Unroutable      string   `yaml:"unroutable"`
	Channels        int      `yaml:"channels"`
	MaxInFlight     int      `yaml:"max_in_flight"`
	ConfirmTimeout  Duration `yaml:"confirm_timeout"`
	MaxMessageBytes ByteSize `yaml:"max_message_bytes"`
	DialTimeout     Duration `yaml:"dial_timeout"`
	Heartbeat       Duration `yaml:"heartbeat"`
	ReconnectWait   Duration `yaml:"reconnect_wait"`
}

func defaultRabbitMQ() RabbitMQ {
	return RabbitMQ{Name: "pgoutbox", Unroutable: "permanent", Channels: 16, MaxInFlight: 4096,
		ConfirmTimeout: Duration(10 * time.Second), MaxMessageBytes: 16 << 20, DialTimeout: Duration(5 * time.Second),
		Heartbeat: Duration(10 * time.Second), ReconnectWait: Duration(500 * time.Millisecond)}
}

// validateRabbitMQ checks the rabbitmq section.
func (c *Config) validateRabbitMQ() []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	r := c.RabbitMQ
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		if err != nil || u.Host == "" || (u.Scheme != "amqp" && u.Scheme != "amqps") {
			bad("rabbitmq.url", "%q is not amqp://host:port/vhost or amqps://…", redactURL(r.URL))
		}
	}
	if r.URL != "" && r.URLFile != "" {
		bad("rabbitmq.url_file", "set only one of rabbitmq.url and rabbitmq.url_file")
	}
	if r.Password != "" && r.PasswordFile != "" {
		bad("rabbitmq.password_file", "set only one of rabbitmq.password and rabbitmq.password_file")
	}
	if (r.Password != "" || r.PasswordFile != "") && r.User == "" {
		bad("rabbitmq.user", "required with rabbitmq.password or rabbitmq.password_file")
	}
	if r.Unroutable != "permanent" && r.Unroutable != "unavailable" {
		bad("rabbitmq.unroutable", "%q is not permanent (dead-letter a message no queue takes) or unavailable (block until one does)", r.Unroutable)
	}
	if r.Channels < 1 || r.Channels > 64 {
		bad("rabbitmq.channels", "%d: must be between 1 and 64", r.Channels)
	}
	if r.MaxInFlight < 1 {
		bad("rabbitmq.max_in_flight", "%d: must be at least 1", r.MaxInFlight)
	}
	if r.MaxMessageBytes < 1 || r.MaxMessageBytes > 512<<20 {
		bad("rabbitmq.max_message_bytes", "%d: must be between 1 and 512MiB", r.MaxMessageBytes)
	}
	for _, kv := range []struct {
		key string
		d   Duration
	}{{"rabbitmq.confirm_timeout", r.ConfirmTimeout}, {"rabbitmq.dial_timeout", r.DialTimeout}, {"rabbitmq.heartbeat", r.Heartbeat}, {"rabbitmq.reconnect_wait", r.ReconnectWait}} {
		if kv.d <= 0 {
			bad(kv.key, "%s: must be positive", kv.d.D())
		}
	}
	errs = append(errs, validateTLS("rabbitmq.tls", r.TLS)...)
	return errs
}

// validateRabbitMQRoute checks a rabbitmq route (key is "routes.<dest>.rabbitmq").
func (c *Config) validateRabbitMQRoute(key string, r *RabbitMQRoute) []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	if c.RabbitMQ.URL == "" && c.RabbitMQ.URLFile == "" {
		bad("rabbitmq.url", "required by route %s (or rabbitmq.url_file; env PGOUTBOX_RABBITMQ_URL)", key)
	}
	errs = append(errs, validateFormat(key, r.Format, r.CloudEventsSource)...)
	if len(r.Exchange) > routingkey.MaxLen {
		bad(key+".exchange", "%d bytes: AMQP's limit is %d", len(r.Exchange), routingkey.MaxLen)
	}
	if err := routingkey.Validate(r.RoutingKey); err != nil {
		bad(key+".routing_key", "%v", err)
	}
	if r.RoutingKey != "" && r.AllowedRoutingKeys != nil {
		bad(key+".allowed_routing_keys", "set only one of %s.routing_key and %s.allowed_routing_keys: the configured routing key always wins", key, key)
		return errs
	}
	if r.AllowedRoutingKeys != nil && len(r.AllowedRoutingKeys) == 0 {
		bad(key+".allowed_routing_keys", "empty: it would dead-letter every message; leave it out to take any Route as the routing key")
	}
	for i, p := range r.AllowedRoutingKeys {
		if err := routingkey.ValidatePattern(p); err != nil {
			bad(fmt.Sprintf("%s.allowed_routing_keys[%d]", key, i), "%v", err)
		}
	}
	return errs
}

// resolveRabbitMQSecrets reads rabbitmq.url_file and rabbitmq.password_file.
func (c *Config) resolveRabbitMQSecrets() error {
	var err error
	if c.RabbitMQ.URLFile != "" && c.RabbitMQ.URL == "" {
		if c.RabbitMQ.URL, err = readSecret("rabbitmq.url_file", c.RabbitMQ.URLFile); err != nil {
			return err
		}
		c.RabbitMQ.URLFile = ""
	}
	if c.RabbitMQ.PasswordFile != "" && c.RabbitMQ.Password == "" {
		if c.RabbitMQ.Password, err = readSecret("rabbitmq.password_file", c.RabbitMQ.PasswordFile); err != nil {
			return err
		}
		c.RabbitMQ.PasswordFile = ""
	}
	return nil
}

// readSecret reads a secret file (trimmed); the error names the key, never the content.
func readSecret(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalid, key, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", keyError(key, "%s is empty", path)
	}
	return s, nil
}
