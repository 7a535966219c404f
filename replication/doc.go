// Package replication owns pgoutbox's logical replication slot and the stream read from it.
//
// A [Stream] reads a permanent pgoutput slot over one replication connection, owned by a single
// goroutine (the one running [Stream.Run]), and hands batches of raw [Event] values to the next stage
// (the decoder) over a channel. It guarantees:
//
//   - Resume from the confirmed position: every START_REPLICATION asks for LSN 0, which PostgreSQL
//     reads as the slot's confirmed_flush_lsn; the server's current WAL position is never used.
//   - Nothing is confirmed that the consumer did not confirm: status updates report only what
//     [Stream.SetFlushed] was given (never a keepalive's WAL end by itself), on a timer
//     (Config.StatusInterval) and whenever the server asks; they continue while the consumer applies
//     backpressure, so wal_sender_timeout never ends a slow consumer's connection.
//   - Order: events (XLogData and Keepalive) arrive in server order. After a lost connection the stream
//     sends a [Disconnected] event before anything of the next connection, and that connection resends
//     everything after the confirmed position: the receiver resets its decoder and drops partial
//     transactions.
//   - Slot lifecycle: the first start creates the slot (Config.CreateSlot) and records it in
//     <schema>.pkg_outbox_relay; later starts reuse it. With [WithSnapshot] the creation exports a
//     snapshot that a [SnapshotFunc] reads before streaming starts (the rows committed before the
//     slot existed); until the receiver calls [Stream.CompleteSnapshot] the record says
//     snapshot_pending, nothing past the creation is confirmed, and a start that finds another
//     stream's snapshot pending drops the slot and takes it again (under an advisory lock). A recorded slot that is gone, or that
//     PostgreSQL invalidated (wal_status = 'lost'), is a [*SlotLostError] naming the last confirmed
//     commit time to replay from: it is never recreated silently. A slot created by hand is adopted.
//   - Publication: it must exist and cover <schema>.pkg_outbox, at start and every
//     Config.PublicationCheckInterval ([ErrPublicationMissing]).
//   - Failover: while another instance streams the slot, a Stream waits as a [Standby] and takes over
//     when the slot is released. A walsender left behind by this very instance (same
//     application_name, "pgoutbox-" + Config.InstanceID) is terminated instead of waited for.
//   - PostgreSQL failover (17+): with Config.Failover the slot is a failover slot, which a physical
//     standby with sync_replication_slots = on keeps a copy of. Every session checks the server first:
//     a standby (in recovery) is refused and retried, so that a multi-host connection string with
//     target_session_attrs=read-write finds the promoted one; the slot is checked again (missing,
//     invalidated: [*SlotLostError]); and after a timeline change the WAL the stream received on the
//     old timeline must lie at or before the point where the new primary left it, else [ErrDiverged]
//     (the primary lacked synchronized_standby_slots). Before PostgreSQL 17 Failover is refused
//     ([ErrFailoverUnsupported]).
//   - Connections: [NewFromConfig] takes a parsed *pgx.ConnConfig (a pgxpool's ConnConfig) and every
//     connection the stream opens — replication, the regular one for the slot record and standby
//     election, the snapshot's — is a copy of it (TLS, password, dialer, pgconn hooks such as OnNotice,
//     ValidateConnect and AfterConnect, run-time parameters), after [WithBeforeConnect]'s hook, with
//     application_name "pgoutbox-" + Config.InstanceID; [New] parses a connection string into one.
//   - Faults: every read has a deadline (Config.ReadTimeout; a quiet connection is probed with a
//     reply request); network errors, server restarts and terminated walsenders lead to a reconnect
//     with capped exponential backoff and jitter ([Backoff] state meanwhile). Fatal errors end Run.
//
// [Stream.SetFlushed], [Stream.State], [Stream.Stats] and [Stream.Close] are safe for concurrent use;
// [Stream.Run] is called once. [AdvanceSlot] and [ValidateSlotName] are helpers for the CLI.
//
// Slot names are validated (^[a-z0-9_]{1,63}$) because replication commands are built as text;
// the publication name is quoted. Names and limits are those of internal/names, shared with the outbox
// package and the daemon. Connections are logged as user@host:port/database, never with a password.
package replication
