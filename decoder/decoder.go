package decoder

import (
	"errors"
	"fmt"
)

// txState is where the decoder is in the message stream.
type txState uint8

const (
	stateIdle   txState = iota // between transactions
	stateTx                    // between Begin and Commit
	stateStream                // between Stream Start and Stream Stop
)

// Decoder decodes pgoutput messages. It is NOT safe for concurrent use.
type Decoder struct {
	cfg  Config
	rels map[uint32]*Relation

	state     txState
	xid       uint32 // xid of the open Begin
	streamXid uint32 // top-level xid of the open stream block

	streams map[uint32]*streamTxn // open streamed transactions by top-level xid
	memUsed int                   // bytes of streamed records held in memory

	values [][]byte // reused Row.Values
	kinds  []byte   // reused Row.Kinds

	closed bool
}

// New returns a Decoder for cfg, after validating it and applying defaults.
func New(cfg Config) (*Decoder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Streaming {
		if err := cfg.checkSpillDir(); err != nil {
			return nil, err
		}
	}
	return &Decoder{
		cfg:     cfg,
		rels:    make(map[uint32]*Relation),
		streams: make(map[uint32]*streamTxn),
	}, nil
}

// Relation returns the cached relation with OID id.
func (d *Decoder) Relation(id uint32) (*Relation, bool) {
	r, ok := d.rels[id]
	return r, ok
}

// Decode decodes one pgoutput message (the WALData of one XLogData message) and calls h.
// The caller owns data and must not modify it afterwards: row values alias it.
// Malformed input returns an error wrapping ErrMalformed; a message out of order
// returns an error wrapping ErrProtocol; an error from h is returned wrapped.
// After any error, reconnect and call Reset before decoding again.
func (d *Decoder) Decode(data []byte, h Handler) error {
	if d.closed {
		return ErrClosed
	}
	if h == nil {
		return errors.New("decoder: Decode called with a nil Handler")
	}
	if len(data) == 0 {
		return malformed("message", "empty")
	}
	t := data[0]
	switch t {
	case 'B':
		return d.begin(data[1:], h)
	case 'C':
		return d.commit(data[1:], h)
	case 'O':
		// Origin: sent after Begin or Stream Start, never with an xid.
		return validateOrigin(data[1:])
	case 'R', 'Y', 'I', 'U', 'D', 'T', 'M':
		switch d.state {
		case stateTx:
			return d.change(t, data[1:], h)
		case stateStream:
			return d.streamChange(t, data[1:], h)
		default:
			if t == 'M' { // a non-transactional logical decoding message
				return d.idleMessage(data[1:], h)
			}
			return protocolError("%s message outside a transaction", msgName(t))
		}
	case 'S', 'E', 'c', 'A':
		if !d.cfg.Streaming {
			return protocolError("%s message but Config.Streaming is false", msgName(t))
		}
		switch t {
		case 'S':
			return d.streamStart(data[1:])
		case 'E':
			return d.streamStop(data[1:])
		case 'c':
			return d.streamCommit(data[1:], h)
		default:
			return d.streamAbort(data[1:])
		}
	case 'b', 'P', 'K', 'r', 'p':
		return protocolError("two-phase message %q is not supported (create the slot without two_phase)", t)
	default:
		return malformed("message", "unknown message type %q", t)
	}
}

// Reset drops partial transactions, buffered streamed transactions (removing their
// spill files) and the relation cache. Call it after a reconnect.
func (d *Decoder) Reset() {
	_ = d.reset()
}

func (d *Decoder) reset() error {
	var errs []error
	for _, tx := range d.streams {
		errs = append(errs, d.dropStream(tx))
	}
	clear(d.rels)
	d.state = stateIdle
	d.xid, d.streamXid = 0, 0
	d.memUsed = 0
	return errors.Join(errs...)
}

// Close releases the decoder's state and removes its spill files. It is idempotent;
// Decode returns ErrClosed afterwards.
func (d *Decoder) Close() error {
	if d.closed {
		return nil
	}
	err := d.reset()
	d.closed = true
	return err
}

func (d *Decoder) begin(body []byte, h Handler) error {
	if d.state != stateIdle {
		return protocolError("Begin inside a %s", d.state)
	}
	if len(body) != 20 {
		return malformed("Begin", "body is %d bytes, want 20", len(body))
	}
	r := reader{b: body}
	final, _ := r.u64()
	ts, _ := r.u64()
	xid, _ := r.u32()
	d.state, d.xid = stateTx, xid
	if err := h.Begin(TxInfo{Xid: xid, FinalLSN: lsn(final), CommitTime: pgTime(ts)}); err != nil {
		return fmt.Errorf("decoder: handle begin of xid %d: %w", xid, err)
	}
	return nil
}

func (d *Decoder) commit(body []byte, h Handler) error {
	if d.state != stateTx {
		return protocolError("Commit without Begin")
	}
	if len(body) != 25 {
		return malformed("Commit", "body is %d bytes, want 25", len(body))
	}
	r := reader{b: body}
	_, _ = r.u8() // flags, unused
	commitLSN, _ := r.u64()
	endLSN, _ := r.u64()
	ts, _ := r.u64()
	d.state = stateIdle
	c := CommitInfo{Xid: d.xid, CommitLSN: lsn(commitLSN), EndLSN: lsn(endLSN), CommitTime: pgTime(ts)}
	if err := h.Commit(c); err != nil {
		return fmt.Errorf("decoder: handle commit of xid %d: %w", d.xid, err)
	}
	return nil
}

// change decodes a change message (without its type byte and without the streaming
// xid) inside a transaction, or while replaying a streamed one.
func (d *Decoder) change(t byte, body []byte, h Handler) error {
	switch t {
	case 'R':
		rel, err := parseRelation(body)
		if err != nil {
			return err
		}
		d.rels[rel.ID] = rel
		return nil
	case 'I':
		return d.insert(body, h)
	case 'U':
		return d.validateUpdate(body)
	case 'D':
		return d.validateDelete(body)
	case 'T':
		return validateTruncate(body)
	case 'Y':
		return validateType(body)
	case 'M':
		return d.message(body, h, false)
	default:
		return malformed("message", "unknown change type %q", t)
	}
}

func (d *Decoder) insert(body []byte, h Handler) error {
	oid, n, err := d.parseInsert(body)
	if err != nil {
		return err
	}
	rel := d.rels[oid]
	if rel == nil {
		return fmt.Errorf("%w: OID %d (no Relation message received)", ErrUnknownRelation, oid)
	}
	if n != len(rel.Columns) {
		return protocolError("Insert into %s.%s has %d columns, its Relation message has %d",
			rel.Namespace, rel.Name, n, len(rel.Columns))
	}
	if err := h.Insert(Row{Relation: rel, Values: d.values[:n], Kinds: d.kinds[:n]}); err != nil {
		return fmt.Errorf("decoder: handle insert into %s.%s: %w", rel.Namespace, rel.Name, err)
	}
	return nil
}

// parseInsert parses an Insert body into d.values/d.kinds and returns the relation OID
// and the number of columns.
func (d *Decoder) parseInsert(body []byte) (oid uint32, n int, err error) {
	r := reader{b: body}
	oid, ok := r.u32()
	if !ok {
		return 0, 0, malformed("Insert", "truncated before relation OID")
	}
	tag, ok := r.u8()
	if !ok {
		return 0, 0, malformed("Insert", "truncated before tuple tag")
	}
	if tag != 'N' {
		return 0, 0, malformed("Insert", "tuple tag is %q, want 'N'", tag)
	}
	if n, err = d.tuple(&r, "Insert"); err != nil {
		return 0, 0, err
	}
	if r.remaining() != 0 {
		return 0, 0, malformed("Insert", "%d trailing bytes after tuple", r.remaining())
	}
	return oid, n, nil
}

func (s txState) String() string {
	switch s {
	case stateTx:
		return "transaction"
	case stateStream:
		return "stream block"
	default:
		return "idle"
	}
}

func msgName(t byte) string {
	switch t {
	case 'B':
		return "Begin"
	case 'C':
		return "Commit"
	case 'O':
		return "Origin"
	case 'R':
		return "Relation"
	case 'Y':
		return "Type"
	case 'I':
		return "Insert"
	case 'U':
		return "Update"
	case 'D':
		return "Delete"
	case 'T':
		return "Truncate"
	case 'M':
		return "Message"
	case 'S':
		return "Stream Start"
	case 'E':
		return "Stream Stop"
	case 'c':
		return "Stream Commit"
	case 'A':
		return "Stream Abort"
	default:
		return fmt.Sprintf("message %q", t)
	}
}
