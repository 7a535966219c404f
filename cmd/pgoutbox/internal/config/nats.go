package config

import (
	"fmt"
	"net/url"
	"time"

	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	"github.com/pgoutbox/pgoutbox/sink/nats/subject"
)

// NATSRoute publishes to NATS JetStream. A configured Subject always wins over the message's Route;
// without one, each message's Route is the subject, restricted to AllowedSubjects when set (literal
// subjects and NATS wildcards: "orders.*" one token, "orders.>" one or more). Subject and
// AllowedSubjects are exclusive.
type NATSRoute struct {
	Subject         string   `yaml:"subject"`
	AllowedSubjects []string `yaml:"allowed_subjects"`
	// Format, CloudEventsSource and CloudEventsType: see RecordFormat.
	Format            string `yaml:"format"`
	CloudEventsSource string `yaml:"cloudevents_source"`
	CloudEventsType   string `yaml:"cloudevents_type"`
}

// NATS configures the one NATS connection shared by every nats route. Credentials: at most one of
// user/password (password or password_file), token (token or token_file), creds_file and
// nkey_seed_file; every one of them can also come from PGOUTBOX_NATS_* variables.
type NATS struct {
	URLs           []string `yaml:"urls"`
	Name           string   `yaml:"name"`
	User           string   `yaml:"user"`
	Password       string   `yaml:"password"`
	PasswordFile   string   `yaml:"password_file"`
	Token          string   `yaml:"token"`
	TokenFile      string   `yaml:"token_file"`
	CredsFile      string   `yaml:"creds_file"`
	NKeySeedFile   string   `yaml:"nkey_seed_file"`
	TLS            TLS      `yaml:"tls"`
	MaxInFlight    int      `yaml:"max_in_flight"`
	AckTimeout     Duration `yaml:"ack_timeout"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	ReconnectWait  Duration `yaml:"reconnect_wait"`
}

// TLS enables TLS to a NATS server or a RabbitMQ broker.
type TLS struct {
	Enable             bool   `yaml:"enable"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

func defaultNATS() NATS {
	return NATS{Name: "pgoutbox", MaxInFlight: 4096, AckTimeout: Duration(10 * time.Second),
		ConnectTimeout: Duration(5 * time.Second), ReconnectWait: Duration(time.Second)}
}

// validateNATS checks the nats section.
func (c *Config) validateNATS() []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	n := c.NATS
	for i, u := range n.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls") {
			bad(fmt.Sprintf("nats.urls[%d]", i), "%q is not nats://host:port or tls://host:port", redactURL(u))
		}
	}
	set := 0
	for _, on := range []bool{n.User != "", n.Token != "" || n.TokenFile != "", n.CredsFile != "", n.NKeySeedFile != ""} {
		if on {
			set++
		}
	}
	if set > 1 {
		bad("nats", "set at most one of user (with password), token, creds_file and nkey_seed_file")
	}
	if (n.Password != "" || n.PasswordFile != "") && n.User == "" {
		bad("nats.user", "required with nats.password or nats.password_file")
	}
	if n.Password != "" && n.PasswordFile != "" {
		bad("nats.password_file", "set only one of nats.password and nats.password_file")
	}
	if n.Token != "" && n.TokenFile != "" {
		bad("nats.token_file", "set only one of nats.token and nats.token_file")
	}
	if n.MaxInFlight < 1 {
		bad("nats.max_in_flight", "%d: must be at least 1", n.MaxInFlight)
	}
	for _, kv := range []struct {
		key string
		d   Duration
	}{{"nats.ack_timeout", n.AckTimeout}, {"nats.connect_timeout", n.ConnectTimeout}, {"nats.reconnect_wait", n.ReconnectWait}} {
		if kv.d <= 0 {
			bad(kv.key, "%s: must be positive", kv.d.D())
		}
	}
	errs = append(errs, validateTLS("nats.tls", n.TLS)...)
	return errs
}

func validateTLS(key string, t TLS) []error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return []error{keyError(key+".cert_file", "%s.cert_file and %s.key_file must be set together", key, key)}
	}
	return nil
}

// validateNATSRoute checks a nats route's subject and allowed_subjects (key is "routes.<dest>.nats").
func (c *Config) validateNATSRoute(key string, r *NATSRoute) []error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }
	if len(c.NATS.URLs) == 0 {
		bad("nats.urls", "required by route %s (env PGOUTBOX_NATS_URLS, comma-separated)", key)
	}
	errs = append(errs, validateFormat(key, r.Format, r.CloudEventsSource)...)
	if r.Subject != "" {
		if err := subject.Validate(r.Subject); err != nil {
			bad(key+".subject", "%v", err)
		}
		if r.AllowedSubjects != nil {
			bad(key+".allowed_subjects", "set only one of %s.subject and %s.allowed_subjects: the configured subject always wins, "+
				"allowed_subjects restricts the message's Route when no subject is configured", key, key)
		}
		return errs
	}
	if r.AllowedSubjects != nil && len(r.AllowedSubjects) == 0 {
		bad(key+".allowed_subjects", "empty: it would dead-letter every message; leave it out to take any Route as the subject")
	}
	for i, p := range r.AllowedSubjects {
		if err := subject.ValidatePattern(p); err != nil {
			bad(fmt.Sprintf("%s.allowed_subjects[%d]", key, i), "%v", err)
		}
	}
	return errs
}

// resolveNATSSecrets reads nats.password_file and nats.token_file.
func (c *Config) resolveNATSSecrets() error {
	var err error
	if c.NATS.PasswordFile != "" && c.NATS.Password == "" {
		if c.NATS.Password, err = readSecret("nats.password_file", c.NATS.PasswordFile); err != nil {
			return err
		}
		c.NATS.PasswordFile = ""
	}
	if c.NATS.TokenFile != "" && c.NATS.Token == "" {
		if c.NATS.Token, err = readSecret("nats.token_file", c.NATS.TokenFile); err != nil {
			return err
		}
		c.NATS.TokenFile = ""
	}
	return nil
}

// RecordFormat returns the CloudEvents options of a route's format keys: format is raw (default),
// cloudevents-binary or cloudevents-structured; source (default "/pgoutbox/<destination>") and type
// (the event type of a message without one, default "pgoutbox.message") apply to the CloudEvents ones.
func RecordFormat(format, source, typ string) cloudevents.Options {
	f, _ := cloudevents.ParseFormat(format) // validated at load
	return cloudevents.Options{Format: f, Source: source, Type: typ}
}

// validateFormat checks a route's format and cloudevents_source (key is "routes.<dest>.<kind>").
func validateFormat(key, format, source string) []error {
	var errs []error
	if _, err := cloudevents.ParseFormat(format); err != nil {
		errs = append(errs, keyError(key+".format", "%v", err))
	}
	if err := (cloudevents.Options{Source: source}).Validate(); err != nil {
		errs = append(errs, keyError(key+".cloudevents_source", "%v", err))
	}
	return errs
}
