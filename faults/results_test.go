//go:build faults

package faults

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// row is one line of the results table.
type row struct {
	Scenario   string
	Messages   int // committed messages the oracle checked
	Lost       int
	Phantom    int
	Duplicated int
	Order      int
	Recovery   string // time from the fault to the first message committed after it being delivered
	Result     string // pass / FAIL, set from the test's outcome
	Notes      string
	order      int // position of the test in the run, to keep the table in suite order
}

var (
	resultsMu sync.Mutex
	results   = map[string]row{}
	seq       int
)

// report records r for t's scenario; the result (pass/FAIL) is taken when t ends.
func report(t *testing.T, r row) {
	t.Helper()
	if r.Scenario == "" {
		r.Scenario = t.Name()
	}
	resultsMu.Lock()
	seq++
	r.order = seq
	resultsMu.Unlock()
	t.Cleanup(func() {
		r.Result = "pass"
		if t.Failed() {
			r.Result = "**FAIL**"
		}
		resultsMu.Lock()
		results[r.Scenario] = r
		resultsMu.Unlock()
	})
}

func dur(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return d.Round(10 * time.Millisecond).String()
}

const tableHeader = "| scenario | messages | lost | phantom | duplicated | order violations | recovery | result | notes |\n" +
	"|---|---:|---:|---:|---:|---:|---:|---|---|\n"

// writeResults merges this run's rows into path: scenarios that did not run keep their previous row.
func writeResults(path string, took time.Duration) error {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return nil
	}
	old := readRows(path)
	var rows []row
	for _, r := range results {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].order < rows[j].order })
	var lines []string
	for _, r := range rows {
		lines = append(lines, fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %s | %s | %s |", r.Scenario, r.Messages, r.Lost,
			r.Phantom, r.Duplicated, r.Order, r.Recovery, r.Result, strings.ReplaceAll(r.Notes, "|", "/")))
	}
	kept := 0
	for _, o := range old {
		if _, ok := results[o.name]; !ok {
			lines = append(lines, o.line)
			kept++
		}
	}
	var b strings.Builder
	b.WriteString("# Fault-injection results\n\n")
	b.WriteString("Written by the fault suite (`make test-faults`, i.e. `go test -tags faults -count=1 -timeout 25m ./faults/`)\n")
	b.WriteString("against the real `pgoutbox` binary, PostgreSQL and Kafka. Do not edit by hand: rerun the suite.\n\n")
	fmt.Fprintf(&b, "Last run: %s, %s/%s, %d CPUs, %s for the scenarios that ran", time.Now().UTC().Format(time.RFC3339),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), took.Round(time.Second))
	if kept > 0 {
		fmt.Fprintf(&b, " (%d rows kept from an earlier run)", kept)
	}
	b.WriteString(".\n\n")
	b.WriteString("Columns: *messages* committed messages the oracle checked (rolled-back and indeterminate ones not counted);\n")
	b.WriteString("*lost* committed but neither in the sink nor dead-lettered (I1); *phantom* delivered from a rolled-back\n")
	b.WriteString("transaction or savepoint (I2); *duplicated* extra deliveries of an id (allowed only after a fault, I5);\n")
	b.WriteString("*order violations* first deliveries of a key out of commit order (I3); *recovery* time from the fault\n")
	b.WriteString("(or from lifting it, where noted) until a message committed after it was delivered — the maximum over rounds.\n")
	b.WriteString("I4 (nothing at or below `confirmed_flush_lsn` missing from the sink) is polled during the Kafka scenarios;\n")
	b.WriteString("its poll count is in the notes.\n\n")
	b.WriteString(tableHeader)
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

type oldRow struct{ name, line string }

func readRows(path string) []oldRow {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []oldRow
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "| ") || strings.HasPrefix(l, "| scenario |") {
			continue
		}
		cells := strings.Split(l, "|")
		if len(cells) < 3 {
			continue
		}
		out = append(out, oldRow{name: strings.TrimSpace(cells[1]), line: l})
	}
	return out
}
