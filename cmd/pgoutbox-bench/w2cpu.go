package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// W2CPU is where the CPU went during one rate's windows: the machine as a whole and the slot's
// walsender, whose state is sampled every 50 ms (pg_stat_activity.wait_event).
type W2CPU struct {
	LoadOnlyBusy  float64 `json:"load_only_busy_pct"`       // the machine with the load alone (pgbench and PostgreSQL, no slot), before the run
	MachineBusy   float64 `json:"machine_busy_pct"`         // of all CPUs, from /proc/stat
	WalsenderCPU  float64 `json:"walsender_cpu_pct"`        // of one CPU, from /proc/<pid>/stat
	WalsenderWait float64 `json:"walsender_runqueue_pct"`   // of the wall time, runnable but waiting for a CPU (/proc/<pid>/schedstat)
	WalsenderRun  float64 `json:"walsender_run_pct"`        // samples with no wait event: on a CPU or waiting for one
	WalsenderWAL  float64 `json:"walsender_wait_wal_pct"`   // samples waiting for WAL to be flushed (caught up)
	WalsenderSock float64 `json:"walsender_wait_write_pct"` // samples waiting to write to the relay's socket (the relay reads too slowly)
	Samples       int     `json:"walsender_samples"`
}

// cpuSampler follows the machine's CPU and the walsender of one slot while a rate runs.
type cpuSampler struct {
	mu                 sync.Mutex
	run, wal, sock, n  int
	pid                int
	busy0, total0, ws0 uint64
	rq0                uint64
	t0                 time.Time
	done, stopped      chan struct{}
}

func sampleCPU(ctx context.Context, pool *pgxpool.Pool, slot string) *cpuSampler {
	c := &cpuSampler{done: make(chan struct{}), stopped: make(chan struct{})}
	c.reset(ctx, pool, slot)
	go func() {
		defer close(c.stopped)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var ev string
			err := pool.QueryRow(ctx, `SELECT COALESCE(a.wait_event, '') FROM pg_stat_activity a
				JOIN pg_replication_slots s ON s.active_pid = a.pid WHERE s.slot_name = $1`, slot).Scan(&ev)
			if err == nil {
				c.mu.Lock()
				c.n++
				switch ev {
				case "":
					c.run++
				case "WalSenderWaitForWAL":
					c.wal++
				case "WalSenderWriteData":
					c.sock++
				}
				c.mu.Unlock()
			}
			select {
			case <-c.done:
				return
			case <-t.C:
			}
		}
	}()
	return c
}

// reset starts a new measurement (at the start of the windows).
func (c *cpuSampler) reset(ctx context.Context, pool *pgxpool.Pool, slot string) {
	var pid int
	_ = pool.QueryRow(ctx, `SELECT COALESCE(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.run, c.wal, c.sock, c.n, c.pid = 0, 0, 0, 0, pid
	c.busy0, c.total0 = machineTicks()
	c.ws0, c.rq0, c.t0 = procTicks(pid), runQueueNS(pid), time.Now()
}

// stop ends the sampling and returns what it saw since the last reset.
func (c *cpuSampler) stop() W2CPU {
	close(c.done)
	<-c.stopped
	c.mu.Lock()
	defer c.mu.Unlock()
	busy, total := machineTicks()
	var r W2CPU
	if total > c.total0 {
		r.MachineBusy = 100 * float64(busy-c.busy0) / float64(total-c.total0)
	}
	if secs := time.Since(c.t0).Seconds(); secs > 0 {
		r.WalsenderCPU = 100 * float64(procTicks(c.pid)-c.ws0) / clockTicks / secs
		r.WalsenderWait = 100 * float64(runQueueNS(c.pid)-c.rq0) / 1e9 / secs
	}
	if c.n > 0 {
		n := float64(c.n) / 100
		r.WalsenderRun, r.WalsenderWAL, r.WalsenderSock = float64(c.run)/n, float64(c.wal)/n, float64(c.sock)/n
	}
	r.Samples = c.n
	return r
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

// machineTicks returns the busy and total CPU ticks of all CPUs (/proc/stat; 0, 0 elsewhere).
func machineTicks() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i := 1; i < len(f); i++ {
		v, _ := strconv.ParseUint(f[i], 10, 64)
		total += v
		if i != 4 && i != 5 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// runQueueNS returns how long process pid has waited on a run queue, in ns (the second field of
// /proc/<pid>/schedstat; 0 when unreadable).
func runQueueNS(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/schedstat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	v, _ := strconv.ParseUint(f[1], 10, 64)
	return v
}

// procTicks returns the user + system CPU ticks of process pid (0 when unreadable).
func procTicks(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s) // f[0] is field 3 (state): utime and stime are fields 14 and 15
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st
}

// cpuProfile profiles this process into name under -profile's directory until the returned func is
// called (a no-op without -profile).
func (b *bench) cpuProfile(name string) func() {
	if b.profileDir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(b.profileDir, name))
	if err != nil {
		b.logf("profile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.logf("profile: %v", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// reniceWalsender sets the nice value of the walsender streaming slot (a diagnostic: with a lower
// value than the load's backends it gets the CPU first, which shows how much of the latency is the
// walsender waiting for a CPU).
func reniceWalsender(ctx context.Context, pool *pgxpool.Pool, slot string, nice int) error {
	var pid int
	var err error
	for deadline := time.Now().Add(10 * time.Second); pid == 0 && time.Now().Before(deadline); { // the walsender may attach just after Start
		if err = pool.QueryRow(ctx, `SELECT COALESCE(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid); err != nil || pid == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if pid == 0 {
		return fmt.Errorf("-w2-walsender-nice: no walsender streams slot %s within 10 s (%v)", slot, err)
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, pid, nice); err != nil {
		return fmt.Errorf("-w2-walsender-nice: renice walsender %d to %d: %w", pid, nice, err)
	}
	return nil
}
