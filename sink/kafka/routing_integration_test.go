package kafka_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

func routed(dest, route, key string, seq int) outbox.Record {
	r := sinktest.Record(key, seq)
	r.Destination, r.Route = outbox.Destination(dest), route
	return r
}

func idsOf(t *testing.T, brokers []string, topic string) []string {
	t.Helper()
	var out []string
	for _, r := range kafkatest.ReadAll(t, brokers, topic) {
		id, _ := kafkatest.Header(r, kafka.HeaderID)
		out = append(out, id)
	}
	return out
}

// A topic configured for the destination always wins over the record's Route: records whose Route names
// another existing topic, a missing topic, an illegal name or nothing all go to the configured topic.
func TestConfiguredTopicWinsOverRoute(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	configured, other := kafkatest.TopicName(t), kafkatest.TopicName(t)+".other"
	kafkatest.CreateTopic(t, brokers, configured, 1, nil)
	kafkatest.CreateTopic(t, brokers, other, 1, nil)
	s := newRealSink(t, brokers, map[string]string{"event_bus": configured}, nil)
	batch := []outbox.Record{
		routed("event_bus", other, "k", 0),
		routed("event_bus", "bench", "k", 1), // the reported case: a Route naming a topic that does not exist
		routed("event_bus", "no/such topic", "k", 2),
		routed("event_bus", "", "k", 3),
	}
	if err := s.Send(ctx(t, 30*time.Second), batch); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := idsOf(t, brokers, configured); strings.Join(got, ",") != "k-000000,k-000001,k-000002,k-000003" {
		t.Errorf("configured topic holds %v, want all 4 records in order", got)
	}
	if got := idsOf(t, brokers, other); len(got) != 0 {
		t.Errorf("the Route's topic got %v, want nothing", got)
	}
	if b := s.Blocked(); len(b) != 0 {
		t.Errorf("Blocked() = %v", b)
	}
}

// Without a configured topic the Route picks it, within the destination's AllowedTopics: exact names
// and prefixes are delivered; a Route outside the list, even naming an existing topic, or one that is
// not a topic name, fails permanently with the rule in the error; a destination without an allow-list
// takes any Route.
func TestAllowedTopicsRestrictTheRoute(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	base := kafkatest.TopicName(t)
	prefixed, exact, outside := base+".orders.v1", base+".audit", base+".billing"
	for _, topic := range []string{prefixed, exact, outside} {
		kafkatest.CreateTopic(t, brokers, topic, 1, nil)
	}
	allowed := []string{base + ".orders.*", exact}
	s := newRealSink(t, brokers, nil, func(c *kafka.Config) { c.AllowedTopics = map[string][]string{"orders": allowed} })
	batch := []outbox.Record{
		routed("orders", prefixed, "a", 0),
		routed("orders", outside, "a", 1),
		routed("orders", exact, "a", 2),
		routed("orders", base+".orders", "b", 3), // the prefix needs one more character
		routed("orders", "../etc", "b", 4),
		routed("open", outside, "c", 5), // no allow-list for this destination
	}
	err := s.Send(ctx(t, 30*time.Second), batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) || outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want a BatchError", err)
	}
	rule := "allowed topics: " + strings.Join(allowed, ", ")
	for i, want := range []string{"", rule, "", rule, "cannot be a topic", ""} {
		e := be.Errs[i]
		switch {
		case want == "" && e != nil:
			t.Errorf("record %d (Route %q): %v, want delivered", i, batch[i].Route, e)
		case want != "" && (!outbox.IsPermanent(e) || !strings.Contains(e.Error(), want)):
			t.Errorf("record %d (Route %q): %v, want a permanent error containing %q", i, batch[i].Route, e, want)
		}
	}
	for topic, want := range map[string]string{prefixed: "a-000000", exact: "a-000002", outside: "c-000005"} {
		if got := idsOf(t, brokers, topic); strings.Join(got, ",") != want {
			t.Errorf("topic %s holds %v, want [%s]", topic, got, want)
		}
	}
	if st := s.Stats(); st.RouteNotAllowed != 3 || st.Permanent != 3 {
		t.Errorf("stats %+v, want 3 routes not allowed", st)
	}
}

// A Route naming a missing topic (inside the allow-list) fails that record only, retryably: the sink
// is not blocked, other records are delivered, and later records of the same key wait behind it.
// Once the topic exists, the record goes through.
func TestRouteToMissingTopicFailsOnlyThatRecord(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	base := kafkatest.TopicName(t)
	good, missing := base+".good", base+".missing"
	kafkatest.CreateTopic(t, brokers, good, 1, nil)
	s := newRealSink(t, brokers, nil, func(c *kafka.Config) { c.AllowedTopics = map[string][]string{"d": {base + ".*"}} })
	batch := []outbox.Record{
		routed("d", good, "a", 0),
		routed("d", missing, "a", 1),
		routed("d", good, "a", 2), // same key, after the failed one: held back
		routed("d", good, "b", 3),
		routed("d", missing, "c", 4),
	}
	err := s.Send(ctx(t, 30*time.Second), batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) || outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want a BatchError, not unavailable", err)
	}
	for _, i := range []int{1, 4} {
		if e := be.Errs[i]; e == nil || outbox.IsPermanent(e) || outbox.IsUnavailable(e) || !strings.Contains(e.Error(), missing) {
			t.Errorf("record %d: %v, want a retryable error naming %s", i, e, missing)
		}
	}
	if e := be.Errs[2]; !errors.Is(e, outbox.ErrNotAttempted) {
		t.Errorf("record 2 (same key as the failed one): %v, want not attempted", e)
	}
	if be.Errs[0] != nil || be.Errs[3] != nil {
		t.Errorf("records 0 and 3: %v, %v, want delivered", be.Errs[0], be.Errs[3])
	}
	if b := s.Blocked(); len(b) != 0 {
		t.Errorf("Blocked() = %v: a message's Route blocked the sink", b)
	}
	if st := s.Stats(); st.RouteTopicMissing != 2 || st.UnknownTopic != 0 {
		t.Errorf("stats %+v, want 2 missing Route topics and no unknown configured topic", st)
	}
	kafkatest.CreateTopic(t, brokers, missing, 1, nil)
	if err := s.Send(ctx(t, 30*time.Second), []outbox.Record{batch[1], batch[2], batch[4]}); err != nil {
		t.Fatalf("Send after creating the topic: %v", err)
	}
	if got := idsOf(t, brokers, good); strings.Join(got, ",") != "a-000000,b-000003,a-000002" {
		t.Errorf("%s holds %v", good, got)
	}
}

// The topic cache stays bounded whatever topics Routes name; missing topics take no room.
func TestTopicCacheBounded(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	base := kafkatest.TopicName(t)
	s := newRealSink(t, brokers, nil, nil)
	const limit = 3
	s.SetTopicCacheLimit(limit)
	var batch []outbox.Record
	for i := range 6 {
		topic := fmt.Sprintf("%s.t%d", base, i)
		kafkatest.CreateTopic(t, brokers, topic, 1, nil)
		batch = append(batch, routed("d", topic, fmt.Sprint("k", i), i))
	}
	for i := range 20 {
		batch = append(batch, routed("d", fmt.Sprintf("%s.missing%d", base, i), fmt.Sprint("m", i), 100+i))
	}
	var be *outbox.BatchError
	if err := s.Send(ctx(t, 60*time.Second), batch); !errors.As(err, &be) {
		t.Fatalf("Send = %v, want a BatchError for the missing topics", err)
	}
	for i := range 6 {
		if be.Errs[i] != nil {
			t.Errorf("record %d: %v", i, be.Errs[i])
		}
	}
	if n := s.CachedTopics(); n > limit {
		t.Errorf("topic cache holds %d topics, over its bound %d", n, limit)
	}
}
