package outbox_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// TestStartUsesTheConnConfigSetInCode: on a server that accepts only TLS with scram-sha-256, a pool
// whose TLS settings and password were set in code (the URL says sslmode=disable and has no password)
// streams; the replication connections use the pool's configuration, not its connection string. The
// URL's pool_max_conns (a pool setting, not a server parameter) does not reach the server, a second
// relay on the slot stands by over the same configuration, and the password appears in no log line.
func TestStartUsesTheConnConfigSetInCode(t *testing.T) {
	t.Parallel()
	tc := pgtest.NewTLSCluster(t)
	for _, mode := range []string{"password on the config", "password from BeforeConnect"} {
		t.Run(mode, func(t *testing.T) {
			db := tc.NewDB(t)
			if err := outbox.Migrate(context.Background(), db.Pool, schema); err != nil {
				t.Fatal(err)
			}
			pcfg, err := pgxpool.ParseConfig(fmt.Sprintf("postgres://%s@%s:%s/%s?sslmode=disable&pool_max_conns=3",
				tc.User, tc.Host, tc.Port, db.Name))
			if err != nil {
				t.Fatal(err)
			}
			pcfg.ConnConfig.TLSConfig = &tls.Config{RootCAs: tc.RootCAs, ServerName: tc.ServerName, MinVersion: tls.VersionTLS12}
			var hooked atomic.Int64
			if mode == "password on the config" {
				pcfg.ConnConfig.Password = tc.Password
			} else {
				pcfg.BeforeConnect = func(_ context.Context, c *pgx.ConnConfig) error {
					hooked.Add(1)
					c.Password = tc.Password
					return nil
				}
			}
			pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			before := hooked.Load()
			logs, core := observedLogger()
			slot := slotName()
			got := deliverThrough(t, pool, db.Pool, schema, outbox.WithSlotName(slot), outbox.WithLogger(logs),
				outbox.WithInstanceID("tls-"+pgtest.RandomSuffix()))
			if got != 20 {
				t.Fatalf("delivered %d of 20 messages", got)
			}
			// A second relay on the slot finds it taken over the same connections and stands by.
			standby, err := outbox.Start(context.Background(), pool, schema, nil, outbox.WithSlotName(slot),
				outbox.WithLogger(logs), outbox.WithInstanceID("tls-standby-"+pgtest.RandomSuffix()))
			if err != nil {
				t.Fatalf("standby: %v", err)
			}
			if st := standby.State(); st != outbox.StateStandby {
				t.Errorf("second relay on the slot: state %s, want standby", st)
			}
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			if err := standby.Stop(sctx); err != nil {
				t.Errorf("stop the standby: %v", err)
			}
			if mode != "password on the config" && hooked.Load() == before {
				t.Error("the pool's BeforeConnect hook was not called for the relay's connections")
			}
			assertNoSecret(t, core, tc.Password)
		})
	}
}

// TestStartWithPoolParamsInURL: pool_* parameters of a pgxpool URL configure the pool and are not
// sent to the server by the relay's connections.
func TestStartWithPoolParamsInURL(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	pool, err := pgxpool.New(context.Background(), db.ConnString+"&pool_max_conns=4&pool_min_conns=1&pool_max_conn_lifetime=1h")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if got := deliverThrough(t, pool, db.Pool, schema, outbox.WithSlotName(slotName())); got != 20 {
		t.Fatalf("delivered %d of 20 messages", got)
	}
}

// deliverThrough starts a relay on pool for schema (failing the test if it does not stream within a
// minute), enqueues 20 messages through enq and returns how many were delivered within a minute.
func deliverThrough(t *testing.T, pool *pgxpool.Pool, enq outbox.Execer, schema string, opts ...outbox.Option) int {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]bool{}
	all := make(chan struct{})
	handlers := map[outbox.Destination]outbox.Handler{outbox.EventBus: func(_ context.Context, m outbox.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if seen[m.ID] = true; len(seen) == 20 {
			close(all)
		}
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	timeout := time.AfterFunc(time.Minute, cancel) // Start's ctx is the relay's lifetime: cancel only if Start hangs
	opts = append([]outbox.Option{outbox.WithStatusInterval(100 * time.Millisecond)}, opts...)
	r, err := outbox.Start(ctx, pool, schema, handlers, opts...)
	if !timeout.Stop() || err != nil {
		t.Fatalf("outbox.Start (URL %s): %v", pool.Config().ConnString(), err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = r.Stop(sctx)
	})
	msgs := make([]outbox.Message, 20)
	for i := range msgs {
		msgs[i] = outbox.Message{Destination: outbox.EventBus, Key: fmt.Sprint(i % 3), Payload: []byte("x")}
	}
	if err := outbox.Enqueue(context.Background(), schema, enq, msgs...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
	}
	mu.Lock()
	defer mu.Unlock()
	return len(seen)
}

func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return zap.New(core), logs
}

// assertNoSecret fails when secret appears in a log message or field.
func assertNoSecret(t *testing.T, logs *observer.ObservedLogs, secret string) {
	t.Helper()
	if logs.Len() == 0 {
		t.Fatal("no log lines to check")
	}
	for _, e := range logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, secret) {
			t.Errorf("a log line holds the password: %s", line)
		}
	}
}
