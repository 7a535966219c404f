package replication

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// failoverMinVersion is the first server_version_num with failover slots (PostgreSQL 17).
const failoverMinVersion = 170000

var (
	// ErrFailoverUnsupported is returned when Config.Failover is set and the server is older than
	// PostgreSQL 17, which has no failover slots. It wraps ErrInvalidConfig.
	ErrFailoverUnsupported = fmt.Errorf("%w: Failover needs PostgreSQL 17 or later (failover slots)", ErrInvalidConfig)
	// ErrDiverged is returned when the server this stream reconnected to does not have WAL the stream
	// already received: a standby promoted before it had received everything (synchronized_standby_slots
	// not set on the old primary), or another cluster behind the same address. Messages of transactions
	// lost with the old primary may have been delivered; continuing would skip transactions of the new
	// server at the same positions, so the stream stops.
	ErrDiverged = errors.New("replication: the server's history diverged from what this stream received")

	// errStandbyServer ends a session on a server in recovery (a standby): the slot cannot be streamed
	// nor its position recorded there. Transient: a standby may be promoted, and a multi-host
	// connection string reaches the primary on the next attempt.
	errStandbyServer = errors.New("replication: the server is a standby (in recovery): the relay needs the primary; " +
		"list every host with target_session_attrs=read-write (or primary) so that connections skip standbys")
)

// serverInfo is what a session learns about the server before it touches the slot.
type serverInfo struct {
	inRecovery bool
	version    int    // server_version_num
	versionStr string // server_version
	syncSlots  string // synchronized_standby_slots (PostgreSQL 17+), "" when unset or older
}

func lookupServer(ctx context.Context, q querier) (serverInfo, error) {
	var si serverInfo
	err := q.QueryRow(ctx, `SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('server_version_num')::int,
		pg_catalog.current_setting('server_version'), COALESCE(pg_catalog.current_setting('synchronized_standby_slots', true), '')`).
		Scan(&si.inRecovery, &si.version, &si.versionStr, &si.syncSlots)
	if err != nil {
		return si, fmt.Errorf("look up the server: %w", err)
	}
	return si, nil
}

// checkServer refuses a standby (transient) and Failover on a server without failover slots (fatal),
// and warns once when failover slots are not held back for a standby (synchronized_standby_slots).
func (s *Stream) checkServer(ctx context.Context, conn *pgx.Conn) error {
	var si serverInfo
	if err := s.withTimeout(ctx, func(ctx context.Context) (err error) {
		si, err = lookupServer(ctx, conn)
		return err
	}); err != nil {
		return err
	}
	switch {
	case si.inRecovery:
		return fmt.Errorf("%w (%s)", errStandbyServer, s.conns.redacted)
	case s.cfg.Failover && si.version < failoverMinVersion:
		return fmt.Errorf("%w: %s runs PostgreSQL %s: turn Failover (replication.failover) off or upgrade the server",
			ErrFailoverUnsupported, s.conns.redacted, si.versionStr)
	case s.cfg.Failover && si.syncSlots == "" && !s.warnedSyncSlots:
		s.warnedSyncSlots = true
		s.log.Warn("failover slot, but synchronized_standby_slots is empty on the primary: a standby promoted after a crash " +
			"may lack transactions this relay already delivered (the relay then stops with ErrDiverged); set it to the standby's physical slot")
	}
	return nil
}

// createSlotCommand returns the CREATE_REPLICATION_SLOT command for a logical pgoutput slot; snapshot
// is "nothing" or "export". With failover it uses the option list of PostgreSQL 15+ and asks for a
// failover slot (17+), else the older keyword form every supported server reads.
func (s *Stream) createSlotCommand(snapshot string) string {
	if s.cfg.Failover {
		return fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT '%s', FAILOVER true)", s.cfg.Slot, snapshot)
	}
	action := "NOEXPORT_SNAPSHOT"
	if snapshot == "export" {
		action = "EXPORT_SNAPSHOT"
	}
	return fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", s.cfg.Slot, action)
}

// createReplicationSlot creates the slot on the replication connection (the slot name is validated).
func (s *Stream) createReplicationSlot(ctx context.Context, repl *pgconn.PgConn, snapshot string) (pglogrepl.CreateReplicationSlotResult, error) {
	return pglogrepl.ParseCreateReplicationSlot(repl.Exec(ctx, s.createSlotCommand(snapshot)))
}

// ensureFailover turns failover on for an existing, free slot created without it (PostgreSQL 17's
// ALTER_REPLICATION_SLOT). A slot with failover on while Failover is off is left as it is.
func (a *acquirer) ensureFailover(ctx context.Context, si slotInfo) error {
	s := a.s
	if !s.cfg.Failover || si.failover {
		return nil
	}
	if err := s.ensureRepl(ctx, a.repl); err != nil {
		return err
	}
	if err := s.withTimeout(ctx, func(ctx context.Context) error {
		_, err := (*a.repl).Exec(ctx, "ALTER_REPLICATION_SLOT "+s.cfg.Slot+" (FAILOVER true)").ReadAll()
		return err
	}); err != nil {
		return fmt.Errorf("turn failover on for slot %q (ALTER_REPLICATION_SLOT): %w", s.cfg.Slot, err)
	}
	s.log.Info("failover turned on for the existing slot: a standby with sync_replication_slots = on now synchronizes it")
	return nil
}

// checkTimeline compares the server's history with what this stream received before (IDENTIFY_SYSTEM,
// then TIMELINE_HISTORY when the timeline changed, as after a standby's promotion): the WAL received
// on the old timeline must lie at or before the point where the server's history left it. It then
// remembers the server's system and timeline.
func (s *Stream) checkTimeline(ctx context.Context, repl *pgconn.PgConn) error {
	var sys pglogrepl.IdentifySystemResult
	if err := s.withTimeout(ctx, func(ctx context.Context) (err error) {
		sys, err = pglogrepl.IdentifySystem(ctx, repl)
		return err
	}); err != nil {
		return fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	prevSystem, prevTimeline := s.systemID, s.timeline
	if s.received == 0 || (sys.SystemID == prevSystem && sys.Timeline == prevTimeline) {
		s.systemID, s.timeline = sys.SystemID, sys.Timeline
		return nil
	}
	if sys.SystemID != prevSystem {
		return fmt.Errorf("%w: %s is system %s, this stream received WAL up to %s from system %s",
			ErrDiverged, s.conns.redacted, sys.SystemID, s.received, prevSystem)
	}
	end, err := s.timelineEnd(ctx, repl, sys.Timeline, prevTimeline)
	if err != nil {
		return err
	}
	if s.received > end {
		return fmt.Errorf("%w: timeline %d of %s left timeline %d at %s, but this stream had received WAL up to %s from it: "+
			"the standby was promoted without transactions this relay may have delivered (set synchronized_standby_slots on the primary). "+
			"Restart the relay to continue from the slot's position on the new primary",
			ErrDiverged, sys.Timeline, s.conns.redacted, prevTimeline, end, s.received)
	}
	s.log.Info("the server is on a new timeline (a promoted standby): continuing",
		zap.Int32("timeline", sys.Timeline), zap.Int32("previous_timeline", prevTimeline),
		zap.String("switched_at", end.String()), zap.String("received_up_to", s.received.String()))
	s.systemID, s.timeline = sys.SystemID, sys.Timeline
	return nil
}

// timelineEnd returns where timeline old ends in the history of the server's timeline cur.
func (s *Stream) timelineEnd(ctx context.Context, repl *pgconn.PgConn, cur, old int32) (pglogrepl.LSN, error) {
	if cur < old {
		return 0, fmt.Errorf("%w: %s is on timeline %d, behind timeline %d this stream received WAL from",
			ErrDiverged, s.conns.redacted, cur, old)
	}
	var h pglogrepl.TimelineHistoryResult
	if err := s.withTimeout(ctx, func(ctx context.Context) (err error) {
		h, err = pglogrepl.TimelineHistory(ctx, repl, cur)
		return err
	}); err != nil {
		return 0, fmt.Errorf("TIMELINE_HISTORY %d: %w", cur, err)
	}
	end, ok, err := parseTimelineHistory(h.Content, old)
	switch {
	case err != nil:
		return 0, fmt.Errorf("TIMELINE_HISTORY %d: %w", cur, err)
	case !ok:
		return 0, fmt.Errorf("%w: timeline %d of %s does not descend from timeline %d this stream received WAL from",
			ErrDiverged, cur, s.conns.redacted, old)
	}
	return end, nil
}

// parseTimelineHistory finds the switch point of timeline tli in a timeline history file: lines of
// "<parent tli> <switch point> <reason>", comments after '#'.
func parseTimelineHistory(content []byte, tli int32) (pglogrepl.LSN, bool, error) {
	sc := bufio.NewScanner(strings.NewReader(string(content)))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil {
			return 0, false, fmt.Errorf("timeline history line %q: %w", sc.Text(), err)
		}
		if int32(n) != tli {
			continue
		}
		lsn, err := pglogrepl.ParseLSN(f[1])
		if err != nil {
			return 0, false, fmt.Errorf("timeline history line %q: %w", sc.Text(), err)
		}
		return lsn, true, nil
	}
	return 0, false, sc.Err()
}

// maxWALStart returns the highest WALStart of the XLogData events in batch.
func maxWALStart(batch []Event) pglogrepl.LSN {
	var m pglogrepl.LSN
	for i := range batch {
		if batch[i].Kind == XLogData && batch[i].WALStart > m {
			m = batch[i].WALStart
		}
	}
	return m
}
