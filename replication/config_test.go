package replication_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/replication"
)

func TestValidateSlotName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		slot string
		ok   bool
	}{
		{"simple", "pgoutbox_app", true},
		{"digits", "slot_01", true},
		{"max length", strings.Repeat("a", 63), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", 64), false},
		{"upper case", "Slot", false},
		{"dash", "my-slot", false},
		{"space", "my slot", false},
		{"injection", "x LOGICAL pgoutput; DROP", false},
		{"quote", `a"b`, false},
		{"newline", "a\nb", false},
		{"unicode", "slöt", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := replication.ValidateSlotName(tt.slot)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateSlotName(%q) = %v, want ok=%v", tt.slot, err, tt.ok)
			}
			if err != nil && (!errors.Is(err, replication.ErrInvalidConfig) || !strings.Contains(err.Error(), "Slot")) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig or name the field", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*replication.Config)
		wantErr string // substring naming the field; "" = valid
	}{
		{"defaults", func(*replication.Config) {}, ""},
		{"no schema", func(c *replication.Config) { c.Schema = "" }, "Schema"},
		{"bad schema", func(c *replication.Config) { c.Schema = "a;b" }, "Schema"},
		{"bad slot", func(c *replication.Config) { c.Slot = "Bad" }, "Slot"},
		{"long publication", func(c *replication.Config) { c.Publication = strings.Repeat("p", 64) }, "Publication"},
		{"long instance", func(c *replication.Config) { c.InstanceID = strings.Repeat("i", 60) }, "InstanceID"},
		{"non-ascii instance", func(c *replication.Config) { c.InstanceID = "é" }, "InstanceID"},
		{"negative status interval", func(c *replication.Config) { c.StatusInterval = -time.Second }, "StatusInterval"},
		{"read timeout too short", func(c *replication.Config) { c.ReadTimeout = time.Second; c.StatusInterval = time.Second }, "ReadTimeout"},
		{"reconnect bounds", func(c *replication.Config) { c.ReconnectMin = time.Minute; c.ReconnectMax = time.Second }, "ReconnectMin"},
		{"negative standby poll", func(c *replication.Config) { c.StandbyPoll = -1 }, "StandbyPoll"},
		{"batch too large", func(c *replication.Config) { c.MaxBatch = replication.MaxBatchLimit + 1 }, "MaxBatch"},
		{"negative batch", func(c *replication.Config) { c.MaxBatch = -1 }, "MaxBatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := replication.Config{Schema: "app"}
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, replication.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := replication.DefaultConfig("App")
	if c.Slot != "pgoutbox_app" || c.Publication != "pgoutbox_App" || !c.CreateSlot || c.InstanceID == "" ||
		c.StatusInterval != time.Second || c.ReadTimeout != 30*time.Second || c.ReconnectMin != 100*time.Millisecond ||
		c.ReconnectMax != 10*time.Second || c.StandbyPoll != time.Second || c.MaxBatch != 512 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	t.Parallel()
	if _, err := replication.New("postgres://u:secret@localhost/db", replication.Config{Schema: "app", Slot: "BAD"}); !errors.Is(err, replication.ErrInvalidConfig) {
		t.Fatalf("bad slot: %v", err)
	}
	_, err := replication.New("postgres://u:secret@localhost:notaport/db", replication.Config{Schema: "app"})
	if !errors.Is(err, replication.ErrInvalidConfig) {
		t.Fatalf("bad connection string: %v", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error leaks the password: %v", err)
	}
}
