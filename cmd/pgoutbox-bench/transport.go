package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// WT (issue 18) is W1 and W3 with each transport in the same run: what Enqueue adds to a business
// transaction, the drain of a backlog, and the WAL and table bytes each message costs.

var transports = []outbox.Transport{outbox.Table, outbox.LogicalMessage}

// TransportRow is one (transport, clients, messages per tx) configuration of WT's enqueue part.
type TransportRow struct {
	Transport string  `json:"transport"`
	Clients   int     `json:"clients"`
	Msgs      int     `json:"messages_per_tx"`
	TPS       Summary `json:"tps"`
	MeanMS    Summary `json:"mean_ms"`
	P50MS     Summary `json:"p50_ms"`
	AddedMS   Summary `json:"added_ms_per_tx"`     // mean minus the business-only mean of the same repeat
	AddedP50  Summary `json:"added_p50_ms_per_tx"` // the same with medians
	VsTable   Summary `json:"added_vs_table"`      // AddedP50 / the Table transport's AddedP50, per repeat
	// CostUS is what the messages add to a transaction's share of the machine, from throughput:
	// 1e6/tps minus the business transaction's 1e6/tps of the same repeat (µs per transaction).
	CostUS      Summary `json:"added_cost_us_per_tx"`
	CostVsTable Summary `json:"cost_vs_table"` // CostUS / the Table transport's CostUS, per repeat
}

// TransportResult is workload WT.
type TransportResult struct {
	Rows     []TransportRow          `json:"enqueue"`
	Seconds  float64                 `json:"seconds_per_run"`
	Warmup   float64                 `json:"warmup_s"`
	Repeats  int                     `json:"repeats"`
	Payload  int                     `json:"payload_bytes"`
	Drain    map[string]*DrainResult `json:"drain"` // by transport
	Quick    bool                    `json:"quick"`
	When     time.Time               `json:"when"`
	Accounts int                     `json:"accounts"`
}

func (b *bench) wt(ctx context.Context, n int) (*TransportResult, error) {
	res := &TransportResult{Seconds: 5, Warmup: 1, Repeats: b.repeats, Payload: 256, Accounts: 100_000, Quick: b.quick,
		When: time.Now().UTC(), Drain: map[string]*DrainResult{}}
	if b.quick {
		res.Seconds = 2
	}
	if err := b.wtEnqueue(ctx, res); err != nil {
		return nil, err
	}
	return res, b.wtDrain(ctx, n, res)
}

// wtDrain fills and drains a backlog per transport once per repeat, the transports taking turns to go
// first, so that a busier stretch of the shared machine does not fall on one of them only.
func (b *bench) wtDrain(ctx context.Context, n int, res *TransportResult) error {
	cs := []consumer{recvConsumer, handlerConsumer, b.kafkaConsumers()[0]}
	repeats := b.repeats
	defer func() { b.repeats = repeats }()
	b.repeats = 1
	type bytes struct{ table, wal, fillWAL, fillS []float64 }
	cost := map[string]*bytes{}
	for rep := range repeats {
		for i := range transports {
			tr := transports[(i+rep)%len(transports)]
			d, err := b.drain(ctx, fmt.Sprintf("WT-%s#%d", tr, rep+1), "Backlog drain, "+tr.String()+" transport",
				backlog{Schema: "bt_" + tr.String(), N: n, PerTx: 100, Payload: 200, Key: uniformKeys(10_000), Conns: 4, Transport: tr},
				"10,000 distinct", cs)
			if err != nil {
				return err
			}
			m, c := res.Drain[tr.String()], cost[tr.String()]
			if m == nil {
				m, c = d, &bytes{}
				res.Drain[tr.String()], cost[tr.String()] = m, c
			} else {
				for j := range m.Variants {
					m.Variants[j].Runs = append(m.Variants[j].Runs, d.Variants[j].Runs...)
				}
			}
			c.table, c.wal = append(c.table, d.TableBytesPerMsg), append(c.wal, d.WALBytesPerMsg)
			c.fillWAL, c.fillS = append(c.fillWAL, d.FillWALBytesPerMsg), append(c.fillS, d.FillSeconds)
		}
	}
	for tr, m := range res.Drain {
		c := cost[tr]
		m.Repeats, m.Workload = repeats, "WT-"+tr
		m.TableBytesPerMsg, m.WALBytesPerMsg = summarize(c.table).Median, summarize(c.wal).Median
		m.FillWALBytesPerMsg, m.FillSeconds = summarize(c.fillWAL).Median, summarize(c.fillS).Median
		m.summarize()
	}
	return nil
}

// wtEnqueue runs W1's transaction with no message, then 1 and 10 messages through each transport,
// interleaved within each repeat.
func (b *bench) wtEnqueue(ctx context.Context, res *TransportResult) error {
	if err := b.w1Setup(ctx, res.Accounts); err != nil {
		return err
	}
	type key struct {
		tr   outbox.Transport
		c, m int
	}
	type one struct{ tps, mean, p50 float64 }
	runs := map[key][]one{}
	body := payload(res.Payload)
	warm, dur := time.Duration(res.Warmup*float64(time.Second)), time.Duration(res.Seconds*float64(time.Second))
	for rep := range b.repeats {
		for _, c := range []int{1, 8} {
			for _, m := range []int{0, 1, 10} {
				for _, tr := range transports {
					if m == 0 && tr != outbox.Table {
						continue // the business transaction alone, once
					}
					tps, s, err := b.w1Run(ctx, tr, c, m, body, res.Accounts, warm, dur)
					if err != nil {
						return err
					}
					b.logf("WT rep %d %-7s clients %d msgs %2d: %8.0f tps  mean %.3f ms  p50 %.3f ms", rep+1, tr, c, m, tps, s.MeanMS, s.P50MS)
					runs[key{tr, c, m}] = append(runs[key{tr, c, m}], one{tps, s.MeanMS, s.P50MS})
				}
			}
		}
	}
	for _, c := range []int{1, 8} {
		for _, m := range []int{1, 10} {
			for _, tr := range transports {
				var tps, mean, p50, added, addedP50, vs, cost, costVs []float64
				for i, r := range runs[key{tr, c, m}] {
					base, table := runs[key{outbox.Table, c, 0}][i], runs[key{outbox.Table, c, m}][i]
					tps, mean, p50 = append(tps, r.tps), append(mean, r.mean), append(p50, r.p50)
					added, addedP50 = append(added, r.mean-base.mean), append(addedP50, r.p50-base.p50)
					if d := table.p50 - base.p50; d > 0 {
						vs = append(vs, (r.p50-base.p50)/d)
					}
					us := 1e6/r.tps - 1e6/base.tps
					cost = append(cost, us)
					if d := 1e6/table.tps - 1e6/base.tps; d > 0 {
						costVs = append(costVs, us/d)
					}
				}
				res.Rows = append(res.Rows, TransportRow{Transport: tr.String(), Clients: c, Msgs: m, TPS: summarize(tps),
					MeanMS: summarize(mean), P50MS: summarize(p50), AddedMS: summarize(added), AddedP50: summarize(addedP50), VsTable: summarize(vs),
					CostUS: summarize(cost), CostVsTable: summarize(costVs)})
			}
		}
	}
	return nil
}

// fillMeasured fills bl (see fill) and records in d what its messages cost in table and WAL bytes.
func (b *bench) fillMeasured(ctx context.Context, bl backlog, d *DrainResult) (end string, took time.Duration, err error) {
	var start string
	if err := b.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&start); err != nil {
		return "", 0, err
	}
	if end, took, err = fill(ctx, b.pool, bl); err != nil {
		return "", 0, err
	}
	return end, took, d.storageCost(ctx, b.pool, bl, start, end)
}

// recvOptions are pg_recvlogical's extra pgoutput options for bl: the messages of the logical transport.
func recvOptions(bl backlog) []string {
	if bl.Transport == outbox.LogicalMessage {
		return []string{"messages=true"}
	}
	return nil
}

// walSamples is how many transactions of bl.PerTx messages storageCost writes to measure WAL bytes.
const walSamples = 20

// storageCost records, after the fill of bl (WAL from start to end), what a message costs in the outbox
// table (with its indexes) and in WAL. The WAL of the fill is cluster-wide, so other work on the server
// inflates it; the figure reported is the median over walSamples transactions of bl.PerTx messages,
// each measured alone by pg_current_wal_insert_lsn() around it (their messages join the backlog after
// the fill's end, which every consumer stops at).
func (d *DrainResult) storageCost(ctx context.Context, pool *pgxpool.Pool, bl backlog, start, end string) error {
	d.Transport = bl.Transport.String()
	var size int64
	if err := pool.QueryRow(ctx, "SELECT pg_total_relation_size($1::regclass)", names.Table(bl.Schema, names.OutboxTable)).Scan(&size); err != nil {
		return fmt.Errorf("%s: table size: %w", bl.Schema, err)
	}
	d.TableBytesPerMsg = float64(size) / float64(bl.N)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	body := payload(bl.Payload)
	e := outbox.Enqueuer{Schema: bl.Schema, Transport: bl.Transport}
	var per []float64
	for i := range walSamples {
		msgs := make([]outbox.Message, bl.PerTx)
		for j := range msgs {
			msgs[j] = outbox.Message{Destination: benchDest, Key: bl.Key(i*bl.PerTx + j), Type: "BenchEvent", Payload: body}
		}
		var before, after string
		if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&before); err != nil {
			return err
		}
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return e.Enqueue(ctx, tx, msgs...) }); err != nil {
			return fmt.Errorf("%s: WAL sample: %w", bl.Schema, err)
		}
		var diff float64
		if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&after); err != nil {
			return err
		}
		if err := conn.QueryRow(ctx, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)", after, before).Scan(&diff); err != nil {
			return err
		}
		per = append(per, diff/float64(bl.PerTx))
	}
	d.WALBytesPerMsg = summarize(per).Median
	var fillWAL float64
	if err := pool.QueryRow(ctx, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)", end, start).Scan(&fillWAL); err == nil {
		d.FillWALBytesPerMsg = fillWAL / float64(bl.N)
	}
	return nil
}

// transportGoals are issue 18's targets.
func transportGoals(r *Results) []Goal {
	x := r.WT
	if x == nil {
		return nil
	}
	var g []Goal
	for _, row := range x.Rows {
		if row.Transport == outbox.LogicalMessage.String() && row.Msgs == 1 {
			g = append(g, Goal{fmt.Sprintf("WT: Enqueue of 1 message through the WAL adds ≤ 0.5 × what the table adds (%d client(s), p50 latency)", row.Clients),
				fmt.Sprintf("%s ×", row.VsTable.fmtS("%.2f")), verdict(row.VsTable.Median <= 0.5)},
				Goal{fmt.Sprintf("WT: the same in throughput cost (%d client(s), µs of the machine per transaction)", row.Clients),
					fmt.Sprintf("%s ×", row.CostVsTable.fmtS("%.2f")), verdict(row.CostVsTable.Median <= 0.5)})
		}
	}
	t, l := x.Drain[outbox.Table.String()], x.Drain[outbox.LogicalMessage.String()]
	if t == nil || l == nil {
		return g
	}
	for i, lv := range l.Variants {
		if lv.Baseline || i >= len(t.Variants) {
			continue
		}
		tv := t.Variants[i]
		g = append(g, Goal{fmt.Sprintf("WT: drain of %s logical messages ≥ the table's, %s", count(l.N), lv.Name),
			fmt.Sprintf("%.0f vs %.0f msgs/s (%.2f ×)", lv.Rate.Median, tv.Rate.Median, lv.Rate.Median/tv.Rate.Median), verdict(lv.Rate.Median >= tv.Rate.Median)})
	}
	g = append(g, Goal{"WT: table and WAL bytes per message reported for both",
		fmt.Sprintf("table %.0f B + WAL %.0f B vs %.0f B + %.0f B", t.TableBytesPerMsg, t.WALBytesPerMsg, l.TableBytesPerMsg, l.WALBytesPerMsg), "—"})
	return g
}

// transportSection writes WT's part of BENCH.md.
func transportSection(w func(string, ...any), x *TransportResult, drainTable func(*DrainResult, string)) {
	w("## WT — table vs logical-message transport (issue 18)\n\n")
	w("W1's transaction `BEGIN; UPDATE one account; [Enqueue n × %d B]; COMMIT` (%.0f s warm-up + %.0f s per run, %d repeats, every configuration of a repeat interleaved%s) "+
		"with `outbox.Enqueuer{Transport: outbox.Table}` (one INSERT) and `{Transport: outbox.LogicalMessage}` (`SELECT pg_logical_emit_message(true, 'pgoutbox:b1', $1)`; 10 messages: one statement over `unnest($1::bytea[])`). "+
		"*added* = this configuration's latency minus the business transaction's alone in the same repeat; *vs table* = added p50 / the table transport's added p50, per repeat; "+
		"*cost* = 1e6/tps minus the business transaction's 1e6/tps of the same repeat (µs of the machine per transaction, the steadier figure with 8 clients on 2 cores), and its ratio to the table's.\n\n",
		x.Payload, x.Warmup, x.Seconds, x.Repeats, quickNote(x.Quick))
	w("| transport | clients | messages/tx | tps | mean ms | p50 ms | added ms (mean) | added ms (p50) | vs table (p50) | cost µs/tx | vs table (cost) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range x.Rows {
		w("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Transport, r.Clients, r.Msgs, r.TPS.fmtS("%.0f"), r.MeanMS.fmtS("%.3f"), r.P50MS.fmtS("%.3f"),
			r.AddedMS.fmtS("%+.3f"), r.AddedP50.fmtS("%+.3f"), r.VsTable.fmtS("%.2f"), r.CostUS.fmtS("%+.0f"), r.CostVsTable.fmtS("%.2f"))
	}
	w("\n")
	for _, tr := range transports {
		d := x.Drain[tr.String()]
		if d == nil {
			continue
		}
		w("### Drain, %s transport\n\n", tr)
		w("Per message: **%.0f B of outbox table** (heap and indexes after the fill, `pg_total_relation_size`), **%.0f B of WAL** (median over %d transactions of %d messages, each measured alone; the whole fill averaged %.0f B, cluster-wide). ",
			d.TableBytesPerMsg, d.WALBytesPerMsg, walSamples, d.PerTx, d.FillWALBytesPerMsg)
		drainTable(d, "Each repeat fills a backlog of each transport and drains it, the transports taking turns to go first (fill time: median). "+
			"pg_recvlogical reads the same slot type"+map[bool]string{true: " with `-o messages=true`", false: ""}[tr == outbox.LogicalMessage]+"; relays run WithLogicalMessages for the logical backlog.")
	}
}
