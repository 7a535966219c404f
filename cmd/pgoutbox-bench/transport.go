package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox-bench/internal/hist"

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
	MeanMS    Summary `json:"mean_ms"`
	P50MS     Summary `json:"p50_ms"`
	AddedMS   Summary `json:"added_ms_per_tx"`     // mean minus the business-only mean of the same run
	AddedP50  Summary `json:"added_p50_ms_per_tx"` // the same with medians
	VsTable   Summary `json:"added_vs_table"`      // AddedP50 / the Table transport's AddedP50, per run
	// CallP50 is the median time of the Enqueue call itself, inside the transaction.
	CallP50 Summary `json:"enqueue_call_p50_ms"`
}

// TransportResult is workload WT.
type TransportResult struct {
	Rows     []TransportRow          `json:"enqueue"`
	Seconds  float64                 `json:"seconds_per_run"`
	Repeats  int                     `json:"repeats"`
	Payload  int                     `json:"payload_bytes"`
	Drain    map[string]*DrainResult `json:"drain"` // by transport
	Quick    bool                    `json:"quick"`
	When     time.Time               `json:"when"`
	Accounts int                     `json:"accounts"`
	Command  string                  `json:"command"`
	LoadAvg  []string                `json:"loadavg_start_end"` // /proc/loadavg at the start and the end
}

func (b *bench) wt(ctx context.Context, n int) (*TransportResult, error) {
	res := &TransportResult{Seconds: 6, Repeats: b.repeats, Payload: 256, Accounts: 100_000, Quick: b.quick,
		When: time.Now().UTC(), Drain: map[string]*DrainResult{}, LoadAvg: []string{loadAvg()},
		Command: "go run ./cmd/pgoutbox-bench " + strings.Join(os.Args[1:], " ")}
	defer func() { res.LoadAvg = append(res.LoadAvg, loadAvg()) }()
	if b.quick {
		res.Seconds = 3
	}
	if err := b.wtEnqueue(ctx, res); err != nil {
		return nil, err
	}
	return res, b.wtDrain(ctx, n, res)
}

// wtForms are the transactions a WT enqueue run alternates: the business transaction alone, then with
// the messages through each transport.
var wtForms = []string{"none", outbox.Table.String(), outbox.LogicalMessage.String(), "table, queued", "logical, queued", "SELECT 1"}

// wtVsTable maps each form to the one it is compared with ("vs table"): a queued transport to the
// queued table, the rest to the table's Enqueue call.
var wtVsTable = []int{1, 1, 1, 3, 3, 1}

// wtBody runs form f's transaction body on tx: the business UPDATE of account id and msgs written as
// the form says; it returns how long the Enqueue part took (the whole batch for the queued forms).
func wtBody(ctx context.Context, tx pgx.Tx, f, id int, msgs []outbox.Message) (time.Duration, error) {
	const update = "UPDATE b1.accounts SET balance = balance + 1 WHERE id = $1"
	enqs := []outbox.Enqueuer{{Schema: w1Schema}, {Schema: w1Schema, Transport: outbox.LogicalMessage}}
	t0 := time.Now()
	switch f {
	case 3, 4:
		b := &pgx.Batch{}
		b.Queue(update, id)
		if err := enqs[f-3].Queue(ctx, b, msgs...); err != nil {
			return 0, err
		}
		return time.Since(t0), tx.SendBatch(ctx, b).Close()
	}
	if _, err := tx.Exec(ctx, update, id); err != nil {
		return 0, err
	}
	t0 = time.Now()
	var err error
	switch f {
	case 1, 2:
		err = enqs[f-1].Enqueue(ctx, tx, msgs...)
	case 5:
		_, err = tx.Exec(ctx, "SELECT 1")
	}
	return time.Since(t0), err
}

// wtEnqueue measures W1's transaction with 1 and 10 messages through each transport. Each client
// takes the forms in turn, transaction after transaction, so that the machine's load (shared, and
// shifting by the second) weighs on all of them alike; what a transport adds is its latency minus the
// business transaction's of the same run.
func (b *bench) wtEnqueue(ctx context.Context, res *TransportResult) error {
	if err := b.w1Setup(ctx, res.Accounts); err != nil {
		return err
	}
	type key struct{ c, m int }
	runs := map[key][][]hist.Summary{} // per run: tx and Enqueue-call summaries of each form
	body := payload(res.Payload)
	for rep := range b.repeats {
		for _, c := range []int{1, 8} {
			for _, m := range []int{1, 10} {
				tx, call, err := b.wtMixed(ctx, c, m, body, res.Accounts, time.Duration(res.Seconds*float64(time.Second)))
				if err != nil {
					return err
				}
				b.logf("WT rep %d clients %d msgs %2d: p50 none %.3f, table %.3f, logical %.3f, queued table %.3f, queued logical %.3f, SELECT 1 %.3f ms",
					rep+1, c, m, tx[0].P50MS, tx[1].P50MS, tx[2].P50MS, tx[3].P50MS, tx[4].P50MS, tx[5].P50MS)
				runs[key{c, m}] = append(runs[key{c, m}], append(tx, call...))
			}
		}
	}
	nf := len(wtForms)
	for _, c := range []int{1, 8} {
		for _, m := range []int{1, 10} {
			for f := 1; f < nf; f++ {
				var mean, p50, added, addedP50, vs, call []float64
				for _, r := range runs[key{c, m}] {
					mean, p50 = append(mean, r[f].MeanMS), append(p50, r[f].P50MS)
					added, addedP50 = append(added, r[f].MeanMS-r[0].MeanMS), append(addedP50, r[f].P50MS-r[0].P50MS)
					if d := r[wtVsTable[f]].P50MS - r[0].P50MS; d > 0 {
						vs = append(vs, (r[f].P50MS-r[0].P50MS)/d)
					}
					call = append(call, r[nf+f].P50MS)
				}
				res.Rows = append(res.Rows, TransportRow{Transport: wtForms[f], Clients: c, Msgs: m, MeanMS: summarize(mean), P50MS: summarize(p50),
					AddedMS: summarize(added), AddedP50: summarize(addedP50), VsTable: summarize(vs), CallP50: summarize(call)})
			}
		}
	}
	return nil
}

// wtMixed runs `BEGIN; UPDATE one account; [Enqueue msgs]; COMMIT` on clients connections for dur,
// each taking wtForms in turn; it returns the summaries of the transactions and of the Enqueue calls
// of each form (after a warm-up of one second).
func (b *bench) wtMixed(ctx context.Context, clients, msgs int, body []byte, accounts int, dur time.Duration) (tx, call []hist.Summary, err error) {
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		if conns[i], err = pgx.Connect(ctx, b.dbURL); err != nil {
			return nil, nil, err
		}
		defer conns[i].Close(context.WithoutCancel(ctx))
	}
	txH, callH := make([]hist.H, len(wtForms)), make([]hist.H, len(wtForms))
	warmEnd, end := time.Now().Add(time.Second), time.Now().Add(time.Second+dur)
	g, gctx := errgroup.WithContext(ctx)
	for i, conn := range conns {
		g.Go(func() error {
			r := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			batch := make([]outbox.Message, msgs)
			for k := i; time.Now().Before(end); k++ {
				f := k % len(wtForms)
				for j := range batch {
					batch[j] = outbox.Message{Destination: benchDest, Key: fmt.Sprintf("acct-%d", r.IntN(accounts)), Type: "BalanceChanged", Payload: body}
				}
				var took time.Duration
				t0 := time.Now()
				err := pgx.BeginFunc(gctx, conn, func(tx pgx.Tx) (err error) {
					took, err = wtBody(gctx, tx, f, 1+r.IntN(accounts), batch)
					return err
				})
				if err != nil {
					return fmt.Errorf("WT clients %d msgs %d %s: %w", clients, msgs, wtForms[f], err)
				}
				if t0.After(warmEnd) {
					txH[f].Record(time.Since(t0))
					callH[f].Record(took)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	for f := range wtForms {
		tx, call = append(tx, txH[f].Summary()), append(call, callH[f].Summary())
	}
	return tx, call, nil
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
		if row.Msgs != 1 {
			continue
		}
		switch row.Transport {
		case outbox.LogicalMessage.String():
			g = append(g, Goal{fmt.Sprintf("WT: Enqueue of 1 message through the WAL adds ≤ 0.5 × what the table adds (%d client(s), p50)", row.Clients),
				fmt.Sprintf("%s × (%+.3f ms)", row.VsTable.fmtS("%.2f"), row.AddedP50.Median), verdict(row.VsTable.Median <= 0.5)})
		case "logical, queued":
			g = append(g, Goal{fmt.Sprintf("WT: the same with both transports queued on the business statement's batch (Enqueuer.Queue, %d client(s), p50)", row.Clients),
				fmt.Sprintf("%s × (%+.3f ms)", row.VsTable.fmtS("%.2f"), row.AddedP50.Median), verdict(row.VsTable.Median <= 0.5)})
		case "SELECT 1":
			g = append(g, Goal{fmt.Sprintf("(context) one more round trip (`SELECT 1`) adds, against the table's Enqueue (%d client(s), p50)", row.Clients),
				fmt.Sprintf("%s × (%+.3f ms)", row.VsTable.fmtS("%.2f"), row.AddedP50.Median), "—"})
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
	w("Run of %s (`%s`); load average (1/5/15 min) %s — the machine is shared.\n\n", x.When.Format("2006-01-02 15:04 UTC"), x.Command, strings.Join(x.LoadAvg, " at the start, ")+" at the end")
	w("W1's transaction `BEGIN; UPDATE one account; [Enqueue n × %d B]; COMMIT`, %d repeats of %.0f s (after 1 s of warm-up) per configuration%s. "+
		"Within a run every client takes six transactions in turn — the business transaction alone, with `outbox.Enqueuer{Transport: outbox.Table}` (one INSERT), "+
		"with `{Transport: outbox.LogicalMessage}` (`SELECT pg_logical_emit_message(true, 'pgoutbox:b1', $1)`; 10 messages: one statement over `unnest($1::bytea[])`), "+
		"each transport *queued* (`Enqueuer.Queue` puts its statement into a `pgx.Batch` with the UPDATE: no round trip of its own), and with a bare `SELECT 1` (the cost of one more round trip, the floor of any Enqueue call) — "+
		"so that the shared machine's shifting load weighs on all alike. *added* = the transaction's latency minus the business transaction's alone in the same run; "+
		"*vs table* = added p50 / the table transport's added p50 in the same form (queued vs queued, the rest vs the Enqueue call), per run; *Enqueue call* = the median time of the Enqueue call itself inside the transaction (queued: the whole batch).\n\n",
		x.Payload, x.Repeats, x.Seconds, quickNote(x.Quick))
	w("| transport | clients | messages/tx | mean ms | p50 ms | added ms (mean) | added ms (p50) | vs table | Enqueue call p50 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range x.Rows {
		w("| %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", r.Transport, r.Clients, r.Msgs, r.MeanMS.fmtS("%.3f"), r.P50MS.fmtS("%.3f"),
			r.AddedMS.fmtS("%+.3f"), r.AddedP50.fmtS("%+.3f"), r.VsTable.fmtS("%.2f"), r.CallP50.fmtS("%.3f"))
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
