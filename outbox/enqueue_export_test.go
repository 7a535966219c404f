package outbox

import "context"

// MaxValuesRows is the largest batch Enqueue writes with INSERT … VALUES (for the outbox_test package).
const MaxValuesRows = maxValuesRows

// EnqueueUnnest is Enqueue forced to the INSERT … SELECT FROM unnest form whatever the batch size, so that
// tests can compare what both forms write.
func (e Enqueuer) EnqueueUnnest(ctx context.Context, tx Execer, msgs ...Message) error {
	return e.enqueue(ctx, tx, msgs, 0)
}
