package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// TestEnqueueLimits: each field over its limit (or with forbidden characters) is an error naming
// the message (index and id), the field and the limit, and nothing of the batch is written; values at
// the limits are written as given.
func TestEnqueueLimits(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := context.Background()
	ok := outbox.Message{Destination: outbox.EventBus, Payload: []byte("fine")}
	hdrs := func(n, size int) map[string]string { // n headers whose names and values add up to size bytes
		h := map[string]string{}
		for i := range n {
			name := fmt.Sprintf("x-%04d", i)
			h[name] = strings.Repeat("v", size/n-len(name))
		}
		return h
	}
	cases := []struct {
		name      string
		maxHeader int
		bad       outbox.Message
		want      []string
	}{
		{"route too long", 0, outbox.Message{Route: strings.Repeat("r", 256)}, []string{"msgs[1].Route", "256 bytes", "limit is 255"}},
		{"route with newline", 0, outbox.Message{Route: "orders\nx"}, []string{"msgs[1].Route", "control character", "U+000A"}},
		{"route with DEL", 0, outbox.Message{Route: "orders\x7f"}, []string{"msgs[1].Route", "control character"}},
		{"route with C1 control", 0, outbox.Message{Route: "orders\u0085"}, []string{"msgs[1].Route", "control character"}},
		{"key too long", 0, outbox.Message{Key: strings.Repeat("k", 1025)}, []string{"msgs[1].Key", "1025 bytes", "limit is 1024"}},
		{"type too long", 0, outbox.Message{Type: strings.Repeat("t", 256)}, []string{"msgs[1].Type", "256 bytes", "limit is 255"}},
		{"destination too long", 0, outbox.Message{Destination: outbox.Destination(strings.Repeat("d", 256))}, []string{"msgs[1].Destination", "limit is 255"}},
		{"header name with space", 0, outbox.Message{Headers: map[string]string{"x trace": "1"}}, []string{"msgs[1].Headers", `"x trace"`, "HTTP token"}},
		{"header name with colon", 0, outbox.Message{Headers: map[string]string{"a:b": "1"}}, []string{"msgs[1].Headers", `"a:b"`, "HTTP token"}},
		{"header name with CR LF", 0, outbox.Message{Headers: map[string]string{"a\r\nInjected": "1"}}, []string{"msgs[1].Headers", "HTTP token"}},
		{"empty header name", 0, outbox.Message{Headers: map[string]string{"": "1"}}, []string{"msgs[1].Headers", "empty"}},
		{"headers over the default", 0, outbox.Message{Headers: hdrs(16, 64<<10+16)}, []string{"msgs[1].Headers", "65552 bytes", "limit is 65536"}},
		{"headers over a set limit", 100, outbox.Message{Headers: hdrs(2, 102)}, []string{"msgs[1].Headers", "102 bytes", "limit is 100"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.bad
			if bad.Destination == "" {
				bad.Destination = outbox.EventBus
			}
			bad.ID = mustV7()
			err := outbox.Enqueuer{Schema: schema, MaxHeaderBytes: tc.maxHeader}.Enqueue(ctx, db.Pool, ok, bad, ok)
			if !errors.Is(err, outbox.ErrInvalidMessage) {
				t.Fatalf("err = %v, want ErrInvalidMessage", err)
			}
			for _, s := range append(tc.want, bad.ID) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	if n := db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox"); n != 0 {
		t.Fatalf("bad input wrote %d rows", n)
	}

	// At the limits: written as given.
	atLimit := []outbox.Message{
		{Destination: outbox.Destination(strings.Repeat("d", 255)), Route: strings.Repeat("é", 127) + "r", Key: strings.Repeat("k", 1024),
			Type: strings.Repeat("t", 255), Headers: hdrs(16, 64<<10)},
		{Destination: outbox.EventBus, Route: "topic.with-every_token!#$%&'*+^`|~", Headers: map[string]string{"X-Token!#$%&'*+-.^_`|~09": "v\tw"}},
	}
	if err := outbox.Enqueue(ctx, schema, db.Pool, atLimit...); err != nil {
		t.Fatalf("messages at the limits: %v", err)
	}
	got := readRows(t, db)
	if len(got) != 2 || got[0].route != atLimit[0].Route || got[0].key != atLimit[0].Key || got[0].typ != atLimit[0].Type ||
		len(got[0].headers) != 16 || got[1].headers["X-Token!#$%&'*+-.^_`|~09"] != "v\tw" {
		t.Fatalf("rows at the limits were not written as given: %d rows", len(got))
	}
}
