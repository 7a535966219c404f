package stdout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"unicode/utf8"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Line is the JSON object written per record.
type Line struct {
	ID            string            `json:"id"`
	Destination   string            `json:"destination"`
	Route         string            `json:"route,omitempty"`
	Key           string            `json:"key,omitempty"`
	Type          string            `json:"type,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Seq           int64             `json:"seq,omitempty"`
	CommitLSN     string            `json:"commit_lsn,omitempty"`
	Payload       *string           `json:"payload,omitempty"`
	PayloadBase64 []byte            `json:"payload_base64,omitempty"`
}

// Sink writes JSON lines to an io.Writer. It is safe for concurrent use: each line is written with
// one Write call under a lock, so lines never interleave.
type Sink struct {
	mu sync.Mutex
	w  io.Writer
}

// New returns a Sink writing to w, or to os.Stdout when w is nil.
func New(w io.Writer) *Sink {
	if w == nil {
		w = os.Stdout
	}
	return &Sink{w: w}
}

// Send writes one line per record, in order. A write error fails the Send as unavailable.
func (s *Sink) Send(ctx context.Context, batch []outbox.Record) error {
	var buf bytes.Buffer
	lines := make([][]byte, len(batch))
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := range batch {
		buf.Reset()
		if err := enc.Encode(lineOf(&batch[i])); err != nil {
			return outbox.Permanent(fmt.Errorf("stdout: encode message %s: %w", batch[i].ID, err))
		}
		lines[i] = bytes.Clone(buf.Bytes())
	}
	for i, l := range lines {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stdout: send: %w", err)
		}
		s.mu.Lock()
		_, err := s.w.Write(l)
		s.mu.Unlock()
		if err != nil {
			return outbox.Unavailable(fmt.Errorf("stdout: write message %s: %w", batch[i].ID, err))
		}
	}
	return nil
}

func lineOf(r *outbox.Record) Line {
	l := Line{ID: r.ID, Destination: string(r.Destination), Route: r.Route, Key: r.Key, Type: r.Type, Headers: r.Headers, Seq: r.Seq}
	if r.CommitLSN != 0 {
		l.CommitLSN = r.CommitLSN.String()
	}
	if utf8.Valid(r.Payload) {
		p := string(r.Payload)
		l.Payload = &p
	} else {
		l.PayloadBase64 = r.Payload
	}
	return l
}
