package replication

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestCheckMessagesSupported(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version string
		ok      bool
	}{
		{"15.18 (Debian 15.18-0+deb12u1)", true},
		{"14.0", true},
		{"17beta1", true},
		{"18.1", true},
		{"13.16", false},
		{"9.6.24", false},
		{"", false},
		{"unknown", false},
	} {
		err := checkMessagesSupported(tc.version)
		if tc.ok != (err == nil) {
			t.Errorf("%q: %v, want ok=%v", tc.version, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrUnsupportedServer) || !isFatal(err) || !strings.Contains(err.Error(), "PostgreSQL 14 or later")) {
			t.Errorf("%q: %v, want a fatal ErrUnsupportedServer naming the version needed", tc.version, err)
		}
	}
}

// messages 'true' only when Config.Messages is set; nothing about messages otherwise.
func TestPluginArgsMessages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		want []string
	}{
		{Config{Publication: "pgoutbox_app"}, []string{"proto_version '1'", `publication_names '"pgoutbox_app"'`, "binary 'true'"}},
		{Config{Publication: "pgoutbox_app", Messages: true}, []string{"proto_version '1'", `publication_names '"pgoutbox_app"'`, "binary 'true'", "messages 'true'"}},
		{Config{Publication: "pgoutbox_app", Messages: true, Streaming: true},
			[]string{"proto_version '2'", `publication_names '"pgoutbox_app"'`, "binary 'true'", "streaming 'on'", "messages 'true'"}},
	} {
		s := &Stream{cfg: tc.cfg}
		if got := s.pluginArgs(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.cfg, got, tc.want)
		}
	}
}

// A lost slot of a stream that read logical messages says that those cannot be replayed.
func TestSlotLostErrorLogicalMessages(t *testing.T) {
	t.Parallel()
	e := &SlotLostError{Slot: "s", Reason: "slot dropped"}
	if strings.Contains(e.Error(), "logical decoding messages") {
		t.Errorf("without Messages: %s", e)
	}
	e.Messages = true
	if !strings.Contains(e.Error(), "no replay can find them") {
		t.Errorf("with Messages: %s", e)
	}
}
