package replication_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// The stream bounds reads with the socket's read deadline and no context. This pins the pgx
// behaviour it relies on: a timed-out ReceiveMessage leaves the connection usable (pgconn only closes
// it on non-timeout errors and keeps a partially read message).
func TestReceiveTimeoutKeepsReplicationConnection(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	slot := newSlot()
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, db.ReplicationConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'pgoutbox_app'"},
	}); err != nil {
		t.Fatal(err)
	}
	timeouts := 0
	for i := 0; i < 50; i++ { // many reads cut short, some likely mid-message
		_ = conn.Conn().SetReadDeadline(time.Now().Add(time.Duration(i%3) * time.Microsecond))
		_, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if !pgconn.Timeout(err) {
				t.Fatalf("read %d: %v", i, err)
			}
			timeouts++
		}
		if conn.IsClosed() {
			t.Fatalf("connection closed after a read timeout (read %d)", i)
		}
	}
	if timeouts == 0 {
		t.Fatal("no read timed out")
	}
	insert(t, db, 1, "after timeouts")
	_ = conn.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			t.Fatalf("receive after timeouts: %v", err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		m, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			t.Fatalf("garbled message after timeouts: %v", err)
		}
		if _, ok := m.(*pglogrepl.CommitMessage); ok {
			return
		}
	}
}
