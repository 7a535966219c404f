package kafka

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestPositionRoundTripAndNext(t *testing.T) {
	t.Parallel()
	p0 := &position{systemID: "7713926144407591115", slot: "pgoutbox_app", w: 100, exc: map[pglogrepl.LSN][]int64{}}
	p1 := p0.next(100, []recKey{{200, 7}, {200, 5}, {200, 6}, {150, 1}, {300, 1 << 40}, {90, 3}, {200, 9}})
	want := map[pglogrepl.LSN][]int64{150: {1}, 200: {5, 6, 7, 9}, 300: {1 << 40}}
	if !reflect.DeepEqual(p1.exc, want) {
		t.Fatalf("next: exceptions %v, want %v (90 is below W and dropped)", p1.exc, want)
	}
	for _, c := range []struct {
		k    recKey
		want bool
	}{{recKey{90, 3}, true}, {recKey{99, 1}, true}, {recKey{200, 6}, true}, {recKey{200, 8}, false}, {recKey{150, 2}, false}, {recKey{300, 1 << 40}, true}} {
		if got := p1.delivered(c.k); got != c.want {
			t.Errorf("delivered(%v) = %v, want %v", c.k, got, c.want)
		}
	}
	p2 := p1.next(200, []recKey{{200, 10}, {250, 1}})
	want2 := map[pglogrepl.LSN][]int64{200: {5, 6, 7, 9, 10}, 250: {1}, 300: {1 << 40}}
	if !reflect.DeepEqual(p2.exc, want2) || p2.w != 200 {
		t.Fatalf("next(200): W %s, exceptions %v, want %v", p2.w, p2.exc, want2)
	}
	if !reflect.DeepEqual(p1.exc[200], []int64{5, 6, 7, 9}) {
		t.Fatalf("next modified the previous position: %v", p1.exc[200])
	}
	for _, p := range []*position{p0, p1, p2} {
		b := p.encode()
		got, err := decodePosition(b)
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", p, err)
		}
		if got.w != p.w || got.systemID != p.systemID || got.slot != p.slot || len(got.exc) != len(p.exc) ||
			(len(p.exc) > 0 && !reflect.DeepEqual(got.exc, p.exc)) {
			t.Errorf("round trip: got %+v, want %+v", got, p)
		}
	}
	// A transaction's consecutive Seqs cost a few bytes whatever their number.
	keys := make([]recKey, 100_000)
	for i := range keys {
		keys[i] = recKey{500, int64(1_000_000 + i)}
	}
	if n := len(p0.next(100, keys).encode()); n > 64 {
		t.Errorf("100,000 consecutive Seqs encode to %d bytes, want a handful", n)
	}
}

func TestDecodePositionRejectsBadInput(t *testing.T) {
	t.Parallel()
	good := (&position{systemID: "s", slot: "x", w: 10, exc: map[pglogrepl.LSN][]int64{20: {1, 2}}}).encode()
	for name, b := range map[string][]byte{
		"empty": nil, "version": {9}, "truncated": good[:len(good)-1], "trailing": append(append([]byte{}, good...), 0),
	} {
		if _, err := decodePosition(b); !errors.Is(err, errBadPosition) {
			t.Errorf("%s: err = %v, want errBadPosition", name, err)
		}
	}
}

func FuzzDecodePosition(f *testing.F) {
	f.Add((&position{systemID: "s", slot: "x", w: 10, exc: map[pglogrepl.LSN][]int64{20: {1, 2, 5}, 30: {-4}}}).encode())
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePosition(b)
		if err != nil {
			return
		}
		again, err := decodePosition(p.encode())
		if err != nil || again.w != p.w || again.size() != p.size() {
			t.Fatalf("re-encoding a decoded position: %v (size %d, was %d)", err, again.size(), p.size())
		}
	})
}

func TestExactlyOnceConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" for valid
	}{
		{"off by default", func(*Config) {}, ""},
		{"defaults", func(c *Config) { c.ExactlyOnce.Enable = true }, ""},
		{"bad position topic", func(c *Config) { c.ExactlyOnce.Enable = true; c.ExactlyOnce.PositionTopic = "a b" }, "ExactlyOnce.PositionTopic"},
		{"negative interval", func(c *Config) { c.ExactlyOnce.Enable = true; c.ExactlyOnce.CommitInterval = -1 }, "ExactlyOnce.CommitInterval"},
		{"no records", func(c *Config) { c.ExactlyOnce.Enable = true; c.ExactlyOnce.CommitRecords = 0 }, "ExactlyOnce.CommitRecords"},
		{"position larger than a record", func(c *Config) { c.ExactlyOnce.Enable = true; c.ExactlyOnce.PositionMaxBytes = c.MaxMessageBytes }, "ExactlyOnce.PositionMaxBytes"},
		{"old broker", func(c *Config) { c.ExactlyOnce.Enable = true; c.KafkaVersion = "2.4.0" }, "KafkaVersion 2.5.0"},
		{"no timeout", func(c *Config) { c.ExactlyOnce.Enable = true; c.ExactlyOnce.TransactionTimeout = 0 }, "ExactlyOnce.TransactionTimeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.Brokers = []string{"k:9092"}
			c.mod(&cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("Validate() = %v, want an error naming %q", err, c.want)
			}
		})
	}
}
