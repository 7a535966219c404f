package outbox

import (
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// commitLog remembers commit times of committed transactions until the watermark passes them,
// so the relay record can name the last confirmed commit time.
type commitLog struct {
	mu      sync.Mutex
	entries []commitEntry
	last    time.Time
}

type commitEntry struct {
	end pglogrepl.LSN
	at  time.Time
}

// commitLogGrain is the commit-time resolution of the commit log: transactions that commit within it
// share one entry, which keeps the earliest commit time, so the log stays small while a parked key
// holds the confirmed position back, and the recorded time is never later than the true one.
const commitLogGrain = 10 * time.Millisecond

func (c *commitLog) add(end pglogrepl.LSN, at time.Time) {
	c.mu.Lock()
	if n := len(c.entries); n > 0 && at.Sub(c.entries[n-1].at) < commitLogGrain {
		c.entries[n-1].end = end
	} else {
		c.entries = append(c.entries, commitEntry{end, at})
	}
	c.mu.Unlock()
}

func (c *commitLog) timeAt(lsn pglogrepl.LSN) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := 0
	for i < len(c.entries) && c.entries[i].end <= lsn {
		c.last = c.entries[i].at
		i++
	}
	c.entries = append(c.entries[:0], c.entries[i:]...)
	return c.last
}
