package outbox

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/google/uuid"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// columnIndex maps the outbox columns to their positions in a decoded relation. It is rebuilt when
// PostgreSQL re-sends the relation (for example after ALTER TABLE ... ADD COLUMN), so decoding goes by
// column name, not position.
type columnIndex struct {
	rel                                                       *decoder.Relation
	seq, id, dest, route, key, typ, payload, headers, created int
}

func newColumnIndex(rel *decoder.Relation) (*columnIndex, error) {
	ci := &columnIndex{rel: rel,
		seq: rel.Index("seq"), id: rel.Index("id"), dest: rel.Index("destination"), route: rel.Index("route"),
		key: rel.Index("key"), typ: rel.Index("type"), payload: rel.Index("payload"), headers: rel.Index("headers"),
		created: rel.Index("created_at"),
	}
	for name, i := range map[string]int{"seq": ci.seq, "id": ci.id, "destination": ci.dest, "payload": ci.payload} {
		if i < 0 {
			return nil, fmt.Errorf("outbox: relation %s.%s has no column %q: is it the outbox table?", rel.Namespace, rel.Name, name)
		}
	}
	return ci, nil
}

// recordFromRow converts a decoded outbox row. Strings and the payload alias the row's bytes, which
// the replication layer copied out of the read buffer for us and nobody modifies afterwards.
func (ci *columnIndex) recordFromRow(row decoder.Row, rec *Record) error {
	var err error
	if rec.Seq, err = int8Col(row, ci.seq); err != nil {
		return fmt.Errorf("outbox: column seq: %w", err)
	}
	if rec.ID, err = uuidCol(row, ci.id); err != nil {
		return fmt.Errorf("outbox: row seq %d: column id: %w", rec.Seq, err)
	}
	rec.Destination = Destination(textCol(row, ci.dest))
	rec.Route = textCol(row, ci.route)
	rec.Key = textCol(row, ci.key)
	rec.Type = textCol(row, ci.typ)
	if rec.Payload, err = byteaCol(row, ci.payload); err != nil {
		return fmt.Errorf("outbox: row seq %d: column payload: %w", rec.Seq, err)
	}
	if rec.Headers, err = headersCol(row, ci.headers); err != nil {
		return fmt.Errorf("outbox: row seq %d: column headers: %w", rec.Seq, err)
	}
	if rec.CreatedAt, err = timestamptzCol(row, ci.created); err != nil {
		return fmt.Errorf("outbox: row seq %d: column created_at: %w", rec.Seq, err)
	}
	return nil
}

func col(row decoder.Row, i int) ([]byte, byte) {
	if i < 0 || i >= len(row.Values) {
		return nil, 'n'
	}
	return row.Values[i], row.Kinds[i]
}

func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func textCol(row decoder.Row, i int) string {
	v, kind := col(row, i)
	if kind != 't' && kind != 'b' {
		return ""
	}
	return bytesToString(v) // text's binary form is its UTF-8 bytes
}

func int8Col(row decoder.Row, i int) (int64, error) {
	v, kind := col(row, i)
	switch kind {
	case 'b':
		if len(v) != 8 {
			return 0, fmt.Errorf("binary int8 of %d bytes", len(v))
		}
		return int64(binary.BigEndian.Uint64(v)), nil
	case 't':
		return strconv.ParseInt(bytesToString(v), 10, 64)
	}
	return 0, fmt.Errorf("is null (kind %q)", kind)
}

func uuidCol(row decoder.Row, i int) (string, error) {
	v, kind := col(row, i)
	switch kind {
	case 'b':
		if len(v) != 16 {
			return "", fmt.Errorf("binary uuid of %d bytes", len(v))
		}
		return uuid.UUID(v).String(), nil
	case 't':
		return string(v), nil
	}
	return "", fmt.Errorf("is null (kind %q)", kind)
}

func byteaCol(row decoder.Row, i int) ([]byte, error) {
	v, kind := col(row, i)
	switch kind {
	case 'b':
		if v == nil {
			return []byte{}, nil
		}
		return v, nil
	case 't':
		if len(v) < 2 || v[0] != '\\' || v[1] != 'x' {
			return nil, fmt.Errorf("text bytea without \\x prefix")
		}
		out := make([]byte, hex.DecodedLen(len(v)-2))
		_, err := hex.Decode(out, v[2:])
		return out, err
	case 'u':
		return nil, fmt.Errorf("unchanged TOAST value in an INSERT")
	}
	return nil, fmt.Errorf("is null")
}

func headersCol(row decoder.Row, i int) (map[string]string, error) {
	v, kind := col(row, i)
	switch kind {
	case 'n':
		return nil, nil
	case 'b':
		if len(v) == 0 || v[0] != 1 {
			return nil, fmt.Errorf("unknown binary jsonb version")
		}
		v = v[1:]
	case 't':
	default:
		return nil, fmt.Errorf("unexpected kind %q", kind)
	}
	var h map[string]string
	if err := json.Unmarshal(v, &h); err != nil {
		return nil, err
	}
	return h, nil
}

// pgEpoch is 2000-01-01, PostgreSQL's timestamp epoch.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func timestamptzCol(row decoder.Row, i int) (time.Time, error) {
	v, kind := col(row, i)
	switch kind {
	case 'b':
		if len(v) != 8 {
			return time.Time{}, fmt.Errorf("binary timestamptz of %d bytes", len(v))
		}
		us := int64(binary.BigEndian.Uint64(v))
		return pgEpoch.Add(time.Duration(us) * time.Microsecond), nil
	case 't':
		return time.Parse("2006-01-02 15:04:05.999999-07", string(v))
	case 'n':
		return time.Time{}, nil
	}
	return time.Time{}, fmt.Errorf("unexpected kind %q", kind)
}
