package outbox_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

func TestGooseMigration(t *testing.T) {
	t.Parallel()
	tdb := pgtest.New(t)
	ctx := context.Background()
	db, err := sql.Open("pgx", tdb.ConnString)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, nil, goose.WithGoMigrations(outboxMigration(1, "app")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Enqueue(ctx, "app", tdb.Pool, outbox.Message{Destination: outbox.EventBus}); err != nil {
		t.Fatal(err)
	}
	if _, err := provider.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if n := tdb.QueryInt(t, "SELECT count(*) FROM pg_tables WHERE schemaname = 'app'"); n != 0 {
		t.Fatalf("%d tables left after goose down", n)
	}
	if _, err := provider.Up(ctx); err != nil {
		t.Fatal(err)
	}
}
