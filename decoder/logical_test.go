package decoder

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

// msgRecorder is a recorder that also takes logical messages.
type msgRecorder struct{ recorder }

func (r *msgRecorder) Message(m LogicalMessage) error {
	e := fmt.Sprintf("M %s tx=%v prefix=%q content=%q", m.LSN, m.Transactional, m.Prefix, m.Content)
	if m.MaybeRolledBack {
		e += " maybe-rolled-back"
	}
	return r.add(e)
}

func TestLogicalMessages(t *testing.T) {
	t.Parallel()
	rel := encRelation(16384, "public", "pkg_outbox", outboxCols...)
	ins := func(seq string) []byte { return encInsert(16384, txt(seq), txt("id"), null()) }
	row := func(seq string) string { return fmt.Sprintf(`I public.pkg_outbox seq=%q id="id" payload=NULL`, seq) }
	msg := func(at uint64, content string) []byte { return encMessageAt(true, at, "pgoutbox:app", content) }
	got := func(at uint64, content string, flags ...string) string {
		return strings.Join(append([]string{fmt.Sprintf(`M %s tx=true prefix="pgoutbox:app" content=%q`, pglogrepl.LSN(at), content)}, flags...), " ")
	}
	const streamBegin = "B xid=5 final=0/500 t=2024-01-02T03:04:05.000006Z"
	const streamEnd = "C xid=5 commit=0/500 end=0/508"
	tests := []struct {
		name    string
		spill   bool
		msgs    [][]byte
		want    []string
		wantErr error
	}{
		{
			name: "messages and rows of a transaction in WAL order",
			msgs: [][]byte{encBegin(0x100, 7), msg(0x10, "first"), rel, ins("1"), msg(0x20, "second"), ins("2"), encCommit(0x100, 0x108)},
			want: []string{beginOne, got(0x10, "first"), row("1"), got(0x20, "second"), row("2"), commitOne},
		},
		{
			name: "non-transactional messages come outside transactions",
			msgs: [][]byte{encMessageAt(false, 0x30, "other", "x"), encMessageAt(false, 0x31, "", "")},
			want: []string{`M 0/30 tx=false prefix="other" content="x"`, `M 0/31 tx=false prefix="" content=""`},
		},
		{
			name:    "a transactional message outside a transaction is a protocol error",
			msgs:    [][]byte{msg(0x10, "lost")},
			wantErr: ErrProtocol,
		},
		{
			name: "streamed transaction: messages buffered and replayed with its rows",
			msgs: [][]byte{
				encStreamStart(5, true), streamed(5, msg(0x10, "a")), streamed(5, rel), streamed(5, ins("1")), encStreamStop(),
				encStreamStart(5, false), streamed(6, ins("2")), streamed(5, msg(0x20, "b")), encStreamStop(),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{streamBegin, got(0x10, "a"), row("1"), row("2"), got(0x20, "b"), streamEnd},
		},
		{
			name:  "streamed and spilled",
			spill: true,
			msgs: [][]byte{
				encStreamStart(5, true), streamed(5, msg(0x10, strings.Repeat("a", 100))), streamed(5, rel), streamed(5, ins("1")), encStreamStop(),
				encStreamStart(5, false), streamed(5, msg(0x20, "b")), encStreamStop(),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{streamBegin, got(0x10, strings.Repeat("a", 100)), row("1"), got(0x20, "b"), streamEnd},
		},
		{
			// pgoutput tags streamed messages with the top-level xid: after a subtransaction's Stream
			// Abort, the messages buffered before it may have been the subtransaction's.
			name: "streamed: messages before a subtransaction's rollback may be rolled back",
			msgs: [][]byte{
				encStreamStart(5, true), streamed(5, rel), streamed(5, msg(0x10, "before")), streamed(6, ins("6")), streamed(5, msg(0x18, "in-sub")), encStreamStop(),
				encStreamAbort(5, 6),
				encStreamStart(5, false), streamed(5, msg(0x20, "after")), streamed(5, ins("1")), encStreamStop(),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{streamBegin, got(0x10, "before", "maybe-rolled-back"), got(0x18, "in-sub", "maybe-rolled-back"),
				got(0x20, "after"), row("1"), streamEnd},
		},
		{
			// A change of a transaction that did not roll back, after a message, proves the message
			// is not the rolled-back subtransaction's; messages after the last such change may be.
			name: "streamed: a later change of a live transaction clears a message",
			msgs: [][]byte{
				encStreamStart(5, true), streamed(5, rel), streamed(5, msg(0x10, "parent")), streamed(5, ins("1")),
				// pgoutput tags every streamed message with the top-level xid (5).
				streamed(5, msg(0x11, "sibling")), streamed(6, ins("6")), // savepoint 6, released: kept
				streamed(5, msg(0x12, "child-of-8")), streamed(7, ins("7")), // savepoint 8 > savepoint 7, released
				streamed(8, ins("8")), streamed(5, msg(0x13, "in-8")), encStreamStop(),
				encStreamAbort(5, 7), encStreamAbort(5, 8), // ROLLBACK TO savepoint 8: its child 7 first
				encStreamStart(5, false), streamed(5, msg(0x20, "after")), encStreamStop(),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{streamBegin, got(0x10, "parent"), row("1"), got(0x11, "sibling"), row("6"),
				got(0x12, "child-of-8", "maybe-rolled-back"), got(0x13, "in-8", "maybe-rolled-back"), got(0x20, "after"), streamEnd},
		},
		{
			name:  "streamed, spilled: the same after a subtransaction's rollback",
			spill: true,
			msgs: [][]byte{
				encStreamStart(5, true), streamed(5, rel), streamed(5, msg(0x10, "before")), streamed(6, ins("6")), encStreamStop(),
				encStreamAbort(5, 6),
				encStreamStart(5, false), streamed(5, msg(0x20, "after")), encStreamStop(),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{streamBegin, got(0x10, "before", "maybe-rolled-back"), got(0x20, "after"), streamEnd},
		},
		{
			name: "streamed transaction aborted: its messages never come",
			msgs: [][]byte{
				encStreamStart(5, true), streamed(5, msg(0x10, "gone")), encStreamStop(), encStreamAbort(5, 5),
				encBegin(0x100, 7), msg(0x30, "kept"), encCommit(0x100, 0x108),
			},
			want: []string{beginOne, got(0x30, "kept"), commitOne},
		},
		{
			name: "a non-transactional message inside a stream block comes at once",
			msgs: [][]byte{
				encStreamStart(5, true), streamed(5, encMessageAt(false, 0x40, "p", "now")), streamed(5, msg(0x41, "later")), encStreamStop(),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{`M 0/40 tx=false prefix="p" content="now"`, streamBegin, got(0x41, "later"), streamEnd},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Streaming: true, SpillDir: t.TempDir()}
			if tc.spill {
				cfg.MemoryLimit = 16
			}
			d, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			rec := &msgRecorder{}
			for i, m := range tc.msgs {
				err = d.Decode(m, rec)
				if err != nil && i != len(tc.msgs)-1 {
					t.Fatalf("message %d (%q): %v", i, m[0], err)
				}
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rec.events, tc.want) {
				t.Fatalf("events\n%s\nwant\n%s", strings.Join(rec.events, "\n"), strings.Join(tc.want, "\n"))
			}
			if tc.spill && d.Stats() != (Stats{}) {
				t.Fatalf("stats after the commit: %+v", d.Stats())
			}
		})
	}
}

// A Handler without a Message method never sees messages; a MessageHandler's error stops Decode.
func TestLogicalMessageHandlerOptional(t *testing.T) {
	t.Parallel()
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	for _, m := range [][]byte{encBegin(0x100, 7), encMessage("p", "c"), encCommit(0x100, 0x108), encMessageAt(false, 1, "p", "c")} {
		if err := d.Decode(m, rec); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(rec.events, []string{beginOne, commitOne}) {
		t.Fatalf("events %q", rec.events)
	}
	boom := errors.New("boom")
	mr := &msgRecorder{recorder{fail: func(e string) error {
		if strings.HasPrefix(e, "M ") {
			return boom
		}
		return nil
	}}}
	_ = d.Decode(encBegin(0x200, 8), mr)
	if err := d.Decode(encMessage("p", "c"), mr); !errors.Is(err, boom) || !strings.Contains(err.Error(), "logical message at 0/63") {
		t.Fatalf("error %v, want boom naming the message's LSN", err)
	}
}

// The hand-written parser agrees with pglogrepl's on every field.
func TestLogicalMessageMatchesPglogrepl(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tx      bool
		at      uint64
		prefix  string
		content string
	}{{true, 0x1234_5678_9abc, "pgoutbox:app", "\x01binary\x00content"}, {false, 1, "", ""}, {true, 0, "p", strings.Repeat("x", 70_000)}} {
		raw := encMessageAt(tc.tx, tc.at, tc.prefix, tc.content)
		m, err := parseLogicalMessage(raw[1:])
		if err != nil {
			t.Fatal(err)
		}
		pm, err := pglogrepl.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		want := pm.(*pglogrepl.LogicalDecodingMessage)
		if m.LSN != want.LSN || m.Transactional != want.Transactional || m.Prefix != want.Prefix || string(m.Content) != string(want.Content) {
			t.Fatalf("parsed %+v, pglogrepl %+v", m, want)
		}
		// Streamed (protocol v2): pglogrepl's V2 form with the xid.
		pm2, err := pglogrepl.ParseV2(streamed(5, raw), true)
		if err != nil {
			t.Fatal(err)
		}
		if w2 := pm2.(*pglogrepl.LogicalDecodingMessageV2); w2.Xid != 5 || w2.LSN != m.LSN || w2.Prefix != m.Prefix {
			t.Fatalf("V2: %+v", w2)
		}
	}
}
