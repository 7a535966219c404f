package nats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// kind is the outcome of one record.
type kind uint8

const (
	kindPending      kind = iota
	kindOK                // stored (PubAck)
	kindDuplicate         // the stream already held its message id: stored before
	kindPermanent         // retrying cannot help: dead-letter
	kindUnavailable       // systemic: the destination blocks
	kindNoStream          // no stream takes the subject (no responders)
	kindRetry             // this record failed: retried with backoff
	kindNotAttempted      // held back behind a failed record of its key
)

// result is the outcome of one published record.
type result struct {
	idx  int
	kind kind
	err  error
}

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
func parseAck(m *nats.Msg, idx int) result {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		return result{idx: idx, kind: kindNoStream, err: nats.ErrNoResponders}
	}
	if !bytes.Contains(m.Data, ackErrorKey) {
		if duplicate(m.Data) {
			return result{idx: idx, kind: kindDuplicate}
		}
		return result{idx: idx, kind: kindOK}
	}
	var ack struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &ack); err != nil || ack.Error == nil {
		return result{idx: idx, kind: kindRetry, err: fmt.Errorf("nats: unreadable PubAck %.200q", m.Data)}
	}
	return result{idx: idx, kind: classifyAPI(ack.Error), err: ack.Error}
}

// classifyAPI is the one place that sorts JetStream's verdicts: about the message itself (too large)
// permanent; about the stream or the server (full, out of resources, unavailable) systemic; any other
// retried for that record.
func classifyAPI(e *apiError) kind {
	switch e.ErrCode {
	case errCodeMessageTooLarge, errCodeHeaderTooLarge:
		return kindPermanent
	case errCodeStoreFailed:
		if strings.Contains(strings.ToLower(e.Description), "too large") {
			return kindPermanent
		}
		return kindUnavailable // a full stream (discard new) or a store failure: nothing goes in now
	case errCodeAccountResources:
		return kindUnavailable
	case errCodeDuplicateInProcess:
		return kindRetry
	}
	if e.Code >= 500 {
		return kindUnavailable
	}
	return kindRetry
}

// classifyPublish sorts an error of publishing (before any reply): too large is permanent, anything
// else (closed, reconnecting, no buffer while disconnected) is the connection's: systemic.
func classifyPublish(err error) kind {
	switch {
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrBadHeaderMsg):
		return kindPermanent
	}
	return kindUnavailable
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
