package decoder

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// A streamed transaction's buffered messages are records:
//
//	Uint32 subxid | Uint32 n | n bytes: type byte + message body without the xid
//
// The same layout is used in memory and in the spill file. Records are appended in
// arrival order; the spill file holds the older records, buf the newer ones.
const recHeader = 8

// replayChunk is the size of the buffers spilled records are read into at replay.
const replayChunk = 256 << 10

// streamTxn is an open streamed top-level transaction.
type streamTxn struct {
	xid     uint32
	buf     []byte   // records not yet spilled
	file    *os.File // spill file, nil until the first spill
	spilled int64    // bytes written to file
	aborted map[uint32]struct{}

	// Logical messages (see LogicalMessage.MaybeRolledBack): how many were buffered, the runs of
	// other changes by xid (each with the message count at its last change), and the ranges of
	// message indexes that may belong to a rolled-back subtransaction.
	messages int
	runs     []xidRun
	maybe    [][2]int
}

// Stats describes the decoder's buffered streamed transactions.
type Stats struct {
	// OpenStreams is the number of streamed transactions not yet committed or aborted.
	OpenStreams int
	// MemoryBytes is the size of their records held in memory.
	MemoryBytes int
	// SpilledBytes is the size of their records in spill files.
	SpilledBytes int64
	// SpillFiles is the number of spill files open.
	SpillFiles int
}

// Stats reports the decoder's buffered streamed transactions. Like every method of
// Decoder, call it from the goroutine that calls Decode.
func (d *Decoder) Stats() Stats {
	s := Stats{OpenStreams: len(d.streams), MemoryBytes: d.memUsed}
	for _, tx := range d.streams {
		s.SpilledBytes += tx.spilled
		if tx.file != nil {
			s.SpillFiles++
		}
	}
	return s
}

// streamStart handles Stream Start: Int32 xid, Int8 first-segment flag.
func (d *Decoder) streamStart(body []byte) error {
	if d.state != stateIdle {
		return protocolError("Stream Start inside a %s", d.state)
	}
	if len(body) != 5 {
		return malformed("Stream Start", "body is %d bytes, want 5", len(body))
	}
	xid := binary.BigEndian.Uint32(body)
	first := body[4]
	tx := d.streams[xid]
	switch {
	case first == 1 && tx != nil:
		return protocolError("Stream Start of xid %d marked first segment, but the stream is already open", xid)
	case first != 1 && tx == nil:
		return protocolError("Stream Start continues xid %d, whose first segment was never received", xid)
	case tx == nil:
		d.streams[xid] = &streamTxn{xid: xid}
	}
	d.state, d.streamXid = stateStream, xid
	return nil
}

// streamStop handles Stream Stop (no body).
func (d *Decoder) streamStop(body []byte) error {
	if d.state != stateStream {
		return protocolError("Stream Stop outside a stream block")
	}
	if len(body) != 0 {
		return malformed("Stream Stop", "%d trailing bytes", len(body))
	}
	d.state = stateIdle
	return nil
}

// streamChange validates a change inside a stream block (body starts with the
// (sub)transaction xid) and buffers Relation, Insert and transactional Message messages for replay.
func (d *Decoder) streamChange(t byte, body []byte, h Handler) error {
	if len(body) < 4 {
		return malformed(msgName(t), "truncated before streamed xid")
	}
	subxid := binary.BigEndian.Uint32(body)
	msg := body[4:]
	switch t {
	case 'R':
		if _, err := parseRelation(msg); err != nil {
			return err
		}
	case 'I':
		if _, _, err := d.parseInsert(msg); err != nil {
			return err
		}
	case 'M':
		return d.streamMessage(subxid, msg, h)
	default:
		// Ignored at replay: validate now, do not buffer.
		if err := d.change(t, msg, nil); err != nil {
			return err
		}
		d.streams[d.streamXid].noteChange(subxid)
		return nil
	}
	if err := d.buffer(subxid, t, msg); err != nil {
		return err
	}
	d.streams[d.streamXid].noteChange(subxid)
	return nil
}

// buffer appends a record to the open stream's transaction and spills past the limit.
func (d *Decoder) buffer(subxid uint32, t byte, msg []byte) error {
	tx := d.streams[d.streamXid]
	if uint64(len(msg)) >= math.MaxUint32 {
		return malformed(msgName(t), "%d bytes is too large to buffer", len(msg))
	}
	before := len(tx.buf)
	tx.buf = binary.BigEndian.AppendUint32(tx.buf, subxid)
	tx.buf = binary.BigEndian.AppendUint32(tx.buf, uint32(1+len(msg)))
	tx.buf = append(tx.buf, t)
	tx.buf = append(tx.buf, msg...)
	d.memUsed += len(tx.buf) - before
	for d.memUsed > d.cfg.MemoryLimit {
		// Spill the largest in-memory transaction.
		var big *streamTxn
		for _, s := range d.streams {
			if big == nil || len(s.buf) > len(big.buf) {
				big = s
			}
		}
		if big == nil || len(big.buf) == 0 {
			break
		}
		if err := d.spill(big); err != nil {
			return err
		}
	}
	return nil
}

// spill appends tx's in-memory records to its spill file.
func (d *Decoder) spill(tx *streamTxn) error {
	if tx.file == nil {
		f, err := os.CreateTemp(d.cfg.SpillDir, fmt.Sprintf("pgoutbox-decoder-xid%d-*.spill", tx.xid))
		if err != nil {
			return fmt.Errorf("decoder: create spill file for xid %d: %w", tx.xid, err)
		}
		tx.file = f
	}
	if _, err := tx.file.Write(tx.buf); err != nil {
		return fmt.Errorf("decoder: spill xid %d to %s: %w", tx.xid, tx.file.Name(), err)
	}
	tx.spilled += int64(len(tx.buf))
	d.memUsed -= len(tx.buf)
	// Let the buffer go: keeping its capacity (up to twice the limit after append's doubling) would
	// hold that much memory for the rest of the transaction.
	tx.buf = nil
	return nil
}

// streamAbort handles Stream Abort: Int32 xid, Int32 subxid, and in protocol v4 with
// parallel streaming Int64 abort LSN and Int64 abort time.
func (d *Decoder) streamAbort(body []byte) error {
	if d.state != stateIdle {
		return protocolError("Stream Abort inside a %s", d.state)
	}
	if len(body) != 8 && len(body) != 24 {
		return malformed("Stream Abort", "body is %d bytes, want 8 or 24", len(body))
	}
	xid := binary.BigEndian.Uint32(body)
	subxid := binary.BigEndian.Uint32(body[4:])
	tx := d.streams[xid]
	if tx == nil {
		return nil // nothing buffered: nothing to drop
	}
	if subxid == xid {
		return d.dropStream(tx)
	}
	tx.subAborted(subxid)
	// Drop the subtransaction's records from memory...
	buf, w := tx.buf, 0
	for r := 0; r < len(buf); {
		n := recHeader + int(binary.BigEndian.Uint32(buf[r+4:]))
		if binary.BigEndian.Uint32(buf[r:]) != subxid {
			copy(buf[w:], buf[r:r+n])
			w += n
		}
		r += n
	}
	d.memUsed -= len(buf) - w
	tx.buf = buf[:w]
	return nil
}

// streamCommit handles Stream Commit: Int32 xid, Int8 flags, Int64 commit LSN,
// Int64 end LSN, Int64 commit time. It replays the transaction's records between a
// synthesized Begin and the Commit.
func (d *Decoder) streamCommit(body []byte, h Handler) (err error) {
	if d.state != stateIdle {
		return protocolError("Stream Commit inside a %s", d.state)
	}
	if len(body) != 29 {
		return malformed("Stream Commit", "body is %d bytes, want 29", len(body))
	}
	r := reader{b: body}
	xid, _ := r.u32()
	_, _ = r.u8() // flags, unused
	commitLSN, _ := r.u64()
	endLSN, _ := r.u64()
	ts, _ := r.u64()
	tx := d.streams[xid]
	if tx == nil {
		return protocolError("Stream Commit of xid %d, which was never streamed", xid)
	}
	defer func() {
		if derr := d.dropStream(tx); err == nil {
			err = derr
		}
	}()
	when := pgTime(ts)
	if err := h.Begin(TxInfo{Xid: xid, FinalLSN: lsn(commitLSN), CommitTime: when}); err != nil {
		return fmt.Errorf("decoder: handle begin of streamed xid %d: %w", xid, err)
	}
	if tx.file != nil {
		if err := d.replayFile(tx, h); err != nil {
			return err
		}
	}
	if err := d.replay(tx, tx.buf, h); err != nil {
		return err
	}
	c := CommitInfo{Xid: xid, CommitLSN: lsn(commitLSN), EndLSN: lsn(endLSN), CommitTime: when}
	if err := h.Commit(c); err != nil {
		return fmt.Errorf("decoder: handle commit of streamed xid %d: %w", xid, err)
	}
	return nil
}

// replay decodes the records in buf, which the decoder owns and never reuses afterwards
// (rows alias it).
func (d *Decoder) replay(tx *streamTxn, buf []byte, h Handler) error {
	for r := 0; r < len(buf); {
		sub := binary.BigEndian.Uint32(buf[r:])
		n := int(binary.BigEndian.Uint32(buf[r+4:]))
		msg := buf[r+recHeader : r+recHeader+n : r+recHeader+n]
		r += recHeader + n
		if _, skip := tx.aborted[sub]; skip {
			continue
		}
		if err := d.replayChange(tx, msg, h); err != nil {
			return err
		}
	}
	return nil
}

// replayFile decodes the records spilled to tx.file, reading them into fresh chunks
// that rows may alias.
func (d *Decoder) replayFile(tx *streamTxn, h Handler) error {
	name := tx.file.Name()
	if _, err := tx.file.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("decoder: rewind spill file %s: %w", name, err)
	}
	br := bufio.NewReaderSize(tx.file, 64<<10)
	var hdr [recHeader]byte
	var chunk []byte
	for off := int64(0); off < tx.spilled; {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return fmt.Errorf("decoder: read spill file %s at offset %d: %w", name, off, err)
		}
		sub := binary.BigEndian.Uint32(hdr[:])
		n64 := int64(binary.BigEndian.Uint32(hdr[4:]))
		if n64 == 0 || off+recHeader+n64 > tx.spilled {
			return fmt.Errorf("decoder: spill file %s is corrupt: record of %d bytes at offset %d", name, n64, off)
		}
		off += recHeader + n64
		n := int(n64)
		if _, skip := tx.aborted[sub]; skip {
			if _, err := br.Discard(n); err != nil {
				return fmt.Errorf("decoder: read spill file %s: %w", name, err)
			}
			continue
		}
		if n > len(chunk) {
			chunk = make([]byte, max(n, replayChunk))
		}
		msg := chunk[:n:n]
		chunk = chunk[n:]
		if _, err := io.ReadFull(br, msg); err != nil {
			return fmt.Errorf("decoder: read spill file %s: %w", name, err)
		}
		if err := d.replayChange(tx, msg, h); err != nil {
			return err
		}
	}
	return nil
}

// replayChange replays one buffered record of tx: type byte, then the body.
func (d *Decoder) replayChange(tx *streamTxn, msg []byte, h Handler) error {
	if msg[0] == 'M' {
		return d.replayMessage(tx, msg[1:], h)
	}
	return d.change(msg[0], msg[1:], h)
}

// dropStream forgets tx and removes its spill file.
func (d *Decoder) dropStream(tx *streamTxn) error {
	delete(d.streams, tx.xid)
	d.memUsed -= len(tx.buf)
	tx.buf = nil
	if tx.file == nil {
		return nil
	}
	name := tx.file.Name()
	cerr := tx.file.Close()
	tx.file = nil
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("decoder: remove spill file: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("decoder: close spill file %s: %w", name, cerr)
	}
	return nil
}
