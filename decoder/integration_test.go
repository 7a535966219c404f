package decoder

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// pgRows is a Handler collecting rows by column name, as the relay does.
type pgRows struct {
	notes    []string // note column of each row, in order
	extras   int      // rows with a non-NULL extra column
	payloads int      // rows whose payload has the expected bytes
	commits  int
	lastEnd  pglogrepl.LSN
}

func (p *pgRows) Begin(TxInfo) error { return nil }
func (p *pgRows) Insert(row Row) error {
	note, payload, extra := row.Relation.Index("note"), row.Relation.Index("payload"), row.Relation.Index("extra")
	if note < 0 || payload < 0 {
		return fmt.Errorf("relation %s lacks note or payload: %+v", row.Relation.Name, row.Relation.Columns)
	}
	if row.Kinds[payload] != KindBinary || row.Kinds[note] != KindBinary {
		return fmt.Errorf("kinds %q, want binary", row.Kinds)
	}
	p.notes = append(p.notes, string(row.Values[note]))
	if bytes.Equal(row.Values[payload], bytes.Repeat([]byte{0xab}, 200)) {
		p.payloads++
	}
	if extra >= 0 && row.Values[extra] != nil {
		p.extras++
	}
	return nil
}
func (p *pgRows) Commit(c CommitInfo) error { p.commits++; p.lastEnd = c.EndLSN; return nil }

func TestIntegrationPostgres(t *testing.T) {
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db.Exec(t, `CREATE TABLE pkg_outbox (seq bigserial PRIMARY KEY, id uuid NOT NULL DEFAULT gen_random_uuid(),
		payload bytea NOT NULL, note text NOT NULL)`)
	db.Exec(t, `CREATE PUBLICATION pgoutbox_pub FOR TABLE pkg_outbox WITH (publish = 'insert')`)

	// A small logical_decoding_work_mem makes the server stream the big transactions.
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
	slots := []*slot{
		{name: "dec_v1_" + pgtest.RandomSuffix(), args: []string{"proto_version '1'", "publication_names 'pgoutbox_pub'", "binary 'true'"}},
		{name: "dec_v2_" + pgtest.RandomSuffix(), args: []string{"proto_version '2'", "publication_names 'pgoutbox_pub'", "binary 'true'", "streaming 'on'"}, streaming: true},
	}
	for _, s := range slots {
		s.conn = connect()
		if _, err := pglogrepl.CreateReplicationSlot(ctx, s.conn, s.name, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Temporary: true}); err != nil {
			t.Fatalf("create slot: %v", err)
		}
	}

	payload := `decode('` + strings.Repeat("ab", 200) + `', 'hex')`
	ins := func(note string, n int) string {
		return fmt.Sprintf(`INSERT INTO pkg_outbox (payload, note) SELECT %s, '%s' FROM generate_series(1, %d);`, payload, note, n)
	}
	db.Exec(t, ins("small", 3))
	db.Exec(t, `ALTER TABLE pkg_outbox ADD COLUMN extra text`)
	db.Exec(t, `INSERT INTO pkg_outbox (payload, note, extra) VALUES (`+payload+`, 'altered', 'x')`)
	db.Exec(t, `BEGIN; `+ins("big", 2000)+` SAVEPOINT a; `+ins("aborted", 500)+` ROLLBACK TO SAVEPOINT a; `+ins("after", 10)+` COMMIT;`)
	db.Exec(t, `BEGIN; `+ins("rolledback", 2000)+` ROLLBACK;`)
	db.Exec(t, ins("last", 1))
	const wantRows = 3 + 1 + 2000 + 10 + 1

	for _, s := range slots {
		t.Run(s.name[:6], func(t *testing.T) {
			spill := t.TempDir()
			d, err := New(Config{Streaming: s.streaming, MemoryLimit: 32 << 10, SpillDir: spill})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := pglogrepl.StartReplication(ctx, s.conn, s.name, 0, pglogrepl.StartReplicationOptions{PluginArgs: s.args}); err != nil {
				t.Fatalf("start replication: %v", err)
			}
			rows := &pgRows{}
			var streamStarts, streamAborts, maxSpillFiles int
			for len(rows.notes) == 0 || rows.notes[len(rows.notes)-1] != "last" {
				rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
				msg, err := s.conn.ReceiveMessage(rctx)
				rcancel()
				if err != nil {
					t.Fatalf("receive after %d rows: %v", len(rows.notes), err)
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
						if err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: rows.lastEnd}); err != nil {
							t.Fatal(err)
						}
					}
				case pglogrepl.XLogDataByteID:
					xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
					if err != nil {
						t.Fatal(err)
					}
					data := bytes.Clone(xld.WALData) // WALData aliases the read buffer
					if len(data) > 0 && data[0] == 'S' {
						streamStarts++
					}
					if len(data) > 0 && data[0] == 'A' {
						streamAborts++
					}
					if err := d.Decode(data, rows); err != nil {
						t.Fatalf("decode %q: %v", data[0], err)
					}
					maxSpillFiles = max(maxSpillFiles, d.Stats().SpillFiles)
				}
			}
			if len(rows.notes) != wantRows || rows.payloads != wantRows || rows.extras != 1 {
				t.Fatalf("got %d rows (%d payloads intact, %d with extra), want %d", len(rows.notes), rows.payloads, rows.extras, wantRows)
			}
			for _, n := range rows.notes {
				if n == "aborted" || n == "rolledback" {
					t.Fatalf("delivered a row of a rolled-back (sub)transaction: %q", n)
				}
			}
			if s.streaming && (streamStarts == 0 || maxSpillFiles == 0) {
				t.Fatalf("streaming: %d Stream Start messages, at most %d spill files; want both > 0", streamStarts, maxSpillFiles)
			}
			if st := d.Stats(); st != (Stats{}) {
				t.Fatalf("stats after the last commit: %+v", st)
			}
			if n := countFiles(t, spill); n != 0 {
				t.Fatalf("%d spill files left", n)
			}
			t.Logf("%d rows, %d commits, %d Stream Start and %d Stream Abort messages, max %d spill files",
				len(rows.notes), rows.commits, streamStarts, streamAborts, maxSpillFiles)
		})
	}
}
