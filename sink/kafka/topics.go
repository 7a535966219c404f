package kafka

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// topicCache caches each topic's max.message.bytes (DescribeConfigs). A lookup that fails is not
// cached; concurrent lookups of one topic share one request.
type topicCache struct {
	admin sarama.ClusterAdmin
	ttl   time.Duration
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
	return &topicCache{admin: admin, ttl: ttl, m: map[string]*topicEntry{}}
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
