package kafka

import (
	"github.com/IBM/sarama"
)

// recordBatchOverhead is the v2 record batch header: base offset, length, leader epoch, magic, CRC,
// attributes, last offset delta, timestamps, producer id, epoch, base sequence, record count.
const recordBatchOverhead = 61

// batchSize is the size of a record batch holding only m, uncompressed, as the broker compares it
// with max.message.bytes.
func batchSize(m *sarama.ProducerMessage) int {
	body := 1 + 1 + 1 // attributes, timestamp delta 0, offset delta 0
	body += bytesField(m.Key) + bytesField(m.Value)
	body += varintLen(int64(len(m.Headers)))
	for _, h := range m.Headers {
		body += varintLen(int64(len(h.Key))) + len(h.Key) + varintLen(int64(len(h.Value))) + len(h.Value)
	}
	return recordBatchOverhead + varintLen(int64(body)) + body
}

func bytesField(e sarama.Encoder) int {
	if e == nil {
		return varintLen(-1)
	}
	n := e.Length()
	return varintLen(int64(n)) + n
}

// varintLen is the length of v as a zig-zag varint, as Kafka's record format encodes it.
func varintLen(v int64) int {
	u := uint64((v << 1) ^ (v >> 63))
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}
