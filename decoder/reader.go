package decoder

import (
	"bytes"
	"encoding/binary"
	"time"
)

// reader reads big-endian pgoutput fields with bounds checks. Methods return ok=false
// when the message is too short; the caller names what was being read.
type reader struct {
	b   []byte
	off int
}

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) u8() (byte, bool) {
	if r.off >= len(r.b) {
		return 0, false
	}
	v := r.b[r.off]
	r.off++
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(r.b)-r.off < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v, true
}

func (r *reader) u32() (uint32, bool) {
	if len(r.b)-r.off < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, true
}

func (r *reader) u64() (uint64, bool) {
	if len(r.b)-r.off < 8 {
		return 0, false
	}
	v := binary.BigEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v, true
}

// cstring returns the bytes of a NUL-terminated string, without the NUL, aliasing r.b.
func (r *reader) cstring() ([]byte, bool) {
	i := bytes.IndexByte(r.b[r.off:], 0)
	if i < 0 {
		return nil, false
	}
	s := r.b[r.off : r.off+i]
	r.off += i + 1
	return s, true
}

// bytes returns the next n bytes, aliasing r.b, with capacity limited to n.
func (r *reader) bytes(n uint32) ([]byte, bool) {
	if uint64(n) > uint64(len(r.b)-r.off) {
		return nil, false
	}
	end := r.off + int(n)
	s := r.b[r.off:end:end]
	r.off = end
	return s, true
}

// pgEpochUnix is 2000-01-01T00:00:00Z in Unix seconds.
const pgEpochUnix = 946684800

// pgTime converts microseconds since 2000-01-01 UTC to a time.Time.
func pgTime(us uint64) time.Time {
	v := int64(us)
	return time.Unix(pgEpochUnix+v/1_000_000, (v%1_000_000)*1000).UTC()
}
