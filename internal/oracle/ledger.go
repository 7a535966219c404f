package oracle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// T is the part of [testing.TB] the oracle reports through.
type T interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// DB is the database the ledger's transactions write to and its checks read from; *pgxpool.Pool
// satisfies it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Sent is what the ledger knows of one committed message.
type Sent struct {
	Key     string
	N       int           // position of the message within its key, in commit order
	Upper   pglogrepl.LSN // WAL insert position read after the COMMIT returned: >= its end LSN; 0 unknown (no I4 check)
	Payload []byte
	At      time.Time // when the commit was recorded
}

// Counts sums up a ledger.
type Counts struct {
	Committed, RolledBack, Unknown int
	FailedTx                       int // transactions that failed other than by a rollback on purpose
}

// Ledger records every message a test committed, rolled back, or lost track of (indeterminate: the
// connection broke before the COMMIT's result was known). Safe for concurrent use.
type Ledger struct {
	db     DB
	schema string

	mu         sync.Mutex
	committed  map[string]Sent
	rolledBack map[string]bool
	unknown    map[string]bool
	next       map[string]int // per key: the position of its next committed message
	failedTx   int
	lastErr    error

	transports []outbox.Transport // UseTransports; set before any Commit
	turn       atomic.Uint64
}

// UseTransports makes Commit write with these transports in turn, one per Enqueue call (a transaction
// writes its first half, its savepoint and its second half with three calls), so that one transaction
// may mix them. Call it before the first Commit. Default: the Table transport only.
func (l *Ledger) UseTransports(ts ...outbox.Transport) { l.transports = ts }

// enqueue writes msgs with the next transport in turn.
func (l *Ledger) enqueue(ctx context.Context, tx outbox.Execer, msgs ...outbox.Message) error {
	e := outbox.Enqueuer{Schema: l.schema}
	if n := uint64(len(l.transports)); n > 0 {
		e.Transport = l.transports[l.turn.Add(1)%n]
	}
	return e.Enqueue(ctx, tx, msgs...)
}

// New returns an empty ledger for the outbox in schema of db. db may be nil for a ledger that is only
// told what happened (Record…) and judged (Check): it then knows no dead letters.
func New(db DB, schema string) *Ledger {
	return &Ledger{db: db, schema: schema, committed: map[string]Sent{}, rolledBack: map[string]bool{},
		unknown: map[string]bool{}, next: map[string]int{}}
}

// RecordCommitted records msgs as committed, in this order, by a transaction whose end lies at or
// below upper (0: unknown).
func (l *Ledger) RecordCommitted(upper pglogrepl.LSN, msgs ...outbox.Message) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range msgs {
		l.committed[m.ID] = Sent{Key: m.Key, N: l.next[m.Key], Upper: upper, Payload: m.Payload, At: now}
		l.next[m.Key]++
	}
}

// RecordRolledBack records msgs as rolled back: none of them may ever be delivered.
func (l *Ledger) RecordRolledBack(msgs ...outbox.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range msgs {
		l.rolledBack[m.ID] = true
	}
}

// RecordUnknown records msgs as indeterminate: the oracle neither requires nor forbids them.
func (l *Ledger) RecordUnknown(msgs ...outbox.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range msgs {
		l.unknown[m.ID] = true
	}
}

// Counts returns the ledger's sizes.
func (l *Ledger) Counts() Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Counts{Committed: len(l.committed), RolledBack: len(l.rolledBack), Unknown: len(l.unknown), FailedTx: l.failedTx}
}

// Lookup returns what the ledger knows of committed message id.
func (l *Ledger) Lookup(id string) (Sent, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.committed[id]
	return s, ok
}

// CommittedIDs returns the ids of every committed message, in no particular order.
func (l *Ledger) CommittedIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.committed))
	for id := range l.committed {
		ids = append(ids, id)
	}
	return ids
}

// Failures describes the failed transactions, for notes and logs.
func (l *Ledger) Failures() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failuresLocked()
}

func (l *Ledger) failuresLocked() string {
	if l.failedTx == 0 {
		return "no failed transactions"
	}
	return fmt.Sprintf("%d failed transactions (%d indeterminate messages), last: %v", l.failedTx, len(l.unknown), l.lastErr)
}

// errRollback makes pgx.BeginFunc roll back on purpose.
var errRollback = errors.New("oracle: rollback on purpose")

// Commit enqueues msgs in one transaction (half before and half after a savepoint holding sp that is
// rolled back, when sp is not empty) and records the outcome; rollback rolls the whole transaction back
// on purpose. It returns the transaction's error (nil for a rollback on purpose), or the error of reading
// the WAL position after a commit (the messages are then recorded as committed without one).
//
// The messages of sp are recorded as rolled back whatever happens: the transaction either commits
// without them or does not commit at all. Any other failure leaves msgs indeterminate.
func (l *Ledger) Commit(ctx context.Context, msgs, sp []outbox.Message, rollback bool) error {
	err := pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) error {
		if err := l.enqueue(ctx, tx, msgs[:len(msgs)/2]...); err != nil {
			return err
		}
		if len(sp) > 0 {
			s, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if err := l.enqueue(ctx, s, sp...); err != nil {
				return err
			}
			if err := s.Rollback(ctx); err != nil {
				return err
			}
		}
		if err := l.enqueue(ctx, tx, msgs[len(msgs)/2:]...); err != nil {
			return err
		}
		if rollback {
			return errRollback
		}
		return nil
	})
	l.RecordRolledBack(sp...)
	switch {
	case errors.Is(err, errRollback):
		l.RecordRolledBack(msgs...)
		return nil
	case err != nil:
		// Only a failed COMMIT is truly indeterminate, but any failure is treated so.
		l.RecordUnknown(msgs...)
		l.mu.Lock()
		l.failedTx++
		l.lastErr = err
		l.mu.Unlock()
		return err
	}
	upper, lsnErr := l.walInsertLSN(ctx)
	l.RecordCommitted(upper, msgs...)
	return lsnErr
}

// walInsertLSN reads pg_current_wal_insert_lsn(): every transaction committed before lies below it.
func (l *Ledger) walInsertLSN(ctx context.Context) (pglogrepl.LSN, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var s string
	if err := l.db.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("read the WAL insert position after a commit: %w", err)
	}
	return pglogrepl.ParseLSN(s)
}

// DeadLetters returns the dead-letter table: id → error. A ledger without a database has none.
func (l *Ledger) DeadLetters(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	if l.db == nil {
		return out, nil
	}
	rows, err := l.db.Query(ctx, "SELECT id::text, error FROM "+l.table("pkg_outbox_dead_letter"))
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, e string
		if err := rows.Scan(&id, &e); err != nil {
			return nil, fmt.Errorf("read dead letters: %w", err)
		}
		out[id] = e
	}
	return out, rows.Err()
}

// table returns the quoted name of an outbox table in the ledger's schema.
func (l *Ledger) table(name string) string { return pgx.Identifier{l.schema, name}.Sanitize() }
