package outbox_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/replication"
)

// TestLongestSchemaWorksEndToEnd: a schema of names.MaxSchemaLen (54) bytes migrates and streams with its
// default slot and publication (63 bytes each); one byte more is refused by the library and the
// replication package alike, with the same limit.
func TestLongestSchemaWorksEndToEnd(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	long := "Long_" + pgtest.RandomSuffix()   // unique: the default slot name is cluster-wide
	long += strings.Repeat("x", 54-len(long)) // names.MaxSchemaLen: "pgoutbox_" + 54 bytes = 63
	if err := outbox.Migrate(ctx, db.Pool, long); err != nil {
		t.Fatalf("migrate a %d-byte schema: %v", len(long), err)
	}
	if got := deliverThrough(t, db.Pool, db.Pool, long); got != 20 {
		t.Fatalf("delivered %d of 20 messages", got)
	}
	if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", names.Slot(long)); n != 1 {
		t.Errorf("slot %s not found", names.Slot(long))
	}

	tooLong := long + "x"
	_, startErr := outbox.Start(ctx, db.Pool, tooLong, nil)
	_, schemaErr := outbox.GetSchemaSQL(tooLong)
	cfg := replication.Config{Schema: tooLong}
	for what, err := range map[string]error{
		"GetSchemaSQL": schemaErr,
		"Migrate":      outbox.Migrate(ctx, db.Pool, tooLong),
		"Enqueue":      outbox.Enqueue(ctx, tooLong, db.Pool, outbox.Message{Destination: outbox.EventBus}),
		"Start":        startErr,
		"replication":  cfg.Validate(),
	} {
		if err == nil || !strings.Contains(err.Error(), "55 bytes, the limit is 54") {
			t.Errorf("%s of a 55-byte schema: %v, want an error naming the limit 54", what, err)
		}
	}
}

// TestStartRejectsABadInstanceID names the limit before anything connects.
func TestStartRejectsABadInstanceID(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	for id, want := range map[string]string{
		strings.Repeat("i", 55): "55 bytes, the limit is 54",
		"pod 1":                 "printable ASCII without spaces",
	} {
		_, err := outbox.Start(context.Background(), db.Pool, schema, nil, outbox.WithSlotName(slotName()), outbox.WithInstanceID(id))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "WithInstanceID") {
			t.Errorf("WithInstanceID(%q): %v, want an error naming %q", id, err, want)
		}
	}
}

const envLongHostDB = "PGOUTBOX_TEST_LONG_HOSTNAME_DB"

// TestStartWithALongHostname: the default instance id (host name and pid, the application_name of the
// relay's connections) stays valid when the host name is 64 bytes long, the most Linux allows. The
// test runs itself again in a UTS namespace (unshare) whose host name is that long.
func TestStartWithALongHostname(t *testing.T) {
	if url := os.Getenv(envLongHostDB); url != "" {
		longHostnameRelay(t, url)
		return
	}
	t.Parallel()
	if out, err := exec.Command("unshare", "--uts", "true").CombinedOutput(); err != nil {
		pgtest.SkipOrFail(t, "cannot create a UTS namespace to set a long host name (unshare --uts, needs root): %v %s", err, out)
	}
	db := migrated(t)
	host := strings.Repeat("h", 52) + ".example.com"
	cmd := exec.Command("unshare", "--uts", "sh", "-c", `hostname "$1" && exec "$2" -test.run '^TestStartWithALongHostname$' -test.count 1 -test.v`,
		"sh", host, os.Args[0])
	cmd.Env = append(os.Environ(), envLongHostDB+"="+db.ConnString)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestStartWithALongHostname") {
		t.Fatalf("relay on a host named %q (%d bytes): %v\n%s", host, len(host), err, out)
	}
}

func longHostnameRelay(t *testing.T, url string) {
	host, err := os.Hostname()
	if err != nil || len(host) != 64 {
		t.Fatalf("host name %q (%v): want the 64-byte one", host, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // after the relay's Stop (cleanups run last-in first-out)
	if got := deliverThrough(t, pool, pool, schema, outbox.WithSlotName(slotName())); got != 20 {
		t.Fatalf("delivered %d of 20 messages", got)
	}
	var app string
	err = pool.QueryRow(ctx, `SELECT application_name FROM pg_stat_replication WHERE application_name LIKE 'pgoutbox-hhhh%'`).Scan(&app)
	if err != nil || len(app) > 63 || !strings.HasSuffix(app, "-"+strconv.Itoa(os.Getpid())) {
		t.Fatalf("walsender application_name %q (%v): want pgoutbox-<cut host>-<hash>-<pid>, at most 63 bytes", app, err)
	}
	t.Logf("application_name %q", app)
}
