package main

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Machine describes where the numbers were measured.
type Machine struct {
	NProc      int    `json:"nproc"`
	CPU        string `json:"cpu"`
	MemoryMB   int    `json:"memory_mb"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	PostgreSQL string `json:"postgresql"`
	PGSettings string `json:"pg_settings"`
	Kafka      string `json:"kafka"`
}

func describeMachine(ctx context.Context, adminURL string) Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version(), Kafka: kafkaVersion()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var kb int
			if n, _ := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); n == 1 {
				m.MemoryMB = kb / 1024
				break
			}
		}
		f.Close()
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if conn, err := pgx.Connect(ctx, adminURL); err == nil {
		_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&m.PostgreSQL)
		var s []string
		for _, name := range []string{"shared_buffers", "fsync", "synchronous_commit", "wal_level", "logical_decoding_work_mem", "max_wal_size"} {
			var v string
			if conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v) == nil {
				s = append(s, name+"="+v)
			}
		}
		m.PGSettings = strings.Join(s, ", ")
		conn.Close(ctx)
	}
	return m
}

// kafkaVersion reads the broker version scripts/kafka.sh pins (the broker does not report it).
func kafkaVersion() string {
	for _, dir := range []string{".", "..", "../.."} {
		b, err := os.ReadFile(filepath.Join(dir, "scripts/kafka/pom.xml"))
		if err != nil {
			continue
		}
		if m := regexp.MustCompile(`<kafka.version>([^<]+)</kafka.version>`).FindSubmatch(b); m != nil {
			return "Apache Kafka " + string(m[1]) + " (KRaft, single node, scripts/kafka.sh)"
		}
	}
	return "unknown"
}

// withDatabase returns connURL pointing at database db.
func withDatabase(connURL, db string) (string, error) {
	u, err := url.Parse(connURL)
	if err != nil {
		return "", fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + db
	return u.String(), nil
}

// withParam returns connURL with query parameter k=v.
func withParam(connURL, k, v string) (string, error) {
	u, err := url.Parse(connURL)
	if err != nil {
		return "", fmt.Errorf("parse database URL: %w", err)
	}
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20") // libpq-style URLs want %20, not +
	return u.String(), nil
}

// recreateDatabase drops database db (with its replication slots) and creates it again.
func recreateDatabase(ctx context.Context, adminURL, db string) error {
	if err := dropDatabase(ctx, adminURL, db); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect %s: %w", redactURL(adminURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	return nil
}

func dropDatabase(ctx context.Context, adminURL, db string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect %s: %w", redactURL(adminURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, db); err != nil {
		return fmt.Errorf("terminate walsenders of %s: %w", db, err)
	}
	for range 50 {
		var busy bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE database = $1 AND active)`, db).Scan(&busy); err != nil || !busy {
			break
		}
		if err := sleepCtx(ctx, 100e6); err != nil {
			return err
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, db); err != nil {
		return fmt.Errorf("drop slots of %s: %w", db, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", db, err)
	}
	return nil
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}
