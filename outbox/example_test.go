package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// outboxMigration is how an application puts the outbox schema into its goose migrations.
func outboxMigration(version int64, schema string) *goose.Migration {
	return goose.NewGoMigration(version,
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			q, err := outbox.GetSchemaSQL(schema)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, q)
			return err
		}},
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			q, err := outbox.GetTeardownSQL(schema)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, q)
			return err
		}},
	)
}

// Example shows the whole library flow: the schema in a goose migration, then Enqueue inside the
// application's own transaction, next to its business write.
func Example() {
	ctx := context.Background()
	dsn := os.Getenv("DATABASE_URL")

	db, err := sql.Open("pgx", dsn)
	if err != nil {
		panic(err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, nil,
		goose.WithGoMigrations(outboxMigration(1, "app")))
	if err != nil {
		panic(err)
	}
	if _, err := provider.Up(ctx); err != nil {
		panic(err)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		panic(err)
	}
	defer conn.Close(ctx)
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE orders SET status = 'placed' WHERE id = $1", 42); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, "app", tx, outbox.Message{
			Destination: outbox.EventBus,
			Route:       "orders",
			Key:         "order-42",
			Type:        "OrderPlaced",
			Payload:     []byte(`{"id":42}`),
		})
	})
	fmt.Println(err)
}

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
