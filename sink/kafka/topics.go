package kafka

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// maxCachedTopics bounds the topic cache: topics named by Routes come from messages, so their number
// has no limit of its own.
const maxCachedTopics = 1024

// topicCache caches each topic's max.message.bytes (DescribeConfigs), for at most max topics. A lookup
// that fails is not cached; concurrent lookups of one topic share one request.
type topicCache struct {
	admin sarama.ClusterAdmin
	ttl   time.Duration
	max   int
	mu    sync.Mutex
	m     map[string]*topicEntry
}

type topicEntry struct {
	ready chan struct{}
	max   int
	err   error
	at    time.Time
}

func newTopicCache(admin sarama.ClusterAdmin, ttl time.Duration) *topicCache {
	return &topicCache{admin: admin, ttl: ttl, max: maxCachedTopics, m: map[string]*topicEntry{}}
}

// evictLocked makes room for one entry: it drops expired entries, then arbitrary ones (map order is
// random) until the cache holds fewer than max. A dropped entry's lookup in flight still answers its
// waiters. c.mu must be held.
func (c *topicCache) evictLocked() {
	if len(c.m) < c.max {
		return
	}
	for topic, e := range c.m {
		select {
		case <-e.ready:
			if e.err != nil || time.Since(e.at) > c.ttl {
				delete(c.m, topic)
			}
		default:
		}
	}
	for topic := range c.m {
		if len(c.m) < c.max {
			return
		}
		delete(c.m, topic)
	}
}

// size returns how many topics the cache holds.
func (c *topicCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func (c *topicCache) forget(topic string) {
	c.mu.Lock()
	delete(c.m, topic)
	c.mu.Unlock()
}

// maxMessageBytes returns the topic's max.message.bytes; an error wrapping
// sarama.ErrUnknownTopicOrPartition means the topic does not exist.
func (c *topicCache) maxMessageBytes(ctx context.Context, topic string) (int, error) {
	c.mu.Lock()
	e := c.m[topic]
	if e != nil {
		select {
		case <-e.ready:
			if e.err != nil || time.Since(e.at) > c.ttl {
				e = nil
			}
		default: // a lookup is in flight: share it
		}
	}
	if e == nil {
		c.evictLocked()
		e = &topicEntry{ready: make(chan struct{})}
		c.m[topic] = e
		go c.load(topic, e)
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
		return e.max, e.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (c *topicCache) load(topic string, e *topicEntry) {
	defer close(e.ready)
	e.at = time.Now()
	entries, err := c.admin.DescribeConfig(sarama.ConfigResource{
		Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"max.message.bytes"},
	})
	if err != nil {
		e.err = err
		c.mu.Lock()
		if c.m[topic] == e {
			delete(c.m, topic) // failures are not cached: a missing topic named by a Route takes no room
		}
		c.mu.Unlock()
		return
	}
	for _, ce := range entries {
		if ce.Name == "max.message.bytes" {
			n, err := strconv.Atoi(ce.Value)
			if err != nil {
				e.err = fmt.Errorf("topic %q max.message.bytes %q: %w", topic, ce.Value, err)
				return
			}
			e.max = n
			return
		}
	}
	e.max = 0 // unknown: no pre-check, the broker decides
}
