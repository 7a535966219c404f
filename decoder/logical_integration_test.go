package decoder

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// pgMessages collects what the real server sends: logical messages by content, and the rows.
type pgMessages struct {
	tx, nonTx, maybe []string
	rows             int
	lastEnd          pglogrepl.LSN
}

func (p *pgMessages) Begin(TxInfo) error        { return nil }
func (p *pgMessages) Insert(Row) error          { p.rows++; return nil }
func (p *pgMessages) Commit(c CommitInfo) error { p.lastEnd = c.EndLSN; return nil }
func (p *pgMessages) done() bool                { return slices.Contains(p.tx, "last") }
func (p *pgMessages) Message(m LogicalMessage) error {
	s := string(m.Content)
	switch {
	case !m.Transactional:
		p.nonTx = append(p.nonTx, m.Prefix+"/"+s)
	case m.Prefix != "pgoutbox:app":
		p.tx = append(p.tx, m.Prefix+"/"+s)
	default:
		p.tx = append(p.tx, s)
		if m.MaybeRolledBack {
			p.maybe = append(p.maybe, s)
		}
	}
	return nil
}

// What PostgreSQL 14+ does with pg_logical_emit_message, read through pgoutput with messages 'true':
// a transactional message commits or rolls back with its transaction and with its savepoint; a
// non-transactional one is sent even when its transaction rolls back. With streaming, a message inside
// a rolled-back savepoint of a streamed transaction IS sent (pgoutput tags it with the top-level xid),
// and the decoder marks it MaybeRolledBack.
func TestIntegrationLogicalMessages(t *testing.T) {
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if db.QueryInt(t, `SELECT current_setting('server_version_num')::int`) < 140000 {
		t.Fatal("logical messages through pgoutput need PostgreSQL 14 or later")
	}
	db.Exec(t, `CREATE TABLE pkg_outbox (seq bigserial PRIMARY KEY, payload bytea NOT NULL)`)
	db.Exec(t, `CREATE PUBLICATION pgoutbox_pub FOR TABLE pkg_outbox WITH (publish = 'insert')`)
	connect := func() *pgconn.PgConn {
		conn, err := pgconn.Connect(ctx, db.ReplicationConnString()+"&logical_decoding_work_mem=64kB")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	type slot struct {
		name      string
		conn      *pgconn.PgConn
		args      []string
		streaming bool
	}
	common := []string{"publication_names 'pgoutbox_pub'", "binary 'true'", "messages 'true'"}
	slots := []*slot{
		{name: "msg_v1_" + pgtest.RandomSuffix(), args: append([]string{"proto_version '1'"}, common...)},
		{name: "msg_v2_" + pgtest.RandomSuffix(), args: append([]string{"proto_version '2'", "streaming 'on'"}, common...), streaming: true},
	}
	for _, s := range slots {
		s.conn = connect()
		if _, err := pglogrepl.CreateReplicationSlot(ctx, s.conn, s.name, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Temporary: true}); err != nil {
			t.Fatalf("create slot: %v", err)
		}
	}
	emit := func(tx bool, content string) string {
		return fmt.Sprintf(`SELECT pg_logical_emit_message(%v, 'pgoutbox:app', '%s');`, tx, content)
	}
	ins := func(n int) string {
		return fmt.Sprintf(`INSERT INTO pkg_outbox (payload) SELECT decode('%s', 'hex') FROM generate_series(1, %d);`, strings.Repeat("ab", 200), n)
	}
	db.Exec(t, `BEGIN; `+emit(true, "keep-1")+` SAVEPOINT a; `+emit(true, "savepoint")+ins(1)+` ROLLBACK TO SAVEPOINT a; `+emit(true, "keep-2")+` COMMIT;`)
	db.Exec(t, `BEGIN; `+emit(true, "rolled-back")+ins(1)+` ROLLBACK;`)
	db.Exec(t, `BEGIN; `+emit(false, "non-transactional")+` ROLLBACK;`)
	db.Exec(t, `BEGIN; SAVEPOINT a; `+emit(true, "savepoint-only")+` ROLLBACK TO SAVEPOINT a; COMMIT;`)
	db.Exec(t, `BEGIN; `+emit(true, "big-before")+ins(2000)+` SAVEPOINT s; `+emit(true, "big-savepoint")+ins(2000)+
		` ROLLBACK TO SAVEPOINT s; `+emit(true, "big-after")+ins(10)+` COMMIT;`)
	db.Exec(t, `SELECT pg_logical_emit_message(true, 'other', 'x');`)
	db.Exec(t, `BEGIN; `+emit(true, "last")+ins(1)+` COMMIT;`)
	committed := []string{"keep-1", "keep-2", "big-before", "big-after", "other/x", "last"}

	for _, s := range slots {
		t.Run(s.name[:6], func(t *testing.T) {
			d, err := New(Config{Streaming: s.streaming, SpillDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := pglogrepl.StartReplication(ctx, s.conn, s.name, 0, pglogrepl.StartReplicationOptions{PluginArgs: s.args}); err != nil {
				t.Fatalf("start replication: %v", err)
			}
			got := &pgMessages{}
			streamAborts := receiveUntil(t, ctx, s.conn, d, got)
			if want := 2000 + 10; got.rows != want { // the rows committed before the message "last"
				t.Errorf("%d rows, want %d", got.rows, want)
			}
			if !slices.Equal(got.nonTx, []string{"pgoutbox:app/non-transactional"}) {
				t.Errorf("non-transactional messages %q, want the one of the rolled-back transaction", got.nonTx)
			}
			// Every committed message comes, in commit order; nothing rolled back comes unmarked.
			var unmarked, kept []string
			for _, m := range got.tx {
				if slices.Contains(committed, m) {
					kept = append(kept, m)
				}
				if !slices.Contains(got.maybe, m) {
					unmarked = append(unmarked, m)
				}
			}
			if !slices.Equal(kept, committed) {
				t.Fatalf("committed messages received %q, want %q", kept, committed)
			}
			for _, m := range unmarked {
				if !slices.Contains(committed, m) {
					t.Fatalf("message %q of a rolled-back transaction or savepoint received unmarked", m)
				}
			}
			if !s.streaming && !slices.Equal(got.tx, committed) {
				t.Fatalf("not streamed: received %q, want exactly the committed messages %q", got.tx, committed)
			}
			// Precision: the parent's rows after "big-before" prove it is not the savepoint's.
			for _, m := range got.maybe {
				if slices.Contains(committed, m) {
					t.Errorf("committed message %q marked maybe-rolled-back", m)
				}
			}
			if s.streaming && streamAborts == 0 {
				t.Fatal("no Stream Abort of the big transaction's savepoint: was it streamed?")
			}
			t.Logf("transactional messages %q; marked maybe-rolled-back %q; %d Stream Abort messages", got.tx, got.maybe, streamAborts)
		})
	}
}

// receiveUntil decodes what conn sends into h until h has the message "last"; it returns the number of
// Stream Abort messages.
func receiveUntil(t *testing.T, ctx context.Context, conn *pgconn.PgConn, d *Decoder, h *pgMessages) int {
	t.Helper()
	aborts := 0
	for !h.done() {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		msg, err := conn.ReceiveMessage(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("receive after messages %q: %v", h.tx, err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			t.Fatalf("unexpected message %T", msg)
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err != nil {
				t.Fatal(err)
			}
			if ka.ReplyRequested {
				if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: h.lastEnd}); err != nil {
					t.Fatal(err)
				}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Clone(xld.WALData)
			if len(data) > 0 && data[0] == 'A' {
				aborts++
			}
			if err := d.Decode(data, h); err != nil {
				t.Fatalf("decode %q: %v", data[0], err)
			}
		}
	}
	return aborts
}
