package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"gopkg.in/yaml.v3"
)

// EnvPrefix starts the environment variable of every key.
const EnvPrefix = "PGOUTBOX_"

// Source lists where configuration comes from. Later sources override earlier ones:
// defaults < File < Env < Set.
type Source struct {
	// File is a YAML file path; empty means none.
	File string
	// Env is the environment as os.Environ returns it; only PGOUTBOX_<KEY> variables of known keys are read.
	Env []string
	// Set holds "key=value" settings from command-line flags, applied in order.
	Set []string
}

// Load reads the sources in order, resolves the secret files, and validates the result. With an
// `outboxes:` list, every entry is decoded over the top level (file, environment and flags), so that a
// key set at the top level applies to every outbox that does not set it; Outboxes lists the result (one
// implicit outbox without the list).
func Load(src Source) (Config, error) {
	c := Default()
	var entries *yaml.Node
	if src.File != "" {
		f, err := os.Open(src.File)
		if err != nil {
			return c, fmt.Errorf("%w: read config file: %w", ErrInvalid, err)
		}
		entries, err = decodeYAML(f, src.File, &c)
		_ = f.Close()
		if err != nil {
			return c, err
		}
	}
	if err := applyEnv(&c, src.Env); err != nil {
		return c, err
	}
	var perOutbox []string
	for _, kv := range src.Set {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, fmt.Errorf("%w: setting %q: want key=value", ErrInvalid, kv)
		}
		if strings.HasPrefix(strings.TrimSpace(k), "outboxes.") {
			perOutbox = append(perOutbox, strings.TrimSpace(k)+"="+v)
			continue
		}
		if err := Set(&c, strings.TrimSpace(k), v, "flag"); err != nil {
			return c, err
		}
	}
	return c.resolveOutboxes(outboxSource{file: src.File, entries: entries, set: perOutbox, env: src.Env})
}

// Parse decodes YAML from r (name is used in errors) over the defaults, without PGOUTBOX_* variables or
// flags (a webhook route's signing_secret_env is read from the process environment), and validates.
func Parse(r io.Reader, name string) (Config, error) {
	c := Default()
	entries, err := decodeYAML(r, name, &c)
	if err != nil {
		return c, err
	}
	return c.resolveOutboxes(outboxSource{file: name, entries: entries, env: os.Environ()})
}

// resolve reads the secret files and the webhook secrets, then validates: what every outbox's
// configuration goes through once its sources are merged.
func (c *Config) resolve(environ []string) error {
	if err := c.resolveSecrets(); err != nil {
		return err
	}
	if err := c.resolveWebhookSecrets(environ); err != nil {
		return err
	}
	return c.Validate()
}

// decodeYAML decodes the document in r into c. The top-level `outboxes` list is taken out of the
// document and returned undecoded: its entries are decoded over the finished top level.
func decodeYAML(r io.Reader, name string, c *Config) (outboxes *yaml.Node, err error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrInvalid, name, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: parse %s: %w", ErrInvalid, name, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	top := doc.Content[0]
	outboxes = takeKey(top, "outboxes")
	d := decoder{file: name}
	return outboxes, d.decode(top, reflect.ValueOf(c).Elem(), "")
}

type decoder struct {
	file string
	// merge lets a mapping replace the entries a map already holds (an outbox over the top level).
	merge bool
}

func (d decoder) errAt(n *yaml.Node, key, format string, args ...any) error {
	if key == "" {
		key = "(top level)"
	}
	return fmt.Errorf("%w: %s: %s (%s line %d)", ErrInvalid, key, fmt.Sprintf(format, args...), d.file, n.Line)
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

// decode sets v from n, the way yaml.v3 with KnownFields(true) would, but naming the full key path in
// every error: unknown keys, wrong shapes and unparsable values.
func (d decoder) decode(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	isNull := n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	switch {
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		if isNull {
			return nil // "stdout:" with no value enables the route
		}
		return d.decode(n, v.Elem(), key)
	case v.Kind() == reflect.Struct:
		if isNull {
			return nil
		}
		return d.decodeStruct(n, v, key)
	case v.Kind() == reflect.Map:
		if isNull {
			return nil
		}
		return d.decodeMap(n, v, key)
	case v.Kind() == reflect.Slice:
		if isNull {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		return d.decodeSlice(n, v, key)
	default:
		if n.Kind != yaml.ScalarNode {
			return d.errAt(n, key, "want a single value, got %s", shape(n))
		}
		return setScalar(v, n.Value, func(format string, args ...any) error { return d.errAt(n, key, format, args...) })
	}
}

// decodeStruct sets the fields of struct v from the mapping n, by their yaml tags.
func (d decoder) decodeStruct(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind != yaml.MappingNode {
		return d.errAt(n, key, "want a mapping of keys, got %s", shape(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i].Value, n.Content[i+1]
		if seen[k] {
			return d.errAt(n.Content[i], join(key, k), "duplicate key")
		}
		seen[k] = true
		f, ok := fieldByTag(v, k)
		if !ok {
			return d.errAt(n.Content[i], join(key, k), "unknown key (known keys here: %s)", strings.Join(tags(v.Type()), ", "))
		}
		if err := d.decode(val, f, join(key, k)); err != nil {
			return err
		}
	}
	return nil
}

// decodeMap adds the entries of the mapping n to map v.
func (d decoder) decodeMap(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind != yaml.MappingNode {
		return d.errAt(n, key, "want a mapping, got %s", shape(n))
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if v.MapIndex(reflect.ValueOf(k)).IsValid() && !d.merge {
			return d.errAt(n.Content[i], join(key, k), "duplicate key")
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		if err := d.decode(n.Content[i+1], elem, join(key, k)); err != nil {
			return err
		}
		v.SetMapIndex(reflect.ValueOf(k), elem)
	}
	return nil
}

// decodeSlice sets slice v from the list n, or from a scalar (a comma-separated value).
func (d decoder) decodeSlice(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind == yaml.ScalarNode {
		return setScalar(v, n.Value, func(format string, args ...any) error { return d.errAt(n, key, format, args...) })
	}
	if n.Kind != yaml.SequenceNode {
		return d.errAt(n, key, "want a list, got %s", shape(n))
	}
	out := reflect.MakeSlice(v.Type(), 0, len(n.Content))
	for i, item := range n.Content {
		elem := reflect.New(v.Type().Elem()).Elem()
		if err := d.decode(item, elem, fmt.Sprintf("%s[%d]", key, i)); err != nil {
			return err
		}
		out = reflect.Append(out, elem)
	}
	v.Set(out)
	return nil
}

func shape(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func fieldByTag(v reflect.Value, tag string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name == tag { // untagged: no key
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func tags(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" {
			out = append(out, name)
		}
	}
	return out
}

var (
	durationType = reflect.TypeFor[Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
	lsnType      = reflect.TypeFor[LSN]()
)

// setScalar parses raw into v according to v's type; fail builds the error naming the key.
func setScalar(v reflect.Value, raw string, fail func(format string, args ...any) error) error {
	switch v.Type() {
	case durationType:
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return fail("invalid duration %q (want e.g. 500ms, 5s, 2m, 24h)", raw)
		}
		v.SetInt(int64(d))
		return nil
	case byteSizeType:
		n, err := ParseByteSize(raw)
		if err != nil {
			return fail("%v", err)
		}
		v.SetInt(n)
		return nil
	case lsnType:
		if strings.TrimSpace(raw) == "" {
			v.SetUint(0)
			return nil
		}
		l, err := ParseLSN(raw)
		if err != nil {
			return fail("%v", err)
		}
		v.SetUint(uint64(l))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return fail("invalid boolean %q (want true or false)", raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
		if err != nil {
			return fail("invalid integer %q", raw)
		}
		v.SetInt(i)
	case reflect.Slice:
		var out []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		v.Set(reflect.ValueOf(out))
	case reflect.Pointer: // a route kind written as a single value: "stdout" enabled
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
	default:
		return fail("cannot be set from a single value")
	}
	return nil
}

var lsnRE = regexp.MustCompile(`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`)

// ParseLSN parses a WAL position such as "16/B374D848".
func ParseLSN(s string) (pglogrepl.LSN, error) {
	s = strings.TrimSpace(s)
	if !lsnRE.MatchString(s) {
		return 0, fmt.Errorf("invalid LSN %q (want two hex numbers separated by a slash, e.g. 0/16B3748)", s)
	}
	return pglogrepl.ParseLSN(s)
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}}

// ParseByteSize parses a byte count: a plain integer or one with a unit (B, KB, MB, GB, KiB, MiB, GiB).
func ParseByteSize(raw string) (int64, error) {
	s := strings.TrimSpace(raw)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 && mult != 1 {
		return 0, fmt.Errorf("invalid size %q (want bytes, or a number with KiB, MiB, GiB, KB, MB, GB)", raw)
	}
	return n * mult, nil
}

// Keys lists every key that can be set from the environment, with its variable name, sorted.
// Map-valued keys (routes, webhook headers) are file or --set only.
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			ft := t.Field(i).Type
			key := join(prefix, name)
			switch {
			case name == "": // no key (Outboxes, resolved secrets)
			case ft.Kind() == reflect.Map:
			case ft.Kind() == reflect.Struct:
				walk(ft, key)
			default:
				out = append(out, key)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	sort.Strings(out)
	return out
}

// EnvName returns the environment variable of key: PGOUTBOX_DELIVERY_MAX_ATTEMPTS for delivery.max_attempts.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func applyEnv(c *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	for _, key := range Keys() {
		if v, ok := env[EnvName(key)]; ok {
			if err := Set(c, key, v, "env "+EnvName(key)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Set sets one key (for example "delivery.max_attempts" or "routes.orders.kafka.topic") from a string;
// origin ("flag", "env PGOUTBOX_X") goes into errors.
func Set(c *Config, key, raw, origin string) error {
	if key == "" {
		return fmt.Errorf("%w: %s: empty key", ErrInvalid, origin)
	}
	parts := strings.Split(key, ".")
	return setPath(reflect.ValueOf(c).Elem(), parts, key, raw, origin)
}

func setPath(v reflect.Value, parts []string, key, raw, origin string) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s (%s)", ErrInvalid, key, fmt.Sprintf(format, args...), origin)
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		if len(parts) == 0 {
			return nil // enabling a route kind: routes.x.stdout=
		}
		v = v.Elem()
	}
	if len(parts) == 0 {
		if v.Kind() == reflect.Struct || v.Kind() == reflect.Map {
			return fail("is a section, set one of its keys")
		}
		return setScalar(v, raw, fail)
	}
	switch v.Kind() {
	case reflect.Struct:
		f, ok := fieldByTag(v, parts[0])
		if !ok {
			return fail("unknown key %q (known keys here: %s)", parts[0], strings.Join(tags(v.Type()), ", "))
		}
		return setPath(f, parts[1:], key, raw, origin)
	case reflect.Map:
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		mk := reflect.ValueOf(parts[0])
		elem := reflect.New(v.Type().Elem()).Elem()
		if old := v.MapIndex(mk); old.IsValid() {
			elem.Set(old)
		}
		if err := setPath(elem, parts[1:], key, raw, origin); err != nil {
			return err
		}
		v.SetMapIndex(mk, elem)
		return nil
	}
	return fail("unknown key: %q has no sub-keys", strings.Join(parts, "."))
}

// resolveSecrets reads database.url_file, database.password_file and kafka.sasl.password_file.
func (c *Config) resolveSecrets() error {
	read := func(key, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrInvalid, key, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	var err error
	if c.Database.URLFile != "" && c.Database.URL == "" {
		if c.Database.URL, err = read("database.url_file", c.Database.URLFile); err != nil {
			return err
		}
		c.Database.URLFile = ""
	}
	if c.Database.PasswordFile != "" && c.Database.Password == "" {
		if c.Database.Password, err = read("database.password_file", c.Database.PasswordFile); err != nil {
			return err
		}
		c.Database.PasswordFile = ""
	}
	if c.Kafka.SASL.PasswordFile != "" && c.Kafka.SASL.Password == "" {
		if c.Kafka.SASL.Password, err = read("kafka.sasl.password_file", c.Kafka.SASL.PasswordFile); err != nil {
			return err
		}
		c.Kafka.SASL.PasswordFile = ""
	}
	if err := c.resolveNATSSecrets(); err != nil {
		return err
	}
	return c.resolveRabbitMQSecrets()
}

// ErrNoDatabase is returned by DSN when no database URL is configured.
var ErrNoDatabase = errors.New("config: database.url is empty")

// ParseLSNValue returns the LSN as pglogrepl's type.
func ParseLSNValue(l LSN) pglogrepl.LSN { return pglogrepl.LSN(l) }
