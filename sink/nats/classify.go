package nats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/pgoutbox/pgoutbox/sink/internal/flight"
)

// The sink's own outcomes, besides flight's OK, Permanent, Unavailable and NotAttempted.
const (
	kindDuplicate = flight.Own + iota // the stream already held its message id: stored before
	kindNoStream                      // no stream takes the subject (no responders)
	kindRetry                         // this record failed: retried with backoff
)

// apiError is the error of a JetStream PubAck.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("nats: stream refused the message: %s (code %d, err_code %d)", e.Description, e.Code, e.ErrCode)
}

// JetStream error codes the sink classifies (nats-server errors.json).
const (
	errCodeStoreFailed        = 10077 // JSStreamStoreFailedF: limits with discard new ("maximum messages exceeded"), too large, …
	errCodeMessageTooLarge    = 10054 // JSStreamMessageExceedsMaximumErr
	errCodeHeaderTooLarge     = 10097 // JSStreamHeaderExceedsMaximumErr
	errCodeAccountResources   = 10002 // JSAccountResourcesExceededErr
	errCodeDuplicateInProcess = 10158 // JSStreamDuplicateMessageConflict: the same id is being stored
)

var (
	ackErrorKey = []byte(`"error"`)
	ackDupKey   = []byte(`"duplicate"`)
)

// parseAck turns the reply to record idx into its result: a PubAck, a PubAck with a JetStream error,
// or a no-responders status (no stream takes the subject).
func parseAck(m *nats.Msg, idx int) flight.Result {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		return flight.Result{Idx: idx, Kind: kindNoStream, Err: nats.ErrNoResponders}
	}
	if !bytes.Contains(m.Data, ackErrorKey) {
		if duplicate(m.Data) {
			return flight.Result{Idx: idx, Kind: kindDuplicate}
		}
		return flight.Result{Idx: idx, Kind: flight.OK}
	}
	var ack struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &ack); err != nil || ack.Error == nil {
		return flight.Result{Idx: idx, Kind: kindRetry, Err: fmt.Errorf("nats: unreadable PubAck %.200q", m.Data)}
	}
	return flight.Result{Idx: idx, Kind: classifyAPI(ack.Error), Err: ack.Error}
}

// classifyAPI is the one place that sorts JetStream's verdicts: about the message itself (too large)
// permanent; about the stream or the server (full, out of resources, unavailable) systemic; any other
// retried for that record.
func classifyAPI(e *apiError) flight.Kind {
	switch e.ErrCode {
	case errCodeMessageTooLarge, errCodeHeaderTooLarge:
		return flight.Permanent
	case errCodeStoreFailed:
		if strings.Contains(strings.ToLower(e.Description), "too large") {
			return flight.Permanent
		}
		return flight.Unavailable // a full stream (discard new) or a store failure: nothing goes in now
	case errCodeAccountResources:
		return flight.Unavailable
	case errCodeDuplicateInProcess:
		return kindRetry
	}
	if e.Code >= 500 {
		return flight.Unavailable
	}
	return kindRetry
}

// classifyPublish sorts an error of publishing (before any reply): too large is permanent, anything
// else (closed, reconnecting, no buffer while disconnected) is the connection's: systemic.
func classifyPublish(err error) flight.Kind {
	switch {
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrBadHeaderMsg):
		return flight.Permanent
	}
	return flight.Unavailable
}

// duplicate reports whether a PubAck says "duplicate": true (the server writes it with and without a
// space after the colon).
func duplicate(ack []byte) bool {
	i := bytes.Index(ack, ackDupKey)
	if i < 0 {
		return false
	}
	rest := bytes.TrimLeft(ack[i+len(ackDupKey):], " \t")
	if len(rest) == 0 || rest[0] != ':' {
		return false
	}
	return bytes.HasPrefix(bytes.TrimLeft(rest[1:], " \t"), []byte("true"))
}
