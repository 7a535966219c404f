package nats

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	"github.com/pgoutbox/pgoutbox/sink/internal/routes"
	"github.com/pgoutbox/pgoutbox/sink/internal/tlsconfig"
	"github.com/pgoutbox/pgoutbox/sink/nats/subject"
)

// Config holds the NATS sink's settings. Start from [DefaultConfig]; [New] calls [Config.Validate].
type Config struct {
	// URLs are the servers to connect to, nats://host:port (tls://host:port for TLS). Required.
	URLs []string
	// Name identifies the connection to the servers (default "pgoutbox").
	Name string
	// Subjects maps a Destination to its subject. A configured subject always wins: every record of the
	// destination goes there, whatever its Route says. A destination without one publishes each record
	// to its Route (see AllowedSubjects).
	Subjects map[string]string
	// AllowedSubjects restricts, per Destination, the subjects a record's Route may name when Subjects
	// has none for the destination: literal subjects and NATS wildcard patterns ("orders.*",
	// "orders.>"; see [subject.AllowList]). A Route outside the list fails permanently (dead-lettered
	// with the list in the error). A destination with neither takes any Route that is a valid subject.
	// Setting both a subject and an allow-list for one destination is an error.
	AllowedSubjects map[string][]string
	// Formats sets, per Destination, how records are laid out: raw (the default: the payload as the
	// data, pgoutbox headers) or as CloudEvents 1.0 in binary mode (ce-… headers, content-type) or
	// structured mode (a JSON envelope as the data), per the NATS protocol binding.
	Formats map[string]cloudevents.Options
	// MaxInFlight bounds the records published and awaiting their PubAck, over all Sends (default 4096).
	MaxInFlight int
	// AckTimeout is how long a record's PubAck is awaited before the server counts as unavailable
	// (default 10s).
	AckTimeout time.Duration
	// ConnectTimeout bounds each connection attempt (default 5s); ReconnectWait is the pause between
	// reconnection attempts to one server (default 1s). The sink reconnects forever.
	ConnectTimeout time.Duration
	ReconnectWait  time.Duration

	// Credentials: at most one of User/Password, Token, CredsFile (a JWT user credentials file) and
	// NKeySeedFile. Never logged.
	User         string
	Password     string
	Token        string
	CredsFile    string
	NKeySeedFile string

	TLS TLSConfig
}

// TLSConfig enables TLS to the servers.
type TLSConfig struct {
	Enable bool
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for mutual TLS.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the server certificates.
	ServerName string
	// InsecureSkipVerify disables certificate checks. For tests only.
	InsecureSkipVerify bool
}

// DefaultConfig returns a Config with every default filled in and no servers.
func DefaultConfig() Config {
	return Config{
		Name:           "pgoutbox",
		MaxInFlight:    4096,
		AckTimeout:     10 * time.Second,
		ConnectTimeout: 5 * time.Second,
		ReconnectWait:  time.Second,
	}
}

// Validate reports every invalid setting, naming its field.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("nats: config: "+format, args...)) }
	if len(c.URLs) == 0 {
		bad("URLs is empty")
	}
	for i, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls") {
			bad("URLs[%d]: %q is not nats://host:port or tls://host:port", i, redact(u))
		}
	}
	errs = append(errs, subjectRoutes.Check(c.Subjects, c.AllowedSubjects)...)
	for _, dest := range slices.Sorted(maps.Keys(c.Formats)) {
		if err := c.Formats[dest].Validate(); err != nil {
			bad("Formats[%q]: %v", dest, err)
		}
	}
	if c.MaxInFlight < 1 {
		bad("MaxInFlight is %d; it must be at least 1", c.MaxInFlight)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"AckTimeout", c.AckTimeout}, {"ConnectTimeout", c.ConnectTimeout}, {"ReconnectWait", c.ReconnectWait}} {
		if d.d <= 0 {
			bad("%s is %v; it must be positive", d.name, d.d)
		}
	}
	n := 0
	for _, set := range []bool{c.User != "" || c.Password != "", c.Token != "", c.CredsFile != "", c.NKeySeedFile != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		bad("set at most one of User/Password, Token, CredsFile and NKeySeedFile")
	}
	if c.Password != "" && c.User == "" {
		bad("Password is set without User")
	}
	if err := c.TLS.files().Validate(); err != nil {
		bad("%v", err)
	}
	return errors.Join(errs...)
}

// subjectRoutes checks Subjects and AllowedSubjects.
var subjectRoutes = routes.Spec{Prefix: "nats: config: ", Field: "Subjects", Allowed: "AllowedSubjects", Noun: "subject",
	Valid: subject.Validate,
	Allow: func(pats []string) []error {
		if _, err := subject.NewAllowList(pats); err != nil {
			return []error{err}
		}
		return nil
	}}

// options translates c (already validated) into connection options: reconnect forever, and no
// reconnect buffer, so that a publish while disconnected fails at once instead of being sent on the
// next connection after records that were lost with the old one (see Sink.Send on order per key).
func (c Config) options(handlers ...nats.Option) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(c.Name), nats.Timeout(c.ConnectTimeout), nats.ReconnectWait(c.ReconnectWait),
		nats.MaxReconnects(-1), nats.ReconnectBufSize(-1), nats.PingInterval(10 * time.Second), nats.MaxPingsOutstanding(3),
	}
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats: config: NKeySeedFile: %w", err)
		}
		opts = append(opts, o)
	}
	if c.TLS.Enable || c.hasTLSURL() {
		tc, err := c.TLS.build()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	return append(opts, handlers...), nil
}

func (c Config) hasTLSURL() bool {
	for _, u := range c.URLs {
		if strings.HasPrefix(u, "tls://") {
			return true
		}
	}
	return false
}

func (t TLSConfig) files() tlsconfig.Files {
	return tlsconfig.Files{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
}

func (t TLSConfig) build() (*tls.Config, error) {
	tc, err := t.files().Build("")
	if err != nil {
		return nil, fmt.Errorf("nats: config: %w", err)
	}
	return tc, nil
}

// redact drops user info from a server URL, for errors and logs.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
