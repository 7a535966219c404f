package replication_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/replication"
)

// proxy forwards TCP connections to the test server; cut freezes the existing ones (nothing
// forwarded, nothing closed), like a network partition. New connections work normally.
type proxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	pipes    []*pipe
}

type pipe struct {
	mu     sync.Mutex
	frozen bool
	conns  [2]net.Conn
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream}
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pp := range p.pipes {
			_ = pp.conns[0].Close()
			_ = pp.conns[1].Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			pp := &pipe{conns: [2]net.Conn{c, u}}
			p.mu.Lock()
			p.pipes = append(p.pipes, pp)
			p.mu.Unlock()
			go pp.copy(u, c)
			go pp.copy(c, u)
		}
	}()
	return p
}

func (pp *pipe) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		pp.mu.Lock()
		frozen := pp.frozen
		pp.mu.Unlock()
		if frozen {
			return // drop the data and stop reading: the peer sees silence, not a close
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = dst.Close()
			}
			return
		}
	}
}

// cut freezes every connection open now.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pp := range p.pipes {
		pp.mu.Lock()
		pp.frozen = true
		pp.mu.Unlock()
	}
}

func (p *proxy) connString(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	u, err := url.Parse(db.ConnString)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// A network cut: the stream hears nothing, gives up after ReadTimeout, reconnects, terminates the
// walsender it left behind (same application_name) and resumes from the confirmed position.
func TestStreamNetworkCutReadTimeout(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	u, _ := url.Parse(db.ConnString)
	p := newProxy(t, u.Host)
	slot := newSlot()
	cfg := testConfig(slot, "cut")
	cfg.ReadTimeout = 2 * time.Second

	s, err := replication.New(p.connString(t, db), cfg, replication.WithLogger(zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{s: s, out: make(chan []replication.Event, 16), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- s.Run(ctx, r.out) }()
	t.Cleanup(func() { cancel(); <-r.done; r.done <- nil })
	r.waitState(t, replication.Streaming, 30*time.Second)

	insert(t, db, 1, "unconfirmed")
	c := r.nextCommit(t, 10*time.Second)
	oldPID := activePID(t, db, slot)

	began := time.Now()
	p.cut()
	if ev, _ := r.nextMessage(t, 20*time.Second); ev.Kind != replication.Disconnected {
		t.Fatalf("first event after the cut: %v, want Disconnected", ev.Kind)
	}
	r.waitState(t, replication.Streaming, 10*time.Second)
	// Well before wal_sender_timeout (5s) would have freed the slot after ReadTimeout (2s).
	t.Logf("reconnected %s after the cut", time.Since(began))
	if newPID := activePID(t, db, slot); newPID == oldPID || newPID == 0 {
		t.Fatalf("walsender %d after the cut, was %d", newPID, oldPID)
	}
	_, msg := r.nextMessage(t, 10*time.Second)
	if b, ok := msg.(*pglogrepl.BeginMessage); !ok || b.FinalLSN != c.CommitLSN {
		t.Fatalf("after reconnect: %T, want Begin of the unconfirmed transaction", msg)
	}
}

func TestStreamProtocolV2(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	cfg := testConfig(newSlot(), "v2")
	cfg.Streaming = true
	r := start(t, db, cfg)
	r.waitState(t, replication.Streaming, 30*time.Second)
	insert(t, db, 2, "v2")
	inserts := 0
	for {
		ev := r.next(t, 10*time.Second, func(ev replication.Event) bool { return ev.Kind == replication.XLogData })
		m, err := pglogrepl.ParseV2(ev.Data, false)
		if err != nil {
			t.Fatal(err)
		}
		switch m.(type) {
		case *pglogrepl.InsertMessageV2:
			inserts++
		case *pglogrepl.CommitMessage:
			if inserts != 2 {
				t.Fatalf("%d inserts", inserts)
			}
			return
		}
	}
}

// The publication name is quoted in START_REPLICATION's options.
func TestStreamQuotedPublicationName(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	const pub = `Odd "pub", it's`
	db.Exec(t, `CREATE PUBLICATION "Odd ""pub"", it's" FOR TABLE app.pkg_outbox WITH (publish = 'insert')`)
	cfg := testConfig(newSlot(), "quoted")
	cfg.Publication = pub
	r := start(t, db, cfg)
	r.waitState(t, replication.Streaming, 30*time.Second)
	insert(t, db, 1, "q")
	r.nextCommit(t, 10*time.Second)
}

func TestStreamFatalConnectErrorsHidePassword(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	tests := []struct {
		name   string
		mutate func(*url.URL)
	}{
		{"unknown database", func(u *url.URL) { u.Path = "/no_such_db_" + pgtest.RandomSuffix() }},
		{"unknown role", func(u *url.URL) { u.User = url.UserPassword("no_such_role", "s3cret-pw") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, _ := url.Parse(db.ConnString)
			if _, ok := u.User.Password(); !ok {
				u.User = url.UserPassword(u.User.Username(), "s3cret-pw")
			}
			tt.mutate(u)
			core, logs := observer.New(zapcore.DebugLevel)
			s, err := replication.New(u.String(), testConfig(newSlot(), "fatal"), replication.WithLogger(zap.New(core)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = s.Run(ctx, make(chan []replication.Event))
			if err == nil || ctx.Err() != nil {
				t.Fatalf("Run returned %v (ctx %v), want a fatal error", err, ctx.Err())
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Fatalf("error leaks the password: %v", err)
			}
			for _, e := range logs.All() {
				line := e.Message
				for k, v := range e.ContextMap() {
					line += " " + k + "=" + strings.TrimSpace(strings.ReplaceAll(toString(v), "\n", " "))
				}
				if strings.Contains(line, "s3cret-pw") {
					t.Fatalf("log leaks the password: %s", line)
				}
			}
			t.Log(err)
		})
	}
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case error:
		return v.Error()
	}
	return ""
}
