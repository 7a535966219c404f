package replication

import (
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

func TestParseTimelineHistory(t *testing.T) {
	t.Parallel()
	history := []byte("1\t0/3089080\tno recovery target specified\n\n# a comment\n2\t0/5000000\tbefore 2000-01-01 00:00:00+00\n")
	cases := []struct {
		name string
		tli  int32
		want pglogrepl.LSN
		ok   bool
	}{
		{"first timeline", 1, 0x3089080, true},
		{"second timeline", 2, 0x5000000, true},
		{"not an ancestor", 3, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := parseTimelineHistory(history, tc.tli)
			if err != nil || ok != tc.ok || got != tc.want {
				t.Fatalf("parseTimelineHistory(%d) = %s, %t, %v; want %s, %t", tc.tli, got, ok, err, tc.want, tc.ok)
			}
		})
	}
	if _, _, err := parseTimelineHistory([]byte("x\t0/1\treason\n"), 1); err == nil {
		t.Fatal("a line with a bad timeline parsed")
	}
	if _, _, err := parseTimelineHistory([]byte("1\tnot-an-lsn\treason\n"), 1); err == nil {
		t.Fatal("a line with a bad switch point parsed")
	}
}

func TestCreateSlotCommand(t *testing.T) {
	t.Parallel()
	cases := []struct {
		failover bool
		snapshot string
		want     string
	}{
		{false, "nothing", "CREATE_REPLICATION_SLOT s_1 LOGICAL pgoutput NOEXPORT_SNAPSHOT"},
		{false, "export", "CREATE_REPLICATION_SLOT s_1 LOGICAL pgoutput EXPORT_SNAPSHOT"},
		{true, "nothing", "CREATE_REPLICATION_SLOT s_1 LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)"},
		{true, "export", "CREATE_REPLICATION_SLOT s_1 LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)"},
	}
	for _, tc := range cases {
		s := &Stream{cfg: Config{Slot: "s_1", Failover: tc.failover}}
		if got := s.createSlotCommand(tc.snapshot); got != tc.want {
			t.Errorf("failover %t, snapshot %s: %q, want %q", tc.failover, tc.snapshot, got, tc.want)
		}
	}
}

func TestRedactNamesEveryHost(t *testing.T) {
	t.Parallel()
	cfg, err := pgx.ParseConfig("postgres://relay:secret@db-a:5432,db-b:5433/app?sslmode=prefer&target_session_attrs=read-write")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := redact(&cfg.Config), "postgres://relay@db-a:5432,db-b:5433/app"; got != want {
		t.Fatalf("redact = %q, want %q", got, want)
	}
}
