package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"gopkg.in/yaml.v3"
)

// processKeys are the keys of the process as a whole: one HTTP server, one logger, one shutdown. An
// entry of `outboxes` cannot set them.
var processKeys = []string{"http", "log", "drain_timeout", "outboxes"}

// outboxNameRE is what an outbox name may be: it labels metrics and is typed after --outbox.
var outboxNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$`)

// outboxSource is what resolveOutboxes builds the outboxes from.
type outboxSource struct {
	file    string
	entries *yaml.Node // the `outboxes` list, nil without one
	set     []string   // "outboxes.<name>.<key>=value" settings from flags, applied over their outbox
	env     []string
}

// takeKey removes key from the mapping n and returns its value (nil when absent).
func takeKey(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v := n.Content[i+1]
			n.Content = append(n.Content[:i:i], n.Content[i+2:]...)
			return v
		}
	}
	return nil
}

// resolveOutboxes finishes a configuration whose top level is loaded: without an `outboxes` list the
// top level is the one outbox (named by `name`, else its schema); with one, each entry is decoded over
// a copy of the top level, then every outbox is resolved and validated on its own, and the outboxes
// against each other.
func (c Config) resolveOutboxes(src outboxSource) (Config, error) {
	if src.entries == nil {
		if len(src.set) > 0 {
			k, _, _ := strings.Cut(src.set[0], "=")
			return c, keyError(k, "the configuration has no outboxes list: set the key without the outboxes.<name> prefix")
		}
		if err := c.resolve(src.env); err != nil {
			return c, err
		}
		one := c.clone()
		if one.Name == "" {
			one.Name = one.Schema
		}
		if err := validateOutboxName("name", one.Name); err != nil {
			return c, err
		}
		c.Outboxes = []Config{one}
		return c, nil
	}
	if c.Name != "" {
		return c, keyError("name", "%q at the top level with an outboxes list: name each outbox in its entry", c.Name)
	}
	list, err := c.decodeOutboxes(src)
	if err != nil {
		return c, err
	}
	var errs [][]error
	for i := range list {
		errs = append(errs, leafErrors(list[i].resolve(src.env)))
	}
	if err := errors.Join(outboxErrors(list, errs), checkDistinct(list)); err != nil {
		return c, err
	}
	c.Outboxes = list
	return c, nil
}

// decodeOutboxes decodes each entry of the `outboxes` list over a copy of the top level, then applies
// the flags addressed to it (outboxes.<name>.<key>=value).
func (c Config) decodeOutboxes(src outboxSource) ([]Config, error) {
	d := decoder{file: src.file, merge: true}
	n := src.entries
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		return nil, d.errAt(n, "outboxes", "want a non-empty list of outboxes (each with a name), got %s", shape(n))
	}
	var list []Config
	seen := map[string]bool{}
	for i, e := range n.Content {
		key := fmt.Sprintf("outboxes[%d]", i)
		if e.Kind != yaml.MappingNode {
			return nil, d.errAt(e, key, "want a mapping of keys, got %s", shape(e))
		}
		for j := 0; j+1 < len(e.Content); j += 2 {
			if k := e.Content[j].Value; slices.Contains(processKeys, k) {
				return nil, d.errAt(e.Content[j], key+"."+k, "a key of the whole process: set it at the top level")
			}
		}
		o := c.clone()
		o.Name = ""
		if err := d.decode(e, reflect.ValueOf(&o).Elem(), key); err != nil {
			return nil, err
		}
		if o.Name == "" {
			return nil, d.errAt(e, key+".name", "required: each outbox needs a name (it labels its metrics and is given to --outbox)")
		}
		if err := validateOutboxName(key+".name", o.Name); err != nil {
			return nil, err
		}
		if seen[o.Name] {
			return nil, d.errAt(e, key+".name", "%q names two outboxes", o.Name)
		}
		seen[o.Name] = true
		list = append(list, o)
	}
	return list, applyOutboxSets(list, src.set)
}

// applyOutboxSets applies "outboxes.<name>.<key>=value" to the outbox named.
func applyOutboxSets(list []Config, set []string) error {
	for _, kv := range set {
		k, v, _ := strings.Cut(kv, "=")
		name, key, ok := strings.Cut(strings.TrimPrefix(k, "outboxes."), ".")
		i := slices.IndexFunc(list, func(o Config) bool { return o.Name == name })
		switch {
		case !ok || key == "":
			return keyError(k, "want outboxes.<name>.<key>=value")
		case i < 0:
			return keyError(k, "no outbox named %q (configured: %s)", name, strings.Join(Names(list), ", "))
		case slices.Contains(processKeys, strings.Split(key, ".")[0]):
			return keyError(k, "a key of the whole process: set it without the outboxes.<name> prefix")
		}
		if err := Set(&list[i], key, v, "flag"); err != nil {
			return err
		}
	}
	return nil
}

func validateOutboxName(key, name string) error {
	if !outboxNameRE.MatchString(name) {
		return keyError(key, "%q: an outbox name is 1 to 63 of A-Z, a-z, 0-9, _, . and -, not starting with . or -", name)
	}
	return nil
}

// Names returns the names of the outboxes, in configuration order.
func Names(list []Config) []string {
	out := make([]string, 0, len(list))
	for _, o := range list {
		out = append(out, o.Name)
	}
	return out
}

// Outbox returns the outbox named name; name may be empty when there is only one.
func (c *Config) Outbox(name string) (Config, error) {
	if name == "" {
		if len(c.Outboxes) == 1 {
			return c.Outboxes[0], nil
		}
		return Config{}, fmt.Errorf("%w: the configuration has %d outboxes (%s): choose one with --outbox NAME",
			ErrInvalid, len(c.Outboxes), strings.Join(Names(c.Outboxes), ", "))
	}
	for _, o := range c.Outboxes {
		if o.Name == name {
			return o, nil
		}
	}
	return Config{}, fmt.Errorf("%w: --outbox %q: no such outbox (configured: %s)", ErrInvalid, name, strings.Join(Names(c.Outboxes), ", "))
}

// leafErrors splits a joined error into its parts.
func leafErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leafErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// outboxErrors reports each outbox's errors naming the outbox; an error every outbox has (a key they
// all inherit from the top level) is reported once, as it is.
func outboxErrors(list []Config, errs [][]error) error {
	count := map[string]int{}
	for _, es := range errs {
		for _, e := range es {
			count[e.Error()]++
		}
	}
	var out []error
	once := map[string]bool{}
	for i, es := range errs {
		for _, e := range es {
			switch s := e.Error(); {
			case count[s] < len(list):
				out = append(out, fmt.Errorf("outbox %s: %w", list[i].Name, e))
			case !once[s]:
				once[s] = true
				out = append(out, e)
			}
		}
	}
	return errors.Join(out...)
}

// checkDistinct refuses two outboxes that would take the same slot of one server (slots are
// per cluster) or stream the same schema of one database (every message delivered twice).
func checkDistinct(list []Config) error {
	var errs []error
	slots, schemas := map[string]string{}, map[string]string{}
	for _, o := range list {
		server, db, ok := serverOf(o.Database.URL)
		if !ok {
			continue
		}
		sk := server + " " + o.SlotName()
		if prev, dup := slots[sk]; dup {
			errs = append(errs, keyError("outboxes", "%s and %s both use slot %s on %s: give one its own slot", prev, o.Name, o.SlotName(), server))
		}
		slots[sk] = o.Name
		dk := server + "/" + db + " " + o.Schema
		if prev, dup := schemas[dk]; dup {
			errs = append(errs, keyError("outboxes", "%s and %s both stream schema %s of database %s on %s: each message would be delivered twice",
				prev, o.Name, o.Schema, db, server))
		}
		schemas[dk] = o.Name
	}
	return errors.Join(errs...)
}

// serverOf returns the host:port and the database a connection string points at (no I/O).
func serverOf(dsn string) (server, db string, ok bool) {
	if dsn == "" {
		return "", "", false
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return "", "", false
	}
	cc := pc.ConnConfig
	return net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))), cc.Database, true
}

// clone returns a copy of c that shares no map, slice or route with it, without Outboxes.
func (c Config) clone() Config {
	o := c
	o.Outboxes = nil
	o.Kafka.Brokers = slices.Clone(c.Kafka.Brokers)
	o.NATS.URLs = slices.Clone(c.NATS.URLs)
	if c.Routes != nil {
		o.Routes = make(map[string]Route, len(c.Routes))
		for dest, r := range c.Routes {
			o.Routes[dest] = r.clone()
		}
	}
	return o
}

func (r Route) clone() Route {
	if r.Kafka != nil {
		k := *r.Kafka
		k.AllowedTopics = slices.Clone(k.AllowedTopics)
		r.Kafka = &k
	}
	if r.Webhook != nil {
		w := *r.Webhook
		w.Headers = maps.Clone(w.Headers)
		r.Webhook = &w
	}
	if r.Stdout != nil {
		s := *r.Stdout
		r.Stdout = &s
	}
	if r.NATS != nil {
		n := *r.NATS
		n.AllowedSubjects = slices.Clone(n.AllowedSubjects)
		r.NATS = &n
	}
	if r.RabbitMQ != nil {
		q := *r.RabbitMQ
		q.AllowedRoutingKeys = slices.Clone(q.AllowedRoutingKeys)
		r.RabbitMQ = &q
	}
	return r
}
