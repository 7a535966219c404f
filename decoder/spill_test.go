package decoder

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func TestSpill(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		finish func(d *Decoder, rec *recorder) error
		rows   int // rows expected delivered
	}{
		{"commit", func(d *Decoder, rec *recorder) error { return d.Decode(encStreamCommit(5, 0x500, 0x508), rec) }, 150},
		{"abort", func(d *Decoder, rec *recorder) error { return d.Decode(encStreamAbort(5, 5), rec) }, 0},
		{"reset", func(d *Decoder, rec *recorder) error { d.Reset(); return nil }, 0},
		{"close", func(d *Decoder, rec *recorder) error { return d.Close() }, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			d, err := New(Config{Streaming: true, MemoryLimit: 512, SpillDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			rec := &recorder{}
			dec := func(m []byte) {
				t.Helper()
				if err := d.Decode(m, rec); err != nil {
					t.Fatal(err)
				}
			}
			payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 40) }
			// Three stream blocks: 100 rows of the top transaction, 50 of subxact 6
			// (aborted after some of them were spilled), 50 of subxact 7; 100 in all
			// kept, then a re-sent relation with a new column and 50 more rows.
			dec(encStreamStart(5, true))
			dec(streamed(5, encRelation(1, "s", "t", col{"n", 25, 0}, col{"p", 17, 0})))
			for i := range 100 {
				sub := uint32(5)
				switch {
				case i%4 == 1:
					sub = 6
				case i%4 == 2:
					sub = 7
				}
				dec(streamed(sub, encInsert(1, txt(fmt.Sprint(i)), binv(payload(i)))))
			}
			dec(encStreamStop())
			if s := d.Stats(); s.SpillFiles != 1 || s.SpilledBytes == 0 || s.MemoryBytes > 512 || countFiles(t, dir) != 1 {
				t.Fatalf("after first block: stats %+v, %d files", s, countFiles(t, dir))
			}
			dec(encStreamAbort(5, 6)) // drops 25 rows, some on disk, some maybe in memory
			dec(encStreamStart(5, false))
			dec(streamed(5, encRelation(1, "s", "t", col{"n", 25, 0}, col{"p", 17, 0}, col{"extra", 25, 0})))
			for i := 100; i < 175; i++ {
				dec(streamed(5, encInsert(1, txt(fmt.Sprint(i)), binv(payload(i)), txt("e"))))
			}
			dec(encStreamStop())
			// A small non-streamed transaction in the middle is unaffected.
			dec(encBegin(0x100, 9))
			dec(encRelation(2, "s", "small", col{"a", 25, 0}))
			dec(encInsert(2, txt("small")))
			dec(encCommit(0x100, 0x108))

			if err := tc.finish(d, rec); err != nil {
				t.Fatal(err)
			}
			if n := countFiles(t, dir); n != 0 {
				t.Fatalf("%d spill files left after %s", n, tc.name)
			}
			if s := d.Stats(); s != (Stats{}) {
				t.Fatalf("stats after %s: %+v", tc.name, s)
			}
			// rec.rows[0] is the small transaction's row.
			got := rec.rows[1:]
			if len(got) != tc.rows {
				t.Fatalf("delivered %d streamed rows, want %d", len(got), tc.rows)
			}
			// Verify order, the aborted subxact's absence and the payload bytes (rows
			// were retained: their elements must stay intact after replay).
			want := 0
			for _, row := range got {
				for want%4 == 1 && want < 100 {
					want++
				}
				if string(row.Values[0]) != fmt.Sprint(want) || !bytes.Equal(row.Values[1], payload(want)) {
					t.Fatalf("row %q, want %d", row.Values[0], want)
				}
				if want >= 100 && (len(row.Values) != 3 || string(row.Values[2]) != "e") {
					t.Fatalf("row %d missed the added column", want)
				}
				want++
			}
			if tc.rows > 0 && !strings.HasPrefix(rec.events[len(rec.events)-1], "C xid=5 commit=0/500 end=0/508") {
				t.Fatalf("last event %q", rec.events[len(rec.events)-1])
			}
		})
	}
}
