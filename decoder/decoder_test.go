package decoder

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

var (
	outboxCols = []col{{"seq", 20, 1}, {"id", 2950, 0}, {"payload", 17, 0}}
	addedCols  = append(slices.Clone(outboxCols), col{"note", 25, 0})
)

const (
	beginOne  = "B xid=7 final=0/100 t=2024-01-02T03:04:05.000006Z"
	commitOne = "C xid=7 commit=0/100 end=0/108"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	rel := encRelation(16384, "public", "pkg_outbox", outboxCols...)
	tests := []struct {
		name    string
		cfg     Config
		msgs    [][]byte
		want    []string
		wantErr error  // errors.Is target for the last message
		errText string // substring of the error
	}{
		{
			name: "v1 transaction",
			msgs: [][]byte{
				encBegin(0x100, 7), rel,
				encInsert(16384, bin(0, 0, 0, 0, 0, 0, 0, 1), txt("a"), bin(0xca, 0xfe)),
				encInsert(16384, bin(0, 0, 0, 0, 0, 0, 0, 2), txt("b"), bin()),
				encCommit(0x100, 0x108),
			},
			want: []string{
				beginOne,
				`I public.pkg_outbox seq=b0000000000000001 id="a" payload=bcafe`,
				`I public.pkg_outbox seq=b0000000000000002 id="b" payload=b`,
				commitOne,
			},
		},
		{
			name: "null, unchanged toast, empty text and binary",
			msgs: [][]byte{
				encBegin(0x100, 7), rel,
				encInsert(16384, null(), txt(""), unchanged()),
				encInsert(16384, bin(1), null(), binv(make([]byte, 3))),
				encCommit(0x100, 0x108),
			},
			want: []string{
				beginOne,
				`I public.pkg_outbox seq=NULL id="" payload=TOAST`,
				`I public.pkg_outbox seq=b01 id=NULL payload=b000000`,
				commitOne,
			},
		},
		{
			name: "relation re-sent with an added column",
			msgs: [][]byte{
				encBegin(0x100, 7), rel,
				encInsert(16384, txt("1"), txt("a"), txt("p")),
				encCommit(0x100, 0x108),
				encBegin(0x200, 8),
				encRelation(16384, "public", "pkg_outbox", addedCols...),
				encInsert(16384, txt("2"), txt("b"), txt("q"), txt("n")),
				encCommit(0x200, 0x208),
			},
			want: []string{
				beginOne,
				`I public.pkg_outbox seq="1" id="a" payload="p"`,
				commitOne,
				"B xid=8 final=0/200 t=2024-01-02T03:04:05.000006Z",
				`I public.pkg_outbox seq="2" id="b" payload="q" note="n"`,
				"C xid=8 commit=0/200 end=0/208",
			},
		},
		{
			name: "update delete truncate type origin message are ignored",
			msgs: [][]byte{
				encMessageAt(false, 98, "p", "non-transactional"),
				encBegin(0x100, 7), encOrigin("node1"), encType(9999, "public", "mytype"), rel,
				encUpdate(16384, []val{txt("1"), null(), null()}, txt("1"), txt("x"), null()),
				encUpdate(16384, nil, txt("1"), txt("x"), null()),
				encDelete(16384, txt("1"), null(), null()),
				encTruncate(16384, 16385),
				encMessage("p", "transactional"),
				encInsert(16384, txt("1"), txt("a"), null()),
				encCommit(0x100, 0x108),
			},
			want: []string{beginOne, `I public.pkg_outbox seq="1" id="a" payload=NULL`, commitOne},
		},
		{
			name:    "insert for unknown relation",
			msgs:    [][]byte{encBegin(0x100, 7), encInsert(1, txt("x"))},
			want:    []string{beginOne},
			wantErr: ErrUnknownRelation,
			errText: "OID 1",
		},
		{
			name:    "insert outside a transaction",
			msgs:    [][]byte{encInsert(1, txt("x"))},
			wantErr: ErrProtocol,
			errText: "Insert message outside a transaction",
		},
		{
			name:    "commit without begin",
			msgs:    [][]byte{encCommit(1, 2)},
			wantErr: ErrProtocol,
		},
		{
			name:    "nested begin",
			msgs:    [][]byte{encBegin(0x100, 7), encBegin(0x100, 7)},
			want:    []string{beginOne},
			wantErr: ErrProtocol,
		},
		{
			name:    "tuple column count differs from relation",
			msgs:    [][]byte{encBegin(0x100, 7), rel, encInsert(16384, txt("1"))},
			want:    []string{beginOne},
			wantErr: ErrProtocol,
			errText: "has 1 columns, its Relation message has 3",
		},
		{
			name:    "stream message with streaming off",
			msgs:    [][]byte{encStreamStart(5, true)},
			wantErr: ErrProtocol,
			errText: "Config.Streaming is false",
		},
		{
			name:    "two-phase message",
			msgs:    [][]byte{{'P'}},
			wantErr: ErrProtocol,
			errText: "two-phase",
		},
		{
			name: "v2 non-streamed transaction",
			cfg:  Config{Streaming: true},
			msgs: [][]byte{encBegin(0x100, 7), rel, encInsert(16384, txt("1"), txt("a"), null()), encCommit(0x100, 0x108)},
			want: []string{beginOne, `I public.pkg_outbox seq="1" id="a" payload=NULL`, commitOne},
		},
		{
			name: "streamed transaction in two blocks",
			cfg:  Config{Streaming: true},
			msgs: [][]byte{
				encStreamStart(5, true),
				streamed(5, rel),
				streamed(5, encInsert(16384, txt("1"), txt("a"), null())),
				encStreamStop(),
				encStreamStart(5, false),
				streamed(5, encInsert(16384, txt("2"), txt("b"), null())),
				streamed(5, encType(1, "a", "b")),
				streamed(5, encUpdate(16384, nil, txt("2"), txt("b"), null())),
				encStreamStop(),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{
				"B xid=5 final=0/500 t=2024-01-02T03:04:05.000006Z",
				`I public.pkg_outbox seq="1" id="a" payload=NULL`,
				`I public.pkg_outbox seq="2" id="b" payload=NULL`,
				"C xid=5 commit=0/500 end=0/508",
			},
		},
		{
			name: "subtransaction abort inside a stream",
			cfg:  Config{Streaming: true},
			msgs: [][]byte{
				encStreamStart(5, true),
				streamed(5, rel),
				streamed(5, encInsert(16384, txt("1"), txt("top"), null())),
				streamed(6, encInsert(16384, txt("2"), txt("sub6-aborted"), null())),
				streamed(7, encInsert(16384, txt("3"), txt("sub7-kept"), null())),
				encStreamStop(),
				encStreamAbort(5, 6),
				encStreamStart(5, false),
				streamed(5, encInsert(16384, txt("4"), txt("top"), null())),
				encStreamStop(),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{
				"B xid=5 final=0/500 t=2024-01-02T03:04:05.000006Z",
				`I public.pkg_outbox seq="1" id="top" payload=NULL`,
				`I public.pkg_outbox seq="3" id="sub7-kept" payload=NULL`,
				`I public.pkg_outbox seq="4" id="top" payload=NULL`,
				"C xid=5 commit=0/500 end=0/508",
			},
		},
		{
			name: "whole stream abort, then its commit is a protocol error",
			cfg:  Config{Streaming: true},
			msgs: [][]byte{
				encStreamStart(5, true),
				streamed(5, rel),
				streamed(5, encInsert(16384, txt("1"), txt("a"), null())),
				encStreamStop(),
				encStreamAbort(5, 5),
				encStreamAbort(5, 5), // unknown: ignored
				encStreamCommit(5, 0x500, 0x508),
			},
			wantErr: ErrProtocol,
			errText: "never streamed",
		},
		{
			name: "interleaved streams and a non-streamed transaction",
			cfg:  Config{Streaming: true},
			msgs: [][]byte{
				encStreamStart(5, true),
				streamed(5, rel),
				streamed(5, encInsert(16384, txt("1"), txt("x5"), null())),
				encStreamStop(),
				encStreamStart(6, true),
				streamed(6, rel),
				streamed(6, encInsert(16384, txt("2"), txt("x6"), null())),
				encStreamStop(),
				encBegin(0x100, 7), rel, encInsert(16384, txt("3"), txt("x7"), null()), encCommit(0x100, 0x108),
				encStreamCommit(6, 0x600, 0x608),
				encStreamAbort(5, 5),
			},
			want: []string{
				beginOne, `I public.pkg_outbox seq="3" id="x7" payload=NULL`, commitOne,
				"B xid=6 final=0/600 t=2024-01-02T03:04:05.000006Z",
				`I public.pkg_outbox seq="2" id="x6" payload=NULL`,
				"C xid=6 commit=0/600 end=0/608",
			},
		},
		{
			name: "streamed relation updates the cache at replay, not before",
			cfg:  Config{Streaming: true},
			msgs: [][]byte{
				encBegin(0x100, 7), rel, encCommit(0x100, 0x108),
				encStreamStart(5, true),
				streamed(5, encRelation(16384, "public", "pkg_outbox", addedCols...)),
				streamed(5, encInsert(16384, txt("1"), txt("a"), null(), txt("new"))),
				encStreamStop(),
				// A non-streamed transaction in between still sees the old relation.
				encBegin(0x200, 8), encInsert(16384, txt("2"), txt("b"), null()), encCommit(0x200, 0x208),
				encStreamCommit(5, 0x500, 0x508),
			},
			want: []string{
				beginOne, commitOne,
				"B xid=8 final=0/200 t=2024-01-02T03:04:05.000006Z",
				`I public.pkg_outbox seq="2" id="b" payload=NULL`,
				"C xid=8 commit=0/200 end=0/208",
				"B xid=5 final=0/500 t=2024-01-02T03:04:05.000006Z",
				`I public.pkg_outbox seq="1" id="a" payload=NULL note="new"`,
				"C xid=5 commit=0/500 end=0/508",
			},
		},
		{
			name:    "stream continuation without first segment",
			cfg:     Config{Streaming: true},
			msgs:    [][]byte{encStreamStart(5, false)},
			wantErr: ErrProtocol,
		},
		{
			name:    "stream first segment twice",
			cfg:     Config{Streaming: true},
			msgs:    [][]byte{encStreamStart(5, true), encStreamStop(), encStreamStart(5, true)},
			wantErr: ErrProtocol,
		},
		{
			name:    "begin inside a stream block",
			cfg:     Config{Streaming: true},
			msgs:    [][]byte{encStreamStart(5, true), encBegin(1, 2)},
			wantErr: ErrProtocol,
		},
		{
			name:    "stream stop outside a stream",
			cfg:     Config{Streaming: true},
			msgs:    [][]byte{encStreamStop()},
			wantErr: ErrProtocol,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.SpillDir = t.TempDir()
			d, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			rec := &recorder{}
			for i, m := range tc.msgs {
				err = d.Decode(m, rec)
				if err != nil && i != len(tc.msgs)-1 {
					t.Fatalf("message %d (%q): %v", i, m[0], err)
				}
			}
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			case tc.errText != "" && !strings.Contains(err.Error(), tc.errText):
				t.Fatalf("error %q does not mention %q", err, tc.errText)
			}
			if !slices.Equal(rec.events, tc.want) {
				t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(rec.events, "\n"), strings.Join(tc.want, "\n"))
			}
			if s := d.Stats(); tc.wantErr == nil && (s.OpenStreams != 0 || s.MemoryBytes != 0) {
				t.Fatalf("stats after the last commit: %+v", s)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	t.Parallel()
	rel := encRelation(16384, "public", "t", col{"a", 25, 0})
	tests := []struct {
		name    string
		setup   [][]byte
		msg     []byte
		errText string
	}{
		{"empty", nil, nil, "empty"},
		{"unknown type", nil, []byte{'Z'}, "unknown message type"},
		{"short begin", nil, encBegin(1, 2)[:10], "Begin: body is 9 bytes"},
		{"long commit", [][]byte{encBegin(1, 2)}, append(encCommit(1, 2), 0), "Commit: body is 26 bytes"},
		{"relation name not terminated", [][]byte{encBegin(1, 2)}, []byte{'R', 0, 0, 0, 1, 'p', 0, 'x'}, "name of OID 1 is not NUL-terminated"},
		{"relation column count too large", [][]byte{encBegin(1, 2)}, append(encRelation(1, "p", "t")[:9], 'd', 0xff, 0xff), "column count 65535"},
		{"relation trailing bytes", [][]byte{encBegin(1, 2)}, append(rel, 1), "trailing"},
		{"insert bad tuple tag", [][]byte{encBegin(1, 2), rel}, []byte{'I', 0, 0, 0x40, 0, 'X'}, "tuple tag is 'X'"},
		{"insert column count too large", [][]byte{encBegin(1, 2), rel}, []byte{'I', 0, 0, 0x40, 0, 'N', 0xff, 0xff, 't'}, "tuple column count 65535"},
		{"insert value length too large", [][]byte{encBegin(1, 2), rel}, []byte{'I', 0, 0, 0x40, 0, 'N', 0, 1, 't', 0xff, 0xff, 0xff, 0xff, 'a'}, "column 0 length 4294967295 exceeds the 1 remaining"},
		{"insert unknown kind", [][]byte{encBegin(1, 2), rel}, []byte{'I', 0, 0, 0x40, 0, 'N', 0, 1, 'q'}, "unknown kind 'q'"},
		{"insert trailing bytes", [][]byte{encBegin(1, 2), rel}, append(encInsert(16384, txt("a")), 0), "1 trailing bytes"},
		{"truncate count", [][]byte{encBegin(1, 2)}, []byte{'T', 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3, 4}, "relation count 4294967295"},
		{"message length", nil, append(encMessage("p", "abc"), 'x'), "content length 3, but 4 bytes remain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := New(Config{})
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			for _, m := range tc.setup {
				if err := d.Decode(m, rec); err != nil {
					t.Fatal(err)
				}
			}
			err = d.Decode(tc.msg, rec)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error = %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("error %q does not mention %q", err, tc.errText)
			}
		})
	}
}

// TestDecodeTruncated feeds every strict prefix of valid messages, in the state each
// expects, and requires an error (never a panic, never silent acceptance).
func TestDecodeTruncated(t *testing.T) {
	t.Parallel()
	rel := encRelation(16384, "public", "t", col{"a", 25, 0}, col{"b", 17, 0})
	inTx := [][]byte{encBegin(1, 2), rel}
	msgs := []struct {
		setup [][]byte
		msg   []byte
	}{
		{nil, encBegin(1, 2)},
		{inTx, encCommit(1, 2)},
		{inTx, rel},
		{inTx, encInsert(16384, txt("abc"), bin(1, 2))},
		{inTx, encUpdate(16384, []val{txt("a"), null()}, txt("abc"), bin(1, 2))},
		{inTx, encDelete(16384, txt("a"), null())},
		{inTx, encTruncate(1, 2)},
		{inTx, encType(1, "a", "b")},
		{inTx, encOrigin("o")},
		{inTx, encMessage("p", "c")},
		{nil, encStreamStart(5, true)},
		{[][]byte{encStreamStart(5, true)}, streamed(5, encInsert(16384, txt("abc"), bin(1, 2)))},
		{[][]byte{encStreamStart(5, true)}, streamed(5, rel)},
		{[][]byte{encStreamStart(5, true), encStreamStop()}, encStreamCommit(5, 1, 2)},
		{[][]byte{encStreamStart(5, true), encStreamStop()}, encStreamAbort(5, 6)},
	}
	for _, m := range msgs {
		for n := range len(m.msg) {
			d, err := New(Config{Streaming: true, SpillDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			for _, s := range m.setup {
				if err := d.Decode(s, rec); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Decode(m.msg[:n], rec); err == nil {
				t.Errorf("%s truncated to %d of %d bytes: no error", msgName(m.msg[0]), n, len(m.msg))
			}
			d.Close()
		}
	}
}

func TestHandlerErrorIsWrapped(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	d, _ := New(Config{})
	rec := &recorder{fail: func(e string) error {
		if strings.HasPrefix(e, "I ") {
			return boom
		}
		return nil
	}}
	for _, m := range [][]byte{encBegin(1, 2), encRelation(1, "s", "t", col{"a", 25, 0})} {
		if err := d.Decode(m, rec); err != nil {
			t.Fatal(err)
		}
	}
	err := d.Decode(encInsert(1, txt("x")), rec)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "handle insert into s.t") {
		t.Fatalf("error = %v", err)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d, err := New(Config{Streaming: true, MemoryLimit: 1, SpillDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	rel := encRelation(1, "s", "t", col{"a", 25, 0})
	for _, m := range [][]byte{
		encBegin(1, 2), rel, encCommit(1, 2),
		encStreamStart(5, true), streamed(5, rel), streamed(5, encInsert(1, txt("x"))), encStreamStop(),
		encBegin(3, 4), // a partial transaction
	} {
		if err := d.Decode(m, rec); err != nil {
			t.Fatal(err)
		}
	}
	if s := d.Stats(); s.OpenStreams != 1 || s.SpillFiles != 1 || countFiles(t, dir) != 1 {
		t.Fatalf("before Reset: stats %+v, %d files", s, countFiles(t, dir))
	}
	d.Reset()
	if s := d.Stats(); s != (Stats{}) || countFiles(t, dir) != 0 {
		t.Fatalf("after Reset: stats %+v, %d files", s, countFiles(t, dir))
	}
	if _, ok := d.Relation(1); ok {
		t.Fatal("relation cache survived Reset")
	}
	// The partial transaction is gone: Begin is accepted again; the relation is unknown.
	if err := d.Decode(encBegin(3, 4), rec); err != nil {
		t.Fatalf("Begin after Reset: %v", err)
	}
	if err := d.Decode(encInsert(1, txt("x")), rec); !errors.Is(err, ErrUnknownRelation) {
		t.Fatalf("insert after Reset: %v", err)
	}
	// The stream is gone too.
	d.Reset()
	if err := d.Decode(encStreamCommit(5, 1, 2), rec); !errors.Is(err, ErrProtocol) {
		t.Fatalf("stream commit after Reset: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := d.Decode(encBegin(1, 2), rec); !errors.Is(err, ErrClosed) {
		t.Fatalf("Decode after Close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	err := Config{MemoryLimit: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "Config.MemoryLimit must be >= 0") {
		t.Fatalf("Validate(-1) = %v", err)
	}
	if _, err := New(Config{MemoryLimit: -1}); err == nil {
		t.Fatal("New accepted MemoryLimit -1")
	}
	if _, err := New(Config{Streaming: true, SpillDir: "/nonexistent/pgoutbox"}); err == nil ||
		!strings.Contains(err.Error(), "Config.SpillDir") {
		t.Fatalf("New with missing SpillDir = %v", err)
	}
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if d.cfg.MemoryLimit != DefaultMemoryLimit || d.cfg.SpillDir == "" {
		t.Fatalf("defaults not applied: %+v", d.cfg)
	}
}

func TestRelationIndex(t *testing.T) {
	t.Parallel()
	r := &Relation{Columns: []Column{{Name: "a"}, {Name: "b"}}}
	if r.Index("b") != 1 || r.Index("a") != 0 || r.Index("c") != -1 {
		t.Fatal("Index")
	}
}
