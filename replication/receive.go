package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"
)

const (
	// batchLinger is the longest a received event waits for more before its batch is sent. A batch
	// that ends with a transaction's commit goes at once: the relay can deliver that transaction now.
	batchLinger = time.Millisecond
	// writeTimeout bounds one status update write.
	writeTimeout = 10 * time.Second
)

var (
	errReadTimeout = errors.New("replication: no message from the server within ReadTimeout")
	errStreamEnded = errors.New("replication: server ended the replication stream (CopyDone)")
)

// stream is the receive loop. It is the only user of conn. Reads wait on the socket's read deadline
// rather than a context: a timed-out read leaves pgconn's state intact (pgconn v5 only closes the
// connection on non-timeout errors and keeps partially read messages), and costs no per-message
// context. ctx cancellation interrupts a read by moving the deadline to now.
func (s *Stream) stream(ctx context.Context, conn *pgconn.PgConn, out chan<- []Event, sideErr <-chan error) (err error) {
	nc := conn.Conn()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Now()) })
	defer stop()
	defer func() {
		if ctx.Err() != nil { // shutting down: confirm the latest position
			ferr := s.finish(conn)
			s.mu.Lock()
			s.finalErr = ferr
			s.mu.Unlock()
		}
	}()

	now := time.Now()
	rc := &receiver{
		s: s, conn: conn, nc: nc, out: out, sideErr: sideErr, b: newBatcher(s.cfg.MaxBatch),
		lastRecv: now, nextStatus: now.Add(s.cfg.StatusInterval), probeAfter: s.cfg.ReadTimeout / 3,
	}
	for {
		if err := rc.step(ctx); err != nil {
			return err
		}
	}
}

// receiver is the state of one receive loop (stream): the batch being built and the loop's clocks.
type receiver struct {
	s       *Stream
	conn    *pgconn.PgConn
	nc      net.Conn
	out     chan<- []Event
	sideErr <-chan error

	b             *batcher
	lastRecv      time.Time     // when the server last sent something
	nextStatus    time.Time     // when the next status update is due
	batchDeadline time.Time     // when the batch being built must go
	readDeadline  time.Time     // the socket's read deadline as last set
	probeAfter    time.Duration // quiet this long, a status update asks for a keepalive
}

// step is one turn of the receive loop: the timers first, then the batch is handed on when it is
// due, else one message is read. Only an error ends the loop.
func (rc *receiver) step(ctx context.Context) error {
	now := time.Now()
	if err := rc.checkTimers(ctx, now); err != nil {
		return err
	}
	if rc.b.len() > 0 && (rc.b.full() || !now.Before(rc.batchDeadline)) {
		if err := rc.s.deliver(ctx, rc.conn, rc.out, rc.b.take(), rc.sideErr, &rc.nextStatus); err != nil {
			return err
		}
		rc.lastRecv = time.Now() // the read pause was ours, not the server's
		return nil
	}
	msg, err := rc.receive(ctx)
	if err != nil || msg == nil {
		return err
	}
	return rc.handle(ctx, msg)
}

// checkTimers sends a status update when one is due, ends a connection silent for ReadTimeout, and
// returns what the sidecar reported.
func (rc *receiver) checkTimers(ctx context.Context, now time.Time) error {
	s := rc.s
	if !now.Before(rc.nextStatus) {
		// Ask for a keepalive when the connection has been quiet, to tell a dead one from an idle one.
		if err := s.sendStatus(ctx, rc.conn, now.Sub(rc.lastRecv) >= rc.probeAfter); err != nil {
			return err
		}
		rc.nextStatus = now.Add(s.cfg.StatusInterval)
	}
	if now.Sub(rc.lastRecv) >= s.cfg.ReadTimeout {
		return fmt.Errorf("%w (%s)", errReadTimeout, s.cfg.ReadTimeout)
	}
	select {
	case err := <-rc.sideErr:
		return err
	default:
	}
	return nil
}

// receive reads one message, waiting at most until the next status update, the read timeout or the
// batch's deadline, whichever comes first. It returns a nil message and no error when that deadline
// passed first.
func (rc *receiver) receive(ctx context.Context) (pgproto3.BackendMessage, error) {
	dl := rc.nextStatus
	if t := rc.lastRecv.Add(rc.s.cfg.ReadTimeout); t.Before(dl) {
		dl = t
	}
	if rc.b.len() > 0 && rc.batchDeadline.Before(dl) {
		dl = rc.batchDeadline
	}
	if !dl.Equal(rc.readDeadline) {
		if err := rc.nc.SetReadDeadline(dl); err != nil {
			return nil, fmt.Errorf("set read deadline: %w", err)
		}
		rc.readDeadline = dl
	}
	if err := ctx.Err(); err != nil { // after SetReadDeadline: see AfterFunc in stream
		return nil, err
	}
	// context.Background: the deadline above bounds the read (a context here would cost a
	// watcher per message); ctx cancellation reaches it through the AfterFunc.
	msg, err := rc.conn.ReceiveMessage(context.Background())
	if err != nil {
		if pgconn.Timeout(err) {
			rc.readDeadline = time.Time{} // the AfterFunc may have moved it
			return nil, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("receive: %w", err)
	}
	rc.lastRecv = time.Now()
	return msg, nil
}

// handle acts on one message from the server.
func (rc *receiver) handle(ctx context.Context, msg pgproto3.BackendMessage) error {
	switch msg := msg.(type) {
	case *pgproto3.CopyData:
		return rc.copyData(ctx, msg.Data)
	case *pgproto3.ErrorResponse:
		return classifyServerError(pgconn.ErrorResponseToPgError(msg), rc.s.cfg.Publication)
	case *pgproto3.CopyDone:
		return errStreamEnded
	default:
		rc.s.log.Debug("ignoring message on the replication connection", zap.String("type", fmt.Sprintf("%T", msg)))
	}
	return nil
}

// copyData adds a keepalive or WAL data to the batch (answering a keepalive that asks for a reply).
// A batch is due batchLinger after its first event, or at once when it ends with a commit.
func (rc *receiver) copyData(ctx context.Context, data []byte) error {
	s := rc.s
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		s.lastServerWALEnd.Store(uint64(pkm.ServerWALEnd))
		rc.b.add(Event{Kind: Keepalive, ServerWALEnd: pkm.ServerWALEnd})
		if pkm.ReplyRequested {
			if err := s.sendStatus(ctx, rc.conn, false); err != nil {
				return err
			}
			rc.nextStatus = time.Now().Add(s.cfg.StatusInterval)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse XLogData: %w", err)
		}
		s.lastServerWALEnd.Store(uint64(xld.ServerWALEnd))
		rc.b.addData(xld)
		if isCommit(xld.WALData) {
			rc.batchDeadline = rc.lastRecv
			return nil
		}
	default:
		return nil
	}
	if rc.b.len() == 1 {
		rc.batchDeadline = rc.lastRecv.Add(batchLinger)
	}
	return nil
}

// deliver sends a batch on out. While the receiver is busy it keeps sending status updates, so the
// server's wal_sender_timeout does not end the connection.
func (s *Stream) deliver(ctx context.Context, conn *pgconn.PgConn, out chan<- []Event, batch []Event, sideErr <-chan error, nextStatus *time.Time) error {
	select {
	case out <- batch:
		s.handedOver(batch)
		return nil
	default:
	}
	t := time.NewTimer(time.Until(*nextStatus))
	defer t.Stop()
	for {
		select {
		case out <- batch:
			s.handedOver(batch)
			return nil
		case <-t.C:
			if err := s.sendStatus(ctx, conn, false); err != nil {
				return err
			}
			*nextStatus = time.Now().Add(s.cfg.StatusInterval)
			t.Reset(s.cfg.StatusInterval)
		case err := <-sideErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// handedOver notes a batch the receiver now owns: what it received must exist on any server the
// stream reconnects to (checkTimeline).
func (s *Stream) handedOver(batch []Event) {
	s.delivered = true
	s.received = max(s.received, maxWALStart(batch))
}

// sendStatus confirms SetFlushed's position (write = flush = apply); never the server's WAL end.
func (s *Stream) sendStatus(ctx context.Context, conn *pgconn.PgConn, replyRequested bool) error {
	lsn, _, _ := s.flushedPos()
	nc := conn.Conn()
	_ = nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn, ReplyRequested: replyRequested,
	})
	_ = nc.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("send standby status update: %w", err)
	}
	s.lastStatusLSN.Store(uint64(lsn))
	s.lastStatusTime.Store(time.Now().UnixNano())
	return nil
}

// finish ends replication cleanly at shutdown: a last status update, then CopyDone, then it reads
// (and drops) what the server still sends until it has ended the command too. Only then is the
// status update known to be processed: closing the socket with unread data makes the kernel reset
// the connection, and a status update the walsender had not read yet is lost with it (measured:
// nearly every Close under load). Bounded by finalTimeout; a server busy decoding a large
// transaction may answer later, and the session's check after the close covers that case.
func (s *Stream) finish(conn *pgconn.PgConn) error {
	nc := conn.Conn()
	deadline := time.Now().Add(finalTimeout)
	if err := s.sendStatus(context.Background(), conn, false); err != nil {
		return err
	}
	_ = nc.SetWriteDeadline(deadline)
	conn.Frontend().Send(&pgproto3.CopyDone{})
	err := conn.Frontend().Flush()
	_ = nc.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("send CopyDone: %w", err)
	}
	for {
		// Set on every read: the cancellation AfterFunc of stream may still move it to now.
		if err := nc.SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("set read deadline: %w", err)
		}
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) && time.Now().Before(deadline) {
				continue
			}
			return fmt.Errorf("end replication (waiting for the server after CopyDone): %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.ReadyForQuery:
			_ = nc.SetReadDeadline(time.Time{})
			return nil
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("end replication: %w", pgconn.ErrorResponseToPgError(msg))
		}
	}
}

// isCommit reports whether a pgoutput message ends a transaction: Commit, or Stream Commit.
func isCommit(walData []byte) bool {
	return len(walData) > 0 && (walData[0] == 'C' || walData[0] == 'c')
}
