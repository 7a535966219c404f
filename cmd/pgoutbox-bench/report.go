package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox-bench/internal/svgchart"
)

// Results is everything results.json holds. Workloads not run keep their previous results.
type Results struct {
	Command string           `json:"command"`
	When    time.Time        `json:"when"`
	Machine Machine          `json:"machine"`
	W1      *W1Result        `json:"w1_enqueue_cost,omitempty"`
	W2      *W2Result        `json:"w2_live_latency,omitempty"`
	W2E     *W2Result        `json:"w2_exactly_once,omitempty"` // W2 in exactly-once mode
	W3      *DrainResult     `json:"w3_backlog_drain,omitempty"`
	W4      *DrainResult     `json:"w4_huge_transaction,omitempty"`
	W5      *W5Result        `json:"w5_keys,omitempty"`
	W6      *W6Result        `json:"w6_poison_key,omitempty"`
	WT      *TransportResult `json:"wt_transports,omitempty"`
	Goals   []Goal           `json:"goals"`
}

// Goal is one target of issue 6 with its verdict.
type Goal struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Verdict  string `json:"verdict"` // met, missed, not measured
}

func writeOutputs(dir string, r *Results) error {
	r.Goals = goals(r)
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	for name, svg := range charts(r) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "BENCH.md"), []byte(markdown(dir, r)), 0o644)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func goals(r *Results) []Goal {
	var g []Goal
	if r.W3 != nil {
		best, bestName := 0.0, ""
		var ratio float64
		for _, v := range r.W3.Variants {
			if strings.Contains(v.Name, "Kafka") && !strings.Contains(v.Name, "exactly-once") && v.Rate.Median > best {
				best, bestName, ratio = v.Rate.Median, v.Name, v.RatioToRecv.Median
			}
		}
		g = append(g,
			Goal{"drain ≥ 100k msgs/s (W3, relay → Kafka)", fmt.Sprintf("%.0f msgs/s (%s, %d messages)", best, bestName, r.W3.N), verdict(best >= 100_000)},
			Goal{"drain ≥ 0.8 × pg_recvlogical (W3)", fmt.Sprintf("%.2f ×", ratio), verdict(ratio >= 0.8)})
		if h := r.W3.variant(handlerConsumer.Name); h != nil {
			g = append(g, Goal{"(context) relay → handler vs pg_recvlogical", fmt.Sprintf("%.0f msgs/s, %.2f ×", h.Rate.Median, h.RatioToRecv.Median), "—"})
		}
		g = append(g, w3LatencyGoals(r.W3)...)
		rss := 0.0
		for _, v := range r.W3.Variants {
			if !v.Baseline {
				rss = max(rss, v.PeakRSSMB)
			}
		}
		g = append(g, Goal{fmt.Sprintf("peak RSS ≤ 150 MB during the %d-message drain", r.W3.N), fmt.Sprintf("%.0f MB (max over relay runs)", rss), verdict(rss <= 150)})
	}
	if r.W4 != nil {
		for _, v := range r.W4.Variants {
			if !v.Baseline {
				g = append(g, Goal{fmt.Sprintf("peak RSS ≤ 150 MB in W4 (%d-row tx), %s", r.W4.N, v.Name), fmt.Sprintf("%.0f MB", v.PeakRSSMB), verdict(v.PeakRSSMB <= 150)})
			}
		}
	}
	if r.W2 != nil {
		for _, p := range r.W2.Points {
			if goal, ok := map[int]float64{5000: 20, 20000: 50}[p.Rate]; ok {
				g = append(g, Goal{fmt.Sprintf("p99 commit → visible to a Kafka consumer ≤ %.0f ms at %dk msgs/s (W2)", goal, p.Rate/1000),
					fmt.Sprintf("%.1f ms (windows %.1f–%.1f)", p.P99MS.Median, p.P99MS.Min, p.P99MS.Max), verdict(p.P99MS.Median <= goal && p.Achieved.Median >= 0.95*float64(p.Rate))})
			}
		}
	}
	g = append(g, w2eGoals(r)...)
	if r.W6 != nil {
		x := r.W6
		g = append(g,
			Goal{fmt.Sprintf("W6: healthy keys' throughput with one poison key ≥ 0.9 × without (%d msgs/s into Kafka)", x.Rate),
				fmt.Sprintf("%.0f vs %.0f msgs/s: %.2f ×", x.Poison.DeliveredPerS, x.Baseline.DeliveredPerS, x.Ratio), verdict(x.Ratio >= 0.9)},
			Goal{"W6: peak RSS ≤ 150 MB with one key parked", fmt.Sprintf("%.0f MB (without: %.0f MB)", x.Poison.PeakRSSMB, x.Baseline.PeakRSSMB), verdict(x.Poison.PeakRSSMB <= 150)},
			Goal{"W6: the slot reaches the end once the poison is dead-lettered", fmt.Sprintf("%v (poison tried %d×)", x.Poison.SlotAtEnd, x.Poison.PoisonAttempts), verdict(x.Poison.SlotAtEnd)})
	}
	g = append(g, transportGoals(r)...)
	if r.W1 != nil {
		for _, row := range r.W1.Rows {
			if row.Msgs == 1 {
				g = append(g, Goal{fmt.Sprintf("enqueue overhead ≤ 0.1 ms/tx (1 message, %d client(s))", row.Clients),
					fmt.Sprintf("+%.3f ms", row.AddedMS.Median), verdict(row.AddedMS.Median <= 0.1)})
			}
		}
	}
	return g
}

func charts(r *Results) map[string]string {
	out := map[string]string{}
	if r.W2 != nil && len(r.W2.Points) > 0 {
		var p50, p99, p999 []svgchart.Point
		for _, p := range r.W2.Points {
			x := float64(p.Rate)
			p50 = append(p50, svgchart.Point{X: x, Y: p.P50MS.Median})
			p99 = append(p99, svgchart.Point{X: x, Y: p.P99MS.Median})
			p999 = append(p999, svgchart.Point{X: x, Y: p.P999MS.Median})
		}
		out["latency-vs-rate.svg"] = svgchart.Lines("W2: commit → visible to a Kafka consumer vs offered load", "offered load (messages/s, 1 per tx)", "latency (ms, log)",
			[]svgchart.Series{{Name: "p50", Points: p50}, {Name: "p99", Points: p99}, {Name: "p99.9", Points: p999}}, true, 20, "goal p99 20 ms")
	}
	drainBars := func(d *DrainResult) []svgchart.Bar {
		var bars []svgchart.Bar
		for _, v := range d.Variants {
			label := strings.NewReplacer("relay → ", "", " → /dev/null", "", "(ack at once)", "", "streaming ", "stream ", ", work_mem 64kB)", ")").Replace(v.Name)
			if !v.Baseline && d.variantBaseline() {
				label += fmt.Sprintf(" (%.2f×)", v.RatioToRecv.Median)
			}
			bars = append(bars, svgchart.Bar{Label: strings.TrimSpace(label), Value: v.Rate.Median, Lo: v.Rate.Min, Hi: v.Rate.Max, Highlight: v.Baseline})
		}
		return bars
	}
	if r.W3 != nil {
		out["drain-vs-baseline.svg"] = svgchart.Bars(fmt.Sprintf("W3: draining %s committed messages (median, min–max)", count(r.W3.N)), "messages/s", drainBars(r.W3), 100_000, "goal 100k msgs/s")
	}
	if r.W4 != nil {
		out["huge-tx.svg"] = svgchart.Bars(fmt.Sprintf("W4: one %s-row transaction", count(r.W4.N)), "messages/s", drainBars(r.W4), 0, "")
	}
	if r.W5 != nil && r.W5.Uniform != nil && r.W5.Hot != nil {
		var bars []svgchart.Bar
		for _, d := range []*DrainResult{r.W5.Uniform, r.W5.Hot} {
			for _, v := range d.Variants {
				sink := "handler"
				if strings.Contains(v.Name, "Kafka") {
					sink = "Kafka"
				}
				bars = append(bars, svgchart.Bar{Label: d.Keys + ", " + sink, Value: v.Rate.Median, Lo: v.Rate.Min, Hi: v.Rate.Max})
			}
		}
		out["keys.svg"] = svgchart.Bars(fmt.Sprintf("W5: drain rate by key distribution (%s messages)", count(r.W5.Uniform.N)), "messages/s", bars, 0, "")
	}
	return out
}

func (d *DrainResult) variantBaseline() bool {
	for _, v := range d.Variants {
		if v.Baseline {
			return true
		}
	}
	return false
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func markdown(dir string, r *Results) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	table := func(d *DrainResult, note string) { drainTable(w, d, note) }
	headerSection(w, r)
	goalsSection(w, r.Goals)
	if r.W1 != nil {
		w1Section(w, r.W1)
	}
	if r.W3 != nil {
		w3Section(w, r.W3)
	}
	if r.W2 != nil {
		w2Section(w, "W2 — live latency", r.W2)
	}
	if r.W2E != nil {
		w2Section(w, "W2E — live latency in exactly-once mode", r.W2E)
	}
	if r.W4 != nil {
		w4Section(w, r.W4)
	}
	if r.W5 != nil && r.W5.Uniform != nil && r.W5.Hot != nil {
		w5Section(w, r.W5)
	}
	if r.W6 != nil {
		w6Section(w, r.W6)
	}
	if r.WT != nil {
		transportSection(w, r.WT, table)
	}
	fileSections(w, dir)
	return b.String()
}

// headerSection is BENCH.md's title, how it was generated and the machine.
func headerSection(w func(string, ...any), r *Results) {
	m := r.Machine
	w("# pgoutbox benchmarks\n\n")
	w("Generated by `%s` on %s. Every number is the **median of the repeats, (min–max) in brackets**; ratios compare runs of the same repeat. ", r.Command, r.When.Format("2006-01-02 15:04 UTC"))
	w("PostgreSQL, Kafka, the relay and the load generators all share one machine, which other jobs were using too: treat differences under ~10%% as noise.\n\n")
	w("## Machine\n\n| | |\n|---|---|\n")
	w("| CPUs (nproc) | %d × %s |\n| memory | %d MB |\n| kernel | %s |\n| Go | %s |\n| PostgreSQL | %s (%s) |\n| Kafka | %s |\n\n",
		m.NProc, m.CPU, m.MemoryMB, m.Kernel, m.Go, m.PostgreSQL, m.PGSettings, m.Kafka)
}

func goalsSection(w func(string, ...any), goals []Goal) {
	if len(goals) == 0 {
		return
	}
	w("## Goals (issue 6)\n\n| goal | measured | verdict |\n|---|---|---|\n")
	for _, g := range goals {
		w("| %s | %s | **%s** |\n", g.Goal, g.Measured, g.Verdict)
	}
	w("\n")
}

func w1Section(w func(string, ...any), x *W1Result) {
	w("## W1 — enqueue cost\n\n")
	w("`BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = $1; [outbox.Enqueue(n × %d B)]; COMMIT` through pgx, closed loop, %d accounts, %.0f s warm-up + %.0f s per run, %d repeats interleaved%s. ",
		x.Payload, x.Accounts, x.Warmup, x.Seconds, x.Repeats, quickNote(x.Quick))
	w("No slot reads the outbox during W1. *added* = mean latency minus the business-only mean of the same repeat.\n\n")
	w("| clients | messages/tx | tps | mean ms | p50 ms | p99 ms | added ms/tx |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range x.Rows {
		added := "—"
		if row.Msgs > 0 {
			added = row.AddedMS.fmtS("%+.3f")
		}
		w("| %d | %d | %s | %s | %s | %s | %s |\n", row.Clients, row.Msgs, row.TPS.fmtS("%.0f"), row.MeanMS.fmtS("%.3f"), row.P50MS.fmtS("%.3f"), row.P99MS.fmtS("%.3f"), added)
	}
	w("\n")
}

// drainTable describes one drain (W3, W4, W5, WT) and tabulates its variants; note follows the description.
func drainTable(w func(string, ...any), d *DrainResult, note string) {
	w("%s messages of %d B, %s, committed in transactions of %d (fill took %.1f s), **before** the slots were read; one slot per consumer and repeat, created before the fill; %d repeats interleaved%s. %s\n\n",
		count(d.N), d.Payload, d.Keys+" keys", d.PerTx, d.FillSeconds, d.Repeats, quickNote(d.Quick), note)
	w("| consumer | msgs/s | × pg_recvlogical | seconds | CPU s per 1M | peak RSS MB | peak heap MB | allocs/msg | B alloc/msg | walsender spill / stream MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, v := range d.Variants {
		ratio := "1 (baseline)"
		if !v.Baseline {
			ratio = "—"
			if d.variantBaseline() {
				ratio = v.RatioToRecv.fmtS("%.2f")
			}
		}
		heap, allocs, bytes := "—", "—", "—"
		if !v.Baseline {
			heap, allocs, bytes = fmt.Sprintf("%.0f", v.PeakHeapMB), fmt.Sprintf("%.1f", v.AllocsPerMsg), fmt.Sprintf("%.0f", v.BytesPerMsg)
		}
		var ss slotStats
		if len(v.Runs) > 0 {
			ss = v.Runs[len(v.Runs)-1].Slot
		}
		w("| %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %d / %d |\n", v.Name, v.Rate.fmtS("%.0f"), ratio, v.Seconds.fmtS("%.2f"), v.CPUPer1M.fmtS("%.1f"),
			v.PeakRSSMB, heap, allocs, bytes, ss.SpillBytes>>20, ss.StreamBytes>>20)
	}
	w("\n")
}

func w3Section(w func(string, ...any), x *DrainResult) {
	w("## W3 — backlog drain\n\n")
	drainTable(w, x, fmt.Sprintf("pg_recvlogical: `--start --endpos=<end LSN> -o proto_version=1 -o publication_names=pgoutbox_b3 -f /dev/null` (text tuples; the relay asks for binary). "+
		"Relay runs are a child process of the bench binary (Start → last ack, including connection set-up; CPU and VmHWM of that process only, not of PostgreSQL); the Kafka topic has %d partitions, acks=all, idempotent.", x.Partitions))
	w("![drain rate vs baseline](drain-vs-baseline.svg)\n\n")
}

func w4Section(w func(string, ...any), x *DrainResult) {
	w("## W4 — one huge transaction\n\n")
	drainTable(w, x, "Streaming on: `outbox.WithStreaming(true)`, `WithStreamMemoryLimit(<limit>)`, `WithSpillDir(tmpdir)` with `options=-c logical_decoding_work_mem=64kB` on the relay's connection, so PostgreSQL streams the transaction while it is in progress; off: PostgreSQL decodes it after the commit (spilling on its side). Handler acks at once.")
	w("![huge transaction](huge-tx.svg)\n\n")
}

func w5Section(w func(string, ...any), x *W5Result) {
	w("## W5 — keys\n\n")
	w("### Uniform keys\n\n")
	drainTable(w, x.Uniform, "")
	w("### 4 hot keys\n\n")
	drainTable(w, x.Hot, "Every message of a key goes through one lane (order per key), so 4 keys use at most 4 of the 16 lanes and 4 Kafka partitions.")
	w("![keys](keys.svg)\n\n")
}

// fileSections embeds what other runs leave in dir: micro.txt, PEERS.md (make bench-peers) and NOTES.md.
func fileSections(w func(string, ...any), dir string) {
	if micro, err := os.ReadFile(filepath.Join(dir, "micro.txt")); err == nil {
		w("## Micro-benchmarks\n\n`go test -run '^$' -bench 'DecodeInsert|Tracker|KafkaSend' -benchmem ./decoder ./outbox/internal/watermark ./sink/kafka` (one b.N unit = one message):\n\n```\n%s```\n\n", micro)
	}
	if peers, err := os.ReadFile(filepath.Join(dir, "PEERS.md")); err == nil { // make bench-peers
		w("%s\n", peers)
	}
	if notes, err := os.ReadFile(filepath.Join(dir, "NOTES.md")); err == nil {
		w("%s\n", notes)
	}
}

// w2eGoals compares W2E's p99 with W2's at the same rate: exactly-once ≤ 2 × the default mode (issue 17).
func w2eGoals(r *Results) []Goal {
	if r.W2 == nil || r.W2E == nil {
		return nil
	}
	var g []Goal
	for _, e := range r.W2E.Points {
		for _, d := range r.W2.Points {
			if d.Rate != e.Rate {
				continue
			}
			runs := "same run"
			if gap := r.W2E.When.Sub(r.W2.When); gap < 0 || gap > time.Hour {
				runs = "different runs"
			}
			ratio := e.P99MS.Median / d.P99MS.Median
			g = append(g, Goal{fmt.Sprintf("exactly-once p99 commit → read_committed consumer ≤ 2 × the default's at %dk msgs/s (W2E vs W2)", e.Rate/1000),
				fmt.Sprintf("%.1f vs %.1f ms: %.1f × (%s)", e.P99MS.Median, d.P99MS.Median, ratio, runs), verdict(ratio <= 2)})
		}
	}
	return g
}

func w2Section(w func(string, ...any), title string, x *W2Result) {
	w("## %s\n\n", title)
	w("Open-loop load from pgbench in its own process (`-R`, %d connections, %d message of 200 B per transaction: one INSERT into the outbox, so the load generator shares nothing with the relay; Enqueue's own cost is W1) → relay (in the bench process, defaults) → Kafka (%d partitions, linger %.0f ms, acks=all, idempotent) → an independent sarama consumer. "+
		"Latency = `clock_timestamp()` at the INSERT (carried in the payload) → the record arriving at the consumer. %.0f s warm-up, then %d windows of %.0f s per rate%s. Slot lag = `pg_current_wal_lsn() - confirmed_flush_lsn`, sampled every 200 ms.\n\n",
		x.Producers, x.PerTx, x.Partitions, x.Linger, x.Warmup, x.Windows, x.Window, quickNote(x.Quick))
	if x.ExactlyOnce {
		w("**Exactly-once run:** the Kafka sink in exactly-once mode (`-w2-exactly-once`, sink defaults), the consumer `read_committed`.\n\n")
	}
	if x.WalsenderNice != 0 {
		w("**Diagnostic run:** the slot's walsender was reniced to %d (`-w2-walsender-nice`), so that it gets a CPU before the load's backends.\n\n", x.WalsenderNice)
	}
	w("| offered msgs/s | achieved msgs/s | p50 ms | p99 ms | p99.9 ms | max ms (all windows) | relay ack p99 ms | slot lag max MiB | flat |\n|---:|---:|---:|---:|---:|---:|---:|---:|:---:|\n")
	for _, p := range x.Points {
		flat := "no"
		if p.Flat {
			flat = "yes"
		}
		w("| %d | %s | %s | %s | %s | %.1f | %.1f | %.1f | %s |\n", p.Rate, p.Achieved.fmtS("%.0f"), p.P50MS.fmtS("%.1f"), p.P99MS.fmtS("%.1f"), p.P999MS.fmtS("%.1f"), p.All.MaxMS,
			p.Ack.P99MS, p.LagMaxBytes.Median/(1<<20), flat)
	}
	w("\nHighest rate with a flat p99: **%d msgs/s** (%s).\n\n![latency vs rate](latency-vs-rate.svg)\n\n", x.HighestFlat, x.FlatRule)
	w("### Where the time goes\n\nEach stage's p50 / p99 in ms over all windows. *send* = `clock_timestamp()` at the INSERT; *PG commit* = the commit timestamp in the WAL; " +
		"*walsender sent* = the send time PostgreSQL's walsender stamped on the commit's XLogData (server clock); *relay decoded* = the relay decoded that commit (both from `outbox.SourceObserver`, the daemon's `pgoutbox_source_delay_seconds`); " +
		"*sink call* = the relay calls the Kafka sink's Send (after the walsender sent the transaction, the relay decoded it and a lane picked it up: it spans the two stages before it); *Kafka ack* = Send returned (every record of the call acked by the broker; recorded once per call); *consumer* = the record reached the consumer.\n\n")
	w("| offered msgs/s |")
	for _, s := range w2Stages {
		w(" %s |", s)
	}
	w("\n|---:|" + strings.Repeat("---:|", len(w2Stages)) + "\n")
	for _, p := range x.Points {
		w("| %d |", p.Rate)
		for _, s := range w2Stages {
			st := p.Stages[s]
			w(" %.1f / %.1f |", st.P50MS, st.P99MS)
		}
		w("\n")
	}
	w("\nCPU during the windows: *machine* = busy share of all %d CPUs (`/proc/stat`); *load alone* = the same with only pgbench and PostgreSQL running, measured for 5 s per rate before the slot existed; *walsender* = the slot's walsender process, its CPU (share of one CPU) and its state sampled every 50 ms "+
		"from `pg_stat_activity.wait_event`: *running* = no wait event (on a CPU or waiting for one), *waits for WAL* = caught up, *waits on socket* = the relay reads too slowly; "+
		"*run queue* = share of the wall time the walsender was runnable but waited for a CPU (`/proc/<pid>/schedstat`).\n\n", runtime.NumCPU())
	w("| offered msgs/s | machine busy, load alone | machine busy | walsender CPU | walsender run queue | walsender running | waits for WAL | waits on socket | samples |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range x.Points {
		c := p.CPU
		w("| %d | %.0f%% | %.0f%% | %.0f%% | %.0f%% | %.0f%% | %.0f%% | %.0f%% | %d |\n", p.Rate, c.LoadOnlyBusy, c.MachineBusy, c.WalsenderCPU, c.WalsenderWait, c.WalsenderRun, c.WalsenderWAL, c.WalsenderSock, c.Samples)
	}
	w("\n")
}

func w6Section(w func(string, ...any), x *W6Result) {
	w("## W6 — one poison key\n\n")
	w("%d msgs/s for %.0f s into Kafka (%d partitions), one message of 200 B per transaction from 16 open-loop producers over %d keys; the relay runs in a child process with its defaults (16 lanes, 10 attempts, backoff 100 ms to 30 s). "+
		"In the poison run the sink fails one message (key `poison`, committed at 1 s) at every attempt, so its key is parked for ~50 s and the message is then dead-lettered; two more messages of that key (at 5 s and 10 s) wait behind it. "+
		"*Delivered* counts acks per second from 2 s into the load to its end; latency is commit → Kafka ack of every delivered message%s.\n\n", x.Rate, x.Seconds, x.Partitions, x.Keys, quickNote(x.Quick))
	w("| run | produced msgs/s | delivered msgs/s | p50 ms | p99 ms | p99.9 ms | max ms | peak RSS MB | CPU s | slot at end | poison attempts |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|\n")
	for _, r := range []struct {
		name string
		run  W6Run
	}{{"without poison", x.Baseline}, {"one poison key", x.Poison}} {
		l := r.run.Latency
		w("| %s | %.0f | %.0f | %.1f | %.1f | %.1f | %.0f | %.0f | %.1f | %v | %d |\n", r.name, r.run.ProducedPerS, r.run.DeliveredPerS,
			l.P50MS, l.P99MS, l.P999MS, l.MaxMS, r.run.PeakRSSMB, r.run.CPUSeconds, r.run.SlotAtEnd, r.run.PoisonAttempts)
	}
	w("\nDelivered with the poison key: **%.2f ×** the run without it.\n\n", x.Ratio)
}

func quickNote(q bool) string {
	if q {
		return " (**-quick**)"
	}
	return ""
}

// w3LatencyGoals are issue 13's drain goals (the sink defaults: ≥ 130k msgs/s on a quiet run and
// ≥ 0.95 × the relay's own null handler) and issue 17's (exactly-once ≥ 0.7 × the default mode).
func w3LatencyGoals(d *DrainResult) []Goal {
	k, h, e := d.variant("relay → Kafka (sink defaults)"), d.variant(handlerConsumer.Name), d.variant("relay → Kafka (exactly-once, sink defaults)")
	if k == nil {
		return nil
	}
	g := []Goal{{"drain ≥ 130k msgs/s into Kafka with the sink's defaults (W3, quiet run)", fmt.Sprintf("%.0f msgs/s", k.Rate.Median), verdict(k.Rate.Median >= 130_000)}}
	if h != nil {
		g = append(g, Goal{"drain into Kafka ≥ 0.95 × the relay's null handler (W3)", fmt.Sprintf("%.0f vs %.0f msgs/s: %.2f ×", k.Rate.Median, h.Rate.Median, k.Rate.Median/h.Rate.Median),
			verdict(k.Rate.Median >= 0.95*h.Rate.Median)})
	}
	if e != nil {
		g = append(g, Goal{"exactly-once drain ≥ 0.7 × the default mode (W3)", fmt.Sprintf("%.0f vs %.0f msgs/s: %.2f ×", e.Rate.Median, k.Rate.Median, e.Rate.Median/k.Rate.Median),
			verdict(e.Rate.Median >= 0.7*k.Rate.Median)})
	}
	return g
}
