// Package keychain orders the records of one Send for sinks that publish several records at once but
// must keep the order of each key: it links each record to the next record of its key, so that a
// record is published only once the one before it of its key is acknowledged.
package keychain

// Chain links the records of a batch by key. Add records in batch order; then Ready holds the records
// that can go at once (the first of each key and every keyless record) and Next[i] the record that
// follows record i in its key (-1 for none). A Chain is not safe for concurrent use.
type Chain struct {
	Next  []int32
	Ready []int
	last  map[string]int
}

// New returns a Chain for a batch of n records.
func New(n int) *Chain {
	c := &Chain{Next: make([]int32, n), Ready: make([]int, 0, n), last: make(map[string]int, n)}
	for i := range c.Next {
		c.Next[i] = -1
	}
	return c
}

// Add links record i, whose key is key ("" for a keyless record, which has no order to keep). A
// record not added (one that failed before publishing) is neither ready nor linked.
func (c *Chain) Add(i int, key string) {
	if key == "" {
		c.Ready = append(c.Ready, i)
		return
	}
	if j, ok := c.last[key]; ok {
		c.Next[j] = int32(i)
	} else {
		c.Ready = append(c.Ready, i)
	}
	c.last[key] = i
}
