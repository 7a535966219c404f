package watermark

import "github.com/jackc/pglogrepl"

// entry is one item of the tracker's queue: a transaction (tx != nil) or a
// run of coalesced keepalives (tx == nil) whose WAL end is lsn.
type entry struct {
	tx  *Tx
	lsn pglogrepl.LSN
}

// queue is a growable ring buffer of entries in received order. Once it has
// grown to the high-water mark of items in flight it no longer allocates.
// It is not safe for concurrent use; the Tracker guards it with its mutex.
type queue struct {
	buf  []entry // len(buf) is zero or a power of two
	head int     // index of the first item
	n    int     // number of items
}

// push appends e at the back.
func (q *queue) push(e entry) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = e
	q.n++
}

// grow doubles the buffer (minimum 16), keeping the items in order.
func (q *queue) grow() {
	buf := make([]entry, max(16, 2*len(q.buf)))
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)&(len(q.buf)-1)]
	}
	q.buf, q.head = buf, 0
}

// at returns the i-th item from the front; 0 <= i < q.n.
func (q *queue) at(i int) *entry {
	return &q.buf[(q.head+i)&(len(q.buf)-1)]
}

// front returns the first item; q.n > 0.
func (q *queue) front() *entry { return q.at(0) }

// back returns the last item; q.n > 0.
func (q *queue) back() *entry { return q.at(q.n - 1) }

// pop drops the first item, clearing its slot so the Tx can be collected.
func (q *queue) pop() {
	q.buf[q.head] = entry{}
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
}
