package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/internal/names"
)

const (
	sqlTimeout       = 5 * time.Second  // one SQL statement on the regular connection
	startTimeout     = 60 * time.Second // START_REPLICATION until CopyBothResponse
	finalTimeout     = 3 * time.Second  // record write and slot release at shutdown
	terminateTimeout = 5 * time.Second  // waiting for a terminated stale walsender to release the slot
)

// sqlHolder is the session's regular connection; it changes hands (session → sidecar → session),
// never shared at the same time.
type sqlHolder struct {
	cc   *connConfigs
	conn *pgx.Conn
}

func (h *sqlHolder) get(ctx context.Context) (*pgx.Conn, error) {
	if h.conn != nil && !h.conn.IsClosed() {
		return h.conn, nil
	}
	h.close()
	conn, err := h.cc.connectSQL(ctx)
	if err != nil {
		return nil, err
	}
	h.conn = conn
	return conn, nil
}

func (h *sqlHolder) close() {
	if h.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = h.conn.Close(ctx)
	h.conn = nil
}

// session runs one connection: it prepares the slot (creating, adopting or waiting for it), starts
// replication and streams until an error or ctx ends. streamed says START_REPLICATION succeeded.
func (s *Stream) session(ctx context.Context, out chan<- []Event) (streamed bool, err error) {
	sqlc := &sqlHolder{cc: s.conns}
	defer sqlc.close()
	if _, err := sqlc.get(ctx); err != nil {
		return false, err
	}
	var repl *pgconn.PgConn
	defer func() {
		if repl != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = repl.Close(cctx)
			cancel()
		}
	}()

	if err := s.acquire(ctx, sqlc.conn, &repl, out); err != nil {
		return false, err
	}

	s.setState(Streaming)
	lsn, commitTime, ver := s.flushedPos()
	s.log.Info("streaming", zap.String("from", lsn.String()), zap.Bool("protocol_v2_streaming", s.cfg.Streaming))
	if err := s.persist(ctx, sqlc.conn, lsn, commitTime, s.cfg.InstanceID); err != nil {
		s.log.Warn("record active instance", zap.Error(err))
	}

	side := &sidecar{s: s, sql: sqlc, persistedVer: ver}
	sideCtx, stopSide := context.WithCancel(ctx)
	sideErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { side.run(sideCtx, sideErr) })
	err = s.stream(ctx, repl, out, sideErr)
	stopSide()
	wg.Wait()

	// Record the last position. On shutdown also give up the active_instance mark, and wait until
	// the walsender has released the slot, so that whoever stopped us can use it right away.
	walsender := repl.PID()
	closeRepl(ctx, &repl)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
	defer cancel()
	instance := s.cfg.InstanceID
	if ctx.Err() != nil {
		instance = ""
	}
	if conn, cerr := sqlc.get(fctx); cerr == nil {
		lsn, commitTime, _ := s.flushedPos()
		if perr := s.persist(fctx, conn, lsn, commitTime, instance); perr != nil {
			s.log.Warn("record confirmed position", zap.Error(perr))
		}
		if ctx.Err() != nil {
			s.waitReleased(fctx, conn, walsender)
			s.ensureConfirmed(fctx, conn, lsn)
		}
	}
	return true, err
}

// ensureConfirmed makes sure the slot has confirmed lsn once the walsender is gone: if the final
// status update did not get through (finish timed out, the connection broke), it advances the slot
// over SQL. A slot already ahead, or taken by another instance meanwhile, is left alone.
func (s *Stream) ensureConfirmed(ctx context.Context, conn *pgx.Conn, lsn pglogrepl.LSN) {
	if lsn == 0 {
		return
	}
	si, err := lookupSlot(ctx, conn, s.cfg.Slot)
	if err != nil || !si.exists || si.confirmed >= lsn || si.activePID != 0 {
		return
	}
	if _, err := advanceSlot(ctx, conn, s.cfg.Slot, lsn); err != nil {
		s.log.Warn("final position not confirmed: the next start re-delivers from the slot's position",
			zap.String("slot_confirmed", si.confirmed.String()), zap.String("flushed", lsn.String()), zap.Error(err))
		return
	}
	s.log.Info("final status update did not reach the slot: advanced it over SQL",
		zap.String("from", si.confirmed.String()), zap.String("to", lsn.String()))
}

// waitReleased waits until walsender pid no longer holds the slot, or ctx ends.
func (s *Stream) waitReleased(ctx context.Context, conn *pgx.Conn, pid uint32) {
	for {
		var active bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots
			WHERE slot_name = $1 AND active_pid = $2)`, s.cfg.Slot, int64(pid)).Scan(&active)
		if err != nil || !active || sleep(ctx, 10*time.Millisecond) != nil {
			return
		}
	}
}

// acquire loops until this instance may stream the slot, then starts replication on *repl. It
// checks the slot and the publication, creates or adopts the slot, terminates a stale walsender of
// our own, waits as a standby while another instance holds the slot, and applies StartLSN.
func (s *Stream) acquire(ctx context.Context, sqlConn *pgx.Conn, repl **pgconn.PgConn, out chan<- []Event) error {
	if err := s.checkServer(ctx, sqlConn); err != nil {
		return err
	}
	a := &acquirer{s: s, sql: sqlConn, repl: repl, out: out}
	defer func() {
		if a.locked {
			s.unlock(ctx, sqlConn)
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if started, err := a.step(ctx); started || err != nil {
			return err
		}
	}
}

// acquirer is the state of one acquire.
type acquirer struct {
	s    *Stream
	sql  *pgx.Conn
	repl **pgconn.PgConn
	out  chan<- []Event
	// locked says this instance holds the slot-creation lock: with an initial snapshot, creating the
	// slot (and dropping one whose snapshot never completed) happens under an advisory lock held
	// until START_REPLICATION has made the slot active.
	locked        bool
	standbyLogged bool // "standing by" is logged once per acquire
}

// step looks at the slot once and takes the next step towards streaming it. started says
// replication started; otherwise, without an error, acquire looks again.
func (a *acquirer) step(ctx context.Context) (started bool, err error) {
	s := a.s
	// The snapshot this stream is taking, read before the record: the receiver may complete it (and
	// clear it) while inspect runs, and a record read before that still says pending.
	own := s.pendingSnapshot()
	si, rec, err := s.inspect(ctx, a.sql)
	if err != nil {
		return false, err
	}
	incomplete := a.snapshotIncomplete(own, rec)
	switch {
	case (!si.exists || incomplete) && s.snapshotFn != nil && s.cfg.CreateSlot && si.activePID == 0 && !a.locked:
		return false, a.lockToCreate(ctx) // then look again under the lock
	case incomplete && si.activePID == 0 && a.locked:
		return false, s.dropIncomplete(ctx, a.sql, si, rec)
	case !si.exists:
		return false, a.create(ctx) // then look again: the new slot, or another instance's
	}
	if err := a.adopt(ctx, si, rec); err != nil {
		return false, err
	}
	if si.activePID != 0 {
		return false, a.inUse(ctx, si)
	}
	if err := a.ensureFailover(ctx, si); err != nil {
		return false, err
	}
	if again, err := a.position(ctx, si, rec); again || err != nil {
		return false, err
	}
	return a.start(ctx)
}

// snapshotIncomplete reports whether the slot's record says an initial snapshot was never completed,
// other than own, the one this instance is taking (or took: it may have completed since). Its own
// snapshot is void once another instance re-created the slot.
func (a *acquirer) snapshotIncomplete(own pglogrepl.LSN, rec relayRecord) bool {
	s := a.s
	if own != 0 && (!rec.exists || rec.createdLSN != own) {
		s.setPendingSnapshot(0) // another instance re-created the slot: our snapshot is void
		own = 0
	}
	return s.snapshotFn != nil && rec.exists && rec.snapshotPending && (own == 0 || rec.createdLSN != own)
}

// lockToCreate takes the slot-creation lock, or stands by while another instance holds it.
func (a *acquirer) lockToCreate(ctx context.Context) error {
	got, err := a.s.tryLock(ctx, a.sql)
	if err != nil {
		return err
	}
	if got {
		a.locked = true
		return nil
	}
	return a.standby(ctx, "another instance is creating the slot: standing by")
}

// create creates the missing slot (taking the initial snapshot when one is configured), unless
// creating it is disabled.
func (a *acquirer) create(ctx context.Context) error {
	s := a.s
	if !s.cfg.CreateSlot {
		return fmt.Errorf("%w: slot %q is not in pg_replication_slots and creating it is disabled: create it (pgoutbox with slot creation on) or fix the slot name",
			ErrSlotMissing, s.cfg.Slot)
	}
	if err := s.ensureRepl(ctx, a.repl); err != nil {
		return err
	}
	create := s.createSlot
	if s.snapshotFn != nil {
		create = s.createWithSnapshot
	}
	return create(ctx, a.sql, *a.repl)
}

// adopt records an existing slot that has no record yet, and warns when the record names another
// publication.
func (a *acquirer) adopt(ctx context.Context, si slotInfo, rec relayRecord) error {
	s := a.s
	if rec.exists {
		if rec.publication != s.cfg.Publication {
			s.log.Warn("slot recorded with another publication", zap.String("recorded", rec.publication),
				zap.String("configured", s.cfg.Publication))
		}
		return nil
	}
	s.log.Info("adopting existing slot: recording it", zap.String("confirmed_flush_lsn", si.confirmed.String()))
	return s.withTimeout(ctx, func(ctx context.Context) error {
		return insertRecord(ctx, a.sql, s.cfg.Schema, s.cfg.Slot, s.cfg.Publication, si.confirmed, s.cfg.InstanceID, false)
	})
}

// inUse handles a slot that a walsender holds: a stale one of this instance is terminated; while
// another instance holds it, this one stands by (without keeping others from creating a slot).
func (a *acquirer) inUse(ctx context.Context, si slotInfo) error {
	s := a.s
	if si.activeApp == s.cfg.appName() {
		return s.terminateStale(ctx, a.sql, si.activePID)
	}
	if a.locked { // do not keep others from a slot we cannot use
		s.unlock(ctx, a.sql)
		a.locked = false
	}
	return a.standby(ctx, "slot in use by another instance: standing by", zap.Int32("pid", si.activePID),
		zap.String("application_name", si.activeApp))
}

// standby waits as a standby, logging msg the first time in this acquire.
func (a *acquirer) standby(ctx context.Context, msg string, fields ...zap.Field) error {
	if !a.standbyLogged {
		a.s.log.Info(msg, fields...)
		a.standbyLogged = true
	}
	return a.s.standby(ctx)
}

// position takes the free slot's confirmed position (never confirm less than PostgreSQL already
// has) and moves the slot to StartLSN the first time. again says the slot was taken meanwhile.
func (a *acquirer) position(ctx context.Context, si slotInfo, rec relayRecord) (again bool, err error) {
	s := a.s
	var commitTime time.Time
	if rec.confirmedLSN == si.confirmed {
		commitTime = rec.commitTime
	}
	if flushed, _, _ := s.flushedPos(); si.confirmed < flushed {
		// A synchronized slot on a promoted standby lags by up to the slot sync interval.
		s.log.Info("the slot is behind the position this stream confirmed: the transactions in between come again "+
			"(a relay that received them skips them, a restarted one delivers them again with the same ids)",
			zap.String("slot_confirmed", si.confirmed.String()), zap.String("confirmed", flushed.String()),
			zap.Bool("synced", si.synced))
	}
	s.raiseFlushed(si.confirmed, commitTime)
	if s.cfg.StartLSN == 0 || s.startLSNDone {
		return false, nil
	}
	var end pglogrepl.LSN
	if err := s.withTimeout(ctx, func(ctx context.Context) (err error) {
		end, err = advanceSlot(ctx, a.sql, s.cfg.Slot, s.cfg.StartLSN)
		return err
	}); err != nil {
		if pgCode(err) == pgerrcode.ObjectInUse {
			return true, nil // taken meanwhile
		}
		return false, fmt.Errorf("StartLSN: %w", err)
	}
	s.startLSNDone = true
	s.raiseFlushed(end, time.Time{})
	s.log.Info("slot moved forward (StartLSN)", zap.String("from", si.confirmed.String()), zap.String("to", end.String()))
	return false, nil
}

// start starts replication on the free slot, after telling the relay that what it received before
// is re-sent. started is false when another instance won the race (this one then stood by).
func (a *acquirer) start(ctx context.Context) (started bool, err error) {
	s := a.s
	if err := s.ensureRepl(ctx, a.repl); err != nil {
		return false, err
	}
	if err := s.checkTimeline(ctx, *a.repl); err != nil {
		return false, err
	}
	if s.delivered {
		if err := sendBatch(ctx, a.out, []Event{{Kind: Disconnected}}); err != nil {
			return false, err
		}
		s.delivered = false
	}
	err = s.startReplication(ctx, *a.repl)
	if pgCode(err) == pgerrcode.ObjectInUse { // another instance won the race
		s.log.Info("slot taken by another instance at START_REPLICATION: standing by", zap.Error(err))
		a.standbyLogged = true
		closeRepl(ctx, a.repl)
		return false, s.standby(ctx)
	}
	return true, err
}

// inspect reads the slot and its record and returns the fatal conditions: lost slot, unusable
// slot, missing publication.
func (s *Stream) inspect(ctx context.Context, conn *pgx.Conn) (si slotInfo, rec relayRecord, err error) {
	err = s.withTimeout(ctx, func(ctx context.Context) error {
		if si, err = lookupSlot(ctx, conn, s.cfg.Slot); err != nil {
			return err
		}
		rec, err = lookupRecord(ctx, conn, s.cfg.Schema, s.cfg.Slot)
		return err
	})
	if err != nil {
		return si, rec, err
	}
	switch {
	case rec.exists && !si.exists && rec.snapshotPending && rec.createdLSN == 0:
		// A relay died between writing the record and creating the slot: create it now.
	case rec.exists && !si.exists && rec.snapshotPending:
		return si, rec, s.lostError(rec, "slot dropped before its initial snapshot was delivered: it is recorded in "+relayTable(s.cfg.Schema)+
			" but missing from pg_replication_slots; deleting the record lets the next start create the slot and take a new snapshot, which delivers every retained row")
	case rec.exists && !si.exists:
		return si, rec, s.lostError(rec, "slot dropped: it is recorded in "+relayTable(s.cfg.Schema)+" but missing from pg_replication_slots")
	case si.exists && si.walStatus == "lost":
		return si, rec, s.lostError(rec, "wal_status = 'lost': PostgreSQL removed WAL the slot needed (max_slot_wal_keep_size)")
	case si.exists && (si.invalidation != "" || si.conflicting):
		return si, rec, s.lostError(rec, fmt.Sprintf("invalidated (invalidation_reason = %q, conflicting = %t, synced = %t): PostgreSQL can no longer decode from it",
			si.invalidation, si.conflicting, si.synced))
	case si.exists:
		if err := si.check(s.cfg.Slot); err != nil {
			return si, rec, err
		}
	}
	err = s.withTimeout(ctx, func(ctx context.Context) error {
		return checkPublication(ctx, conn, s.cfg.Publication, s.cfg.Schema)
	})
	return si, rec, err
}

func (s *Stream) lostError(rec relayRecord, reason string) error {
	e := &SlotLostError{Slot: s.cfg.Slot, Reason: reason, LastConfirmedLSN: rec.confirmedLSN, LastCommitTime: rec.commitTime,
		Messages: s.cfg.Messages}
	if lsn, t, _ := s.flushedPos(); lsn > e.LastConfirmedLSN && !t.IsZero() {
		e.LastConfirmedLSN, e.LastCommitTime = lsn, t
	}
	if e.LastCommitTime.IsZero() && e.LastConfirmedLSN == 0 {
		e.LastCommitTime = rec.createdAt // nothing confirmed: everything since the slot's creation
	}
	return e
}

func (s *Stream) createSlot(ctx context.Context, sqlConn *pgx.Conn, repl *pgconn.PgConn) error {
	s.log.Info("creating replication slot (waits for open transactions to finish)")
	res, err := s.createReplicationSlot(ctx, repl, "nothing")
	if pgCode(err) == pgerrcode.DuplicateObject { // another instance created it first
		return nil
	}
	if err != nil {
		return fmt.Errorf("create replication slot %q: %w", s.cfg.Slot, err)
	}
	created, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return fmt.Errorf("create replication slot %q: parse consistent point: %w", s.cfg.Slot, err)
	}
	if err := s.withTimeout(ctx, func(ctx context.Context) error {
		return insertRecord(ctx, sqlConn, s.cfg.Schema, s.cfg.Slot, s.cfg.Publication, created, s.cfg.InstanceID, false)
	}); err != nil {
		return err
	}
	s.log.Info("created replication slot", zap.String("consistent_point", created.String()))
	return nil
}

// terminateStale ends a walsender of our own application_name (left over after a network cut) and
// waits until the slot is released.
func (s *Stream) terminateStale(ctx context.Context, conn *pgx.Conn, pid int32) error {
	s.log.Warn("terminating a stale walsender of this instance", zap.Int32("pid", pid), zap.String("application_name", s.cfg.appName()))
	if err := s.withTimeout(ctx, func(ctx context.Context) error {
		_, err := conn.Exec(ctx, "SELECT pg_catalog.pg_terminate_backend($1)", pid)
		return err
	}); err != nil {
		return fmt.Errorf("terminate stale walsender %d: %w", pid, err)
	}
	deadline := time.Now().Add(terminateTimeout)
	for time.Now().Before(deadline) {
		var active bool
		if err := s.withTimeout(ctx, func(ctx context.Context) error {
			return conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active_pid = $2)",
				s.cfg.Slot, pid).Scan(&active)
		}); err != nil {
			return err
		}
		if !active {
			return nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return nil // still active: the next lookup decides again
}

func (s *Stream) standby(ctx context.Context) error {
	s.setState(Standby)
	return sleep(ctx, s.cfg.StandbyPoll)
}

func (s *Stream) ensureRepl(ctx context.Context, repl **pgconn.PgConn) error {
	if *repl != nil && !(*repl).IsClosed() {
		return nil
	}
	conn, err := s.conns.connectReplication(ctx, s.log)
	if err != nil {
		return err
	}
	*repl = conn
	return nil
}

func closeRepl(ctx context.Context, repl **pgconn.PgConn) {
	if *repl == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = (*repl).Close(cctx)
	*repl = nil
}

// pluginArgs are pgoutput's START_REPLICATION options.
func (s *Stream) pluginArgs() []string {
	pub := pgx.Identifier{s.cfg.Publication}.Sanitize() // a quoted identifier inside a string literal
	args := []string{
		"proto_version '1'",
		"publication_names '" + strings.ReplaceAll(pub, "'", "''") + "'",
		"binary 'true'",
	}
	if s.cfg.Streaming {
		args[0] = "proto_version '2'"
		args = append(args, "streaming 'on'")
	}
	if s.cfg.Messages {
		args = append(args, "messages 'true'")
	}
	return args
}

// startReplication starts at LSN 0, which PostgreSQL reads as the slot's confirmed position.
func (s *Stream) startReplication(ctx context.Context, repl *pgconn.PgConn) error {
	if s.cfg.Messages {
		if err := checkMessagesSupported(repl.ParameterStatus("server_version")); err != nil {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	err := pglogrepl.StartReplication(sctx, repl, s.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: s.pluginArgs(),
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code != pgerrcode.ObjectInUse {
			return fmt.Errorf("START_REPLICATION: %w", classifyServerError(pgErr, s.cfg.Publication))
		}
		return fmt.Errorf("START_REPLICATION: %w", err)
	}
	return nil
}

func (s *Stream) persist(ctx context.Context, conn *pgx.Conn, lsn pglogrepl.LSN, commitTime time.Time, instance string) error {
	return s.withTimeout(ctx, func(ctx context.Context) error {
		return persistConfirmed(ctx, conn, s.cfg.Schema, s.cfg.Slot, lsn, commitTime, instance)
	})
}

func (s *Stream) withTimeout(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, sqlTimeout)
	defer cancel()
	return f(ctx)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// sendBatch sends one batch on out, or gives up when ctx ends.
func sendBatch(ctx context.Context, out chan<- []Event, batch []Event) error {
	select {
	case out <- batch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errServerStopping ends a session (transient) when the regular connection shows that the server is
// shutting down: a walsender then waits until the client confirms everything it sent, which a stream
// confirming only what its consumer acked may never do, so the stream must let go of the slot.
var errServerStopping = errors.New("replication: the server is shutting down")

// serverStopping reports the SQLSTATEs of a server that terminates sessions or refuses new ones.
func serverStopping(err error) bool { return names.IsServerStopping(err) }

// sidecar owns the regular connection while the session streams: it records the confirmed
// position at most once per StatusInterval, checks the publication periodically, and watches the
// connection for a server shutdown.
type sidecar struct {
	s            *Stream
	sql          *sqlHolder
	persistedVer uint64
}

// run reports on stop what must end the session: ErrPublicationMissing (fatal) or errServerStopping.
func (sc *sidecar) run(ctx context.Context, stop chan<- error) {
	s := sc.s
	tick := time.NewTicker(s.cfg.StatusInterval)
	defer tick.Stop()
	nextPub := time.Now().Add(s.cfg.PublicationCheckInterval)
	warned := false // one warning per outage of the regular connection
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := sc.tick(ctx, &nextPub); err != nil {
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, ErrPublicationMissing):
				stop <- err
				return
			case serverStopping(err):
				stop <- fmt.Errorf("%w: %w", errServerStopping, err)
				return
			case !warned:
				s.log.Warn("regular connection: the confirmed position may not be recorded meanwhile", zap.Error(err))
				warned = true
			}
			continue
		}
		warned = false
	}
}

func (sc *sidecar) tick(ctx context.Context, nextPub *time.Time) error {
	s := sc.s
	var conn *pgx.Conn
	if err := s.withTimeout(ctx, func(ctx context.Context) (err error) {
		conn, err = sc.sql.get(ctx)
		return err
	}); err != nil {
		return err
	}
	used := false
	if lsn, commitTime, ver := s.flushedPos(); ver != sc.persistedVer {
		if err := s.persist(ctx, conn, lsn, commitTime, s.cfg.InstanceID); err != nil {
			return err
		}
		sc.persistedVer, used = ver, true
	}
	if now := time.Now(); !now.Before(*nextPub) {
		*nextPub = now.Add(s.cfg.PublicationCheckInterval)
		if err := s.withTimeout(ctx, func(ctx context.Context) error {
			return checkPublication(ctx, conn, s.cfg.Publication, s.cfg.Schema)
		}); err != nil {
			return err
		}
		used = true
	}
	if !used { // an idle connection learns of a shutdown only when used
		return s.withTimeout(ctx, conn.Ping)
	}
	return nil
}
