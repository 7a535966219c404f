package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pglogrepl"
)

// recKey identifies a record across restarts: its transaction's commit LSN and its Seq.
type recKey struct {
	lsn pglogrepl.LSN
	seq int64
}

// position is what the exactly-once sink stores in the position topic with every Kafka transaction:
// W, the relay's watermark when the transaction closed (every record with a commit LSN below W is
// acked, whatever its destination), and the records with a commit LSN at or above W that a committed
// Kafka transaction of this sink holds (the exceptions), by commit LSN, each list of Seqs sorted.
// A position is immutable once built.
type position struct {
	systemID, slot string
	timeline       uint32 // the server's timeline when the sink resumed (0: unknown)
	w              pglogrepl.LSN
	exc            map[pglogrepl.LSN][]int64
}

// delivered reports whether the position says k was delivered: below W, or committed above it.
func (p *position) delivered(k recKey) bool {
	if k.lsn < p.w {
		return true
	}
	seqs := p.exc[k.lsn]
	_, ok := slices.BinarySearch(seqs, k.seq)
	return ok
}

// committed reports whether k is one of the exceptions (committed to Kafka at or above W).
func (p *position) committed(k recKey) bool {
	seqs := p.exc[k.lsn]
	_, ok := slices.BinarySearch(seqs, k.seq)
	return ok
}

// next returns the position after a transaction that committed keys, with the watermark w (>= p.w):
// the exceptions below w are dropped, keys at or above w are added.
func (p *position) next(w pglogrepl.LSN, keys []recKey) *position {
	n := &position{systemID: p.systemID, slot: p.slot, timeline: p.timeline, w: max(w, p.w), exc: make(map[pglogrepl.LSN][]int64, len(p.exc))}
	for lsn, seqs := range p.exc {
		if lsn >= n.w {
			n.exc[lsn] = seqs // shared: never modified in place
		}
	}
	touched := map[pglogrepl.LSN]bool{}
	for _, k := range keys {
		if k.lsn < n.w {
			continue
		}
		if !touched[k.lsn] {
			touched[k.lsn] = true
			n.exc[k.lsn] = slices.Clone(n.exc[k.lsn])
		}
		n.exc[k.lsn] = append(n.exc[k.lsn], k.seq)
	}
	for lsn := range touched {
		slices.Sort(n.exc[lsn])
		n.exc[lsn] = slices.Compact(n.exc[lsn])
	}
	return n
}

// fit returns p without its newest exceptions (highest commit LSNs) so that it encodes to at most max
// bytes, the encoding, and how many records it left out. Those records are committed in Kafka but no
// longer known to the position: after a crash they are delivered again.
func (p *position) fit(max int) (*position, []byte, int) {
	lsns := slices.Sorted(maps.Keys(p.exc))
	n := &position{systemID: p.systemID, slot: p.slot, timeline: p.timeline, w: p.w}
	keep := len(lsns)
	for {
		keep = keep * 9 / 10 // drop a tenth of the commit LSNs at a time
		n.exc = make(map[pglogrepl.LSN][]int64, keep)
		for _, lsn := range lsns[:keep] {
			n.exc[lsn] = p.exc[lsn]
		}
		if b := n.encode(); len(b) <= max || keep == 0 {
			return n, b, p.size() - n.size()
		}
	}
}

// size returns the number of exceptions.
func (p *position) size() int {
	n := 0
	for _, seqs := range p.exc {
		n += len(seqs)
	}
	return n
}

const positionVersion = 1

// maxPositionRecords bounds the records a decoded position may hold (runs make the encoding compact,
// so its length alone does not bound them).
const maxPositionRecords = 1 << 22

// errBadPosition marks a position record that cannot be decoded.
var errBadPosition = errors.New("kafka: malformed position record")

// encode returns p as the value of a position record: a version byte, the system identifier and the
// slot (length-prefixed), the timeline, W, then per commit LSN (ascending, as the delta from the previous one, the
// first from W) its Seqs as runs of consecutive values (the delta of the run's start from the previous
// run's end, zig-zag, then the run's length minus one). Every integer is a varint.
func (p *position) encode() []byte {
	b := []byte{positionVersion}
	b = binary.AppendUvarint(b, uint64(len(p.systemID)))
	b = append(b, p.systemID...)
	b = binary.AppendUvarint(b, uint64(len(p.slot)))
	b = append(b, p.slot...)
	b = binary.AppendUvarint(b, uint64(p.timeline))
	b = binary.AppendUvarint(b, uint64(p.w))
	lsns := slices.Sorted(maps.Keys(p.exc))
	b = binary.AppendUvarint(b, uint64(len(lsns)))
	prev := p.w
	for _, lsn := range lsns {
		b = binary.AppendUvarint(b, uint64(lsn-prev))
		prev = lsn
		seqs := p.exc[lsn]
		runs := 0
		for i := range seqs {
			if i == 0 || seqs[i] != seqs[i-1]+1 {
				runs++
			}
		}
		b = binary.AppendUvarint(b, uint64(runs))
		var end int64
		for i := 0; i < len(seqs); {
			j := i + 1
			for j < len(seqs) && seqs[j] == seqs[j-1]+1 {
				j++
			}
			b = binary.AppendVarint(b, seqs[i]-end)
			b = binary.AppendUvarint(b, uint64(j-i-1))
			end = seqs[j-1]
			i = j
		}
	}
	return b
}

// decodePosition parses a position record's value. It never panics on bad input and bounds what it
// allocates by the input's length.
func decodePosition(b []byte) (*position, error) {
	d := decoder{b: b}
	if v := d.byte(); v != positionVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errBadPosition, v, positionVersion)
	}
	p := &position{systemID: d.string(), slot: d.string()}
	if tl := d.uvarint(); tl <= 1<<32-1 {
		p.timeline = uint32(tl)
	} else {
		d.fail("timeline")
	}
	p.w = pglogrepl.LSN(d.uvarint())
	groups := d.count()
	p.exc = make(map[pglogrepl.LSN][]int64, groups)
	prev := p.w
	var total uint64
	for range groups {
		delta := d.uvarint()
		if d.err == nil && (delta == 0 && len(p.exc) > 0 || uint64(prev)+delta < uint64(prev)) {
			d.err = fmt.Errorf("%w: commit LSNs not ascending", errBadPosition)
		}
		lsn := prev + pglogrepl.LSN(delta)
		prev = lsn
		runs := d.count()
		var seqs []int64
		var end int64
		for r := range runs {
			start := end + d.varint()
			n := d.uvarint()
			if d.err != nil {
				break
			}
			if (r > 0 && start <= end) || start+int64(n) < start {
				d.err = fmt.Errorf("%w: Seq runs not ascending", errBadPosition)
				break
			}
			if total += n + 1; n >= maxPositionRecords || total > maxPositionRecords {
				d.err = fmt.Errorf("%w: more than %d records", errBadPosition, maxPositionRecords)
				break
			}
			for s := start; s <= start+int64(n); s++ {
				seqs = append(seqs, s)
			}
			end = start + int64(n)
		}
		if d.err != nil {
			return nil, d.err
		}
		if len(seqs) == 0 {
			return nil, fmt.Errorf("%w: commit LSN %s without Seqs", errBadPosition, lsn)
		}
		p.exc[lsn] = seqs
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errBadPosition, len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return p, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or invalid %s", errBadPosition, what)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail("version")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items that take at least one byte each: never more than the bytes left.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("count")
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.count()
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
