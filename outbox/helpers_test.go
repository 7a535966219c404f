package outbox_test

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/outbox"
)

func mustV7() string { return uuid.Must(uuid.NewV7()).String() }

func pgxpoolNew(conn string) (*pgxpool.Pool, error) { return pgxpool.New(context.Background(), conn) }

// Destinations the tests use besides outbox.EventBus.
const (
	commandQueue outbox.Destination = "command_queue"
	mailman      outbox.Destination = "mailman"
)
