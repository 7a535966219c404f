package kafka

import (
	"slices"

	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Header names as bytes, shared by every record: sarama only reads header keys.
var (
	headerIDKey          = []byte(HeaderID)
	headerTypeKey        = []byte(HeaderType)
	headerDestinationKey = []byte(HeaderDestination)
)

// bytesEncoder is a sarama.Encoder over bytes. It is used by pointer into a per-Send array, so storing
// it in an Encoder interface does not allocate (sarama.ByteEncoder and StringEncoder values do, and
// StringEncoder copies the key again each time the partitioner or the batch encodes it).
type bytesEncoder struct{ b []byte }

func (e *bytesEncoder) Encode() ([]byte, error) { return e.b, nil }
func (e *bytesEncoder) Length() int             { return len(e.b) }

// newMessages builds the producer message of every record i of batch with skip[i] == nil into
// msgs[i], for topics[i]. The messages of one call share a handful of allocations (messages, encoders,
// headers, and one byte arena for keys and header values) instead of about ten per record. Payloads
// are not copied. The messages are read-only once built: sarama only reads them.
func newMessages(batch []outbox.Record, topics []string, skip []error, msgs []*sarama.ProducerMessage) {
	n, nHeaders, nBytes := 0, 0, 0
	for i := range batch {
		if skip != nil && skip[i] != nil {
			continue
		}
		r := &batch[i]
		n++
		nHeaders += 2 + len(r.Headers)
		nBytes += len(r.Key) + len(r.ID) + len(r.Destination)
		if r.Type != "" {
			nHeaders++
			nBytes += len(r.Type)
		}
		for k, v := range r.Headers {
			nBytes += len(k) + len(v)
		}
	}
	if n == 0 {
		return
	}
	pms := make([]sarama.ProducerMessage, n)
	encs := make([]bytesEncoder, 2*n)
	hdrs := make([]sarama.RecordHeader, 0, nHeaders)
	arena := make([]byte, 0, nBytes)
	// str copies s into the arena; the result has no spare capacity, so nothing can append into a neighbour.
	str := func(s string) []byte {
		start := len(arena)
		arena = append(arena, s...)
		return arena[start:len(arena):len(arena)]
	}
	var keys []string // scratch for sorting a record's own headers
	j := 0
	for i := range batch {
		if skip != nil && skip[i] != nil {
			continue
		}
		r := &batch[i]
		m := &pms[j]
		m.Topic = topics[i]
		val := &encs[2*j]
		val.b = r.Payload
		m.Value = val
		if r.Key != "" {
			key := &encs[2*j+1]
			key.b = str(r.Key)
			m.Key = key
		}
		first := len(hdrs)
		hdrs = append(hdrs, sarama.RecordHeader{Key: headerIDKey, Value: str(r.ID)})
		if r.Type != "" {
			hdrs = append(hdrs, sarama.RecordHeader{Key: headerTypeKey, Value: str(r.Type)})
		}
		hdrs = append(hdrs, sarama.RecordHeader{Key: headerDestinationKey, Value: str(string(r.Destination))})
		if len(r.Headers) > 0 {
			keys = keys[:0]
			for k := range r.Headers {
				if k != HeaderID && k != HeaderType && k != HeaderDestination {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			for _, k := range keys {
				hdrs = append(hdrs, sarama.RecordHeader{Key: str(k), Value: str(r.Headers[k])})
			}
		}
		m.Headers = hdrs[first:len(hdrs):len(hdrs)]
		msgs[i] = m
		j++
	}
}

// newMessage builds the producer message of one record.
func newMessage(r *outbox.Record, topic string) *sarama.ProducerMessage {
	msgs := make([]*sarama.ProducerMessage, 1)
	newMessages([]outbox.Record{*r}, []string{topic}, nil, msgs)
	return msgs[0]
}
