// Package pgtest gives each test an isolated database on a real PostgreSQL with wal_level=logical.
//
// The server comes from, in order:
//  1. PGOUTBOX_TEST_DATABASE_URL (for example from `scripts/postgres.sh up`);
//  2. testcontainers-go's postgres module (postgres:17, wal_level=logical) when a Docker engine answers;
//  3. otherwise the test is skipped with a message saying how to get one — except under CI=true,
//     where a missing integration dependency fails the test.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// EnvURL names the environment variable that points the tests at a running server.
const EnvURL = "PGOUTBOX_TEST_DATABASE_URL"

// DB is an isolated database created for one test and dropped (with its replication slots) when it ends.
type DB struct {
	// Name is the database name.
	Name string
	// ConnString connects to the database (regular connection).
	ConnString string
	// Pool is a pool on the database, closed at cleanup.
	Pool *pgxpool.Pool
	// ServerURL connects to the cluster's maintenance database (postgres).
	ServerURL string
}

// SkipOrFail skips the test with msg, or fails it when running under CI=true, where every
// integration test must run.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("integration dependency missing under CI: "+format, args...)
	}
	t.Skipf(format, args...)
}

var (
	serverOnce sync.Once
	serverURL  string
	serverErr  error
)

// Server returns the URL of the maintenance database of the test cluster, or skips/fails the test.
func Server(t testing.TB) string {
	t.Helper()
	serverOnce.Do(func() { serverURL, serverErr = findServer() })
	if serverErr != nil {
		SkipOrFail(t, "no PostgreSQL for integration tests: %v. Run `eval \"$(scripts/postgres.sh up)\"` "+
			"or set %s to a server with wal_level=logical", serverErr, EnvURL)
	}
	return serverURL
}

func findServer() (string, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return u, nil
	}
	return startContainer()
}

func startContainer() (u string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("docker engine unavailable: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return "", fmt.Errorf("docker engine unavailable: %w", err)
	}
	defer provider.Close()
	if err := provider.Health(ctx); err != nil {
		return "", fmt.Errorf("docker engine unavailable: %w", err)
	}
	c, err := tcpostgres.Run(ctx, "postgres:17",
		tcpostgres.WithDatabase("postgres"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
		testcontainers.WithCmdArgs("-c", "wal_level=logical", "-c", "max_replication_slots=40",
			"-c", "max_wal_senders=40", "-c", "wal_sender_timeout=5s"),
	)
	if err != nil {
		return "", fmt.Errorf("start postgres container: %w", err)
	}
	return c.ConnectionString(ctx, "sslmode=disable")
}

// New creates a fresh database for t on the test cluster and drops it when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	return newOn(t, Server(t))
}

// NewDB creates a fresh database on the private cluster c, dropped when t ends.
func (c *Cluster) NewDB(t testing.TB) *DB {
	t.Helper()
	return newOn(t, c.URL)
}

// NewFailoverDB creates a fresh database on primary, reached through a multi-host URL listing primary
// and its standbys (MultiHostURL): its ConnString, Pool and cleanup follow whichever is the primary.
func NewFailoverDB(t testing.TB, primary *Cluster, standbys ...*Cluster) *DB {
	t.Helper()
	return newOn(t, MultiHostURL("postgres", append([]*Cluster{primary}, standbys...)...))
}

func newOn(t testing.TB, server string) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	name := "pgoutbox_test_" + RandomSuffix()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", redact(server), err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	connString, err := WithDatabase(server, name)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, connString)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	db := &DB{Name: name, ConnString: connString, Pool: pool, ServerURL: server}
	t.Cleanup(func() { db.drop(t) })
	return db
}

func (db *DB) drop(t testing.TB) {
	db.Pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, db.ServerURL)
	if err != nil {
		t.Errorf("pgtest: cleanup connect: %v", err)
		return
	}
	defer admin.Close(ctx)
	// Terminate walsenders and drop the slots of this database, then the database itself.
	_, _ = admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
		WHERE database = $1 AND active_pid IS NOT NULL`, db.Name)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE database = $1 AND NOT active`, db.Name)
		var left int
		_ = admin.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, db.Name).Scan(&left)
		if left == 0 || time.Now().After(deadline) {
			break
		}
		_, _ = admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NOT NULL`, db.Name)
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db.Name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("pgtest: drop database %s: %v", db.Name, err)
	}
}

// ReplicationConnString returns the database's connection string with replication=database.
func (db *DB) ReplicationConnString() string {
	u, err := url.Parse(db.ConnString)
	if err != nil {
		return db.ConnString + " replication=database"
	}
	q := u.Query()
	q.Set("replication", "database")
	u.RawQuery = q.Encode()
	return u.String()
}

// Exec runs sql on the database and fails the test on error.
func (db *DB) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: exec %q: %v", firstLine(sql), err)
	}
}

// QueryInt runs a query returning one integer and fails the test on error.
func (db *DB) QueryInt(t testing.TB, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("pgtest: query %q: %v", firstLine(sql), err)
	}
	return n
}

// SetServerSetting runs ALTER SYSTEM SET name = value and reloads the configuration; the previous
// value is restored when t ends. The setting is cluster-wide: tests using it must not run in parallel
// with tests that depend on the default.
func (db *DB) SetServerSetting(t testing.TB, name, value string) {
	t.Helper()
	ctx := context.Background()
	var old string
	if err := db.Pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&old); err != nil {
		t.Fatalf("pgtest: read setting %s: %v", name, err)
	}
	set := func(v string) error {
		if _, err := db.Pool.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET %s = '%s'", pgx.Identifier{name}.Sanitize(),
			strings.ReplaceAll(v, "'", "''"))); err != nil {
			return err
		}
		_, err := db.Pool.Exec(ctx, "SELECT pg_reload_conf()")
		return err
	}
	if err := set(value); err != nil {
		t.Fatalf("pgtest: set %s: %v", name, err)
	}
	t.Cleanup(func() { _ = set(old) })
	// pg_reload_conf is asynchronous: give the postmaster a moment to signal backends.
	time.Sleep(200 * time.Millisecond)
}

// WithDatabase returns connString pointed at database name.
func WithDatabase(connString, name string) (string, error) {
	u, err := url.Parse(connString)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("pgtest: %s must be a postgres:// URL", EnvURL)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// RandomSuffix returns 12 random lowercase hex characters, valid in slot and database names.
func RandomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func redact(connString string) string {
	u, err := url.Parse(connString)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + "…"
	}
	return s
}
