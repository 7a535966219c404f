package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// peerChild is a relay running as a child process: the daemon or the Debezium peer.
type peerChild struct {
	name   string
	cmd    *exec.Cmd
	start  time.Time
	exited chan struct{}
	err    error // of Wait, once exited is closed

	mu     sync.Mutex
	stderr []byte   // tail
	stdout []string // lines (the Debezium peer prints JSON lines)
}

// startPeer starts p reading slot of schema into topic.
func (b *bench) startPeer(ctx context.Context, env *peersEnv, p peer, schema, slot, topic string) (*peerChild, error) {
	var cmd *exec.Cmd
	switch p.Kind {
	case kindPgoutbox:
		cmd = exec.CommandContext(ctx, env.pgoutbox, "run", "--schema", schema, "--slot", slot,
			"--route", string(benchDest)+"=kafka:"+topic, "--kafka-brokers", strings.Join(b.brokers, ","),
			"--http-listen", "127.0.0.1:0", "--instance-id", "peers-"+slot, "--log-level", "warn",
			"--set", "create_slot=false", "--set", "initial_snapshot=false")
		cmd.Env = append(os.Environ(), "PGOUTBOX_DATABASE_URL="+b.dbURL) // not in argv: it may hold a password
	case kindDebezium:
		props, err := debeziumProps(b.dbURL, b.brokers, p, schema, slot, topic, filepath.Join(env.dir, slot+".offsets"))
		if err != nil {
			return nil, err
		}
		file := filepath.Join(env.dir, slot+".properties")
		if err := os.WriteFile(file, []byte(props), 0o600); err != nil {
			return nil, err
		}
		cmd = exec.CommandContext(ctx, env.java, "-cp", env.classpath, "io.github.pgoutbox.bench.OutboxBench", file)
	default:
		return nil, fmt.Errorf("peer %s: kind %q is not a relay", p.Name, p.Kind)
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	c := &peerChild{name: p.Name, cmd: cmd, exited: make(chan struct{})}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errR, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	c.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.readLines(outR) }()
	go func() { defer wg.Done(); c.readTail(errR) }()
	go func() {
		wg.Wait()
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *peerChild) readLines(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		c.mu.Lock()
		if len(c.stdout) < 1000 {
			c.stdout = append(c.stdout, sc.Text())
		}
		c.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

func (c *peerChild) readTail(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		c.mu.Lock()
		c.stderr = append(c.stderr, buf[:n]...)
		if len(c.stderr) > 64<<10 {
			c.stderr = c.stderr[len(c.stderr)-32<<10:]
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// failure describes an early exit, with the tail of the child's stderr.
func (c *peerChild) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Errorf("%s exited: %v: %s", c.name, c.err, tail(string(c.stderr), 3000))
}

// lines returns the stdout lines that start with prefix.
func (c *peerChild) lines(prefix string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.stdout {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// usage reads the child's CPU seconds (user+system, all threads) and peak RSS (VmHWM) from /proc.
func (c *peerChild) usage() (cpu float64, hwm int64, err error) {
	pid := c.cmd.Process.Pid
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name in parentheses: state is field 3, utime 14 and stime 15 (1-based).
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	const clkTck = 100 // USER_HZ on Linux
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		var kb int64
		if n, _ := fmt.Sscanf(line, "VmHWM: %d kB", &kb); n == 1 {
			hwm = kb * 1024
		}
	}
	return (ut + st) / clkTck, hwm, nil
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 30 s).
func (c *peerChild) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// debeziumProps is the Debezium peer's properties file: engine, connector, Outbox Event Router and
// (prefix producer.) the Kafka producer.
func debeziumProps(dbURL string, brokers []string, p peer, schema, slot, topic, offsets string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", fmt.Errorf("parse database URL: %w", err)
	}
	if u.Hostname() == "" || u.User == nil {
		return "", errors.New("the Debezium peer needs a postgres://user@host:port/db URL in PGOUTBOX_TEST_DATABASE_URL")
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	pw, _ := u.User.Password()
	sslmode := u.Query().Get("sslmode")
	if sslmode == "" {
		sslmode = "prefer"
	}
	m := map[string]string{
		"name":                         "pgoutbox-peer-" + slot,
		"connector.class":              "io.debezium.connector.postgresql.PostgresConnector",
		"offset.storage":               "org.apache.kafka.connect.storage.FileOffsetBackingStore",
		"offset.storage.file.filename": offsets,
		"offset.flush.interval.ms":     "1000",
		"database.hostname":            u.Hostname(),
		"database.port":                port,
		"database.user":                u.User.Username(),
		"database.password":            pw,
		"database.dbname":              strings.TrimPrefix(u.Path, "/"),
		"database.sslmode":             sslmode,
		"topic.prefix":                 "pgoutbox-peer",
		"plugin.name":                  "pgoutput",
		"slot.name":                    slot,
		// The pgoutbox publication (the outbox table, inserts only): both relays decode the same stream,
		// and Debezium creates nothing (its default would be a FOR ALL TABLES publication).
		"publication.name":                                    "pgoutbox_" + schema,
		"publication.autocreate.mode":                         "disabled",
		"table.include.list":                                  schema + ".pkg_outbox",
		"snapshot.mode":                                       "no_data",
		"header.converter.schemas.enable":                     "false",
		"transforms":                                          "outbox",
		"transforms.outbox.type":                              "io.debezium.transforms.outbox.EventRouter",
		"transforms.outbox.table.field.event.id":              "id",
		"transforms.outbox.table.field.event.key":             "key",
		"transforms.outbox.table.field.event.payload":         "payload",
		"transforms.outbox.table.fields.additional.placement": "type:header:type,destination:header:destination",
		"transforms.outbox.route.by.field":                    "destination",
		"transforms.outbox.route.topic.replacement":           topic,
		"producer.bootstrap.servers":                          strings.Join(brokers, ","),
		"producer.acks":                                       "all",
		"producer.enable.idempotence":                         "true",
		"producer.linger.ms":                                  "10",
	}
	for k, v := range p.Debezium {
		m[k] = v
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%s\n", k, propEscape(m[k]))
	}
	return sb.String(), nil
}

// propEscape escapes a value for a Java properties file.
func propEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`, "=", `\=`, ":", `\:`, "#", `\#`, "!", `\!`)
	s = r.Replace(s)
	if strings.HasPrefix(s, " ") {
		s = `\` + s
	}
	return s
}
