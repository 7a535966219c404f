// Package natstest gives tests a real NATS server with JetStream: the one scripts/nats.sh started
// ([URL], from PGOUTBOX_TEST_NATS_URL), or an in-process server of the same pinned version for
// fault-path unit tests that must stop and start it ([Start]). It creates uniquely named streams and
// reads them back.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/testenv"
)

// EnvURL names the environment variable that points tests at a running server.
const EnvURL = "PGOUTBOX_TEST_NATS_URL"

// URL returns the URL of the real NATS server for t, or skips t (fails it under CI=true) when
// PGOUTBOX_TEST_NATS_URL is unset.
func URL(t testing.TB) string {
	t.Helper()
	return testenv.Endpoint(t, EnvURL, "NATS server", `svc=$(scripts/nats.sh up) && eval "$svc"`)
}

// Own starts a nats-server for t alone with scripts/nats.sh, in a state dir of its own (port, JetStream
// store), for tests that kill or restart the real binary; it is removed when t ends. It skips or fails
// t as URL does.
func Own(t testing.TB) *testenv.Script {
	t.Helper()
	URL(t)
	return testenv.StartScript(t, "nats.sh", "PGOUTBOX_NATS_DIR", EnvURL, "nats.pid")
}

var unsafe = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// Name returns a name unique to this test run, derived from t.Name(), usable as a stream name and as a
// subject token.
func Name(t testing.TB) string { return testenv.Name(t, "_", unsafe) }

// Connect returns a JetStream context on url; the connection is closed when t ends.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// CreateStream creates a file-backed stream taking subjects, with cfg's other settings (Name and
// Subjects are filled in; Name when empty), and deletes it when t ends. It returns the stream name.
func CreateStream(t testing.TB, url string, cfg jetstream.StreamConfig, subjects ...string) string {
	t.Helper()
	_, js := Connect(t, url)
	if cfg.Name == "" {
		cfg.Name = Name(t)
	}
	cfg.Subjects = subjects
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("natstest: create stream %s for %v: %v", cfg.Name, subjects, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, cfg.Name)
	})
	return cfg.Name
}

// ReadAll returns every message of stream in stream order (an ordered consumer from the first
// sequence up to the last one stored when it was called).
func ReadAll(ctx context.Context, js jetstream.JetStream, stream string) ([]jetstream.Msg, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("stream %s: ordered consumer: %w", stream, err)
	}
	var out []jetstream.Msg
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("stream %s: fetch: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, m)
			if md, err := m.Metadata(); err == nil && md.Sequence.Stream >= last {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("stream %s: fetch: %w", stream, err)
		}
		if n == 0 {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("stream %s: read %d messages, then nothing before sequence %d", stream, len(out), last)
		}
	}
}

// Server is an in-process nats-server with JetStream, for fault-path tests that stop and restart it.
type Server struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// Start runs an in-process server with JetStream on a free loopback port, storing in a temp dir of t;
// edit, when given, changes its options first (max_payload, …). It is shut down when t ends.
func Start(t testing.TB, edit func(*server.Options)) *Server {
	t.Helper()
	opts := server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, ServerName: "natstest"}
	if edit != nil {
		edit(&opts)
	}
	s := &Server{t: t, opts: opts}
	s.start()
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := server.NewServer(&s.opts)
	if err != nil {
		s.t.Fatalf("natstest: new server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatalf("natstest: server not ready")
	}
	s.srv = srv
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port // a restart keeps the port
}

// URL is the server's client URL.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Shutdown stops the server (its store stays, for Restart).
func (s *Server) Shutdown() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
}

// Restart starts the server again on the same port with the same store.
func (s *Server) Restart() {
	s.t.Helper()
	s.start()
}
