package oracle

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"
)

// Delivery is one message as a consumer saw it.
type Delivery struct {
	ID, Key string
	Payload []byte
	Pos     string // where the sink put it (Kafka partition/offset, stdout line), for diagnostics; may be empty
}

// Verdict is what [Ledger.Check] found.
type Verdict struct {
	Committed, RolledBack, Unknown int // the ledger's sizes
	Deliveries                     int // deliveries judged, duplicates included
	Dead                           int // committed messages found in the dead-letter table

	Lost    int // I1: committed, neither delivered nor dead-lettered
	Phantom int // I2: deliveries of rolled-back messages
	Order   int // I3: first deliveries of a key out of commit order
	Dups    int // I5: deliveries after the first of their id
	Foreign int // first deliveries of ids never enqueued (neither committed, rolled back nor indeterminate)
	Corrupt int // first deliveries whose key or payload differ from what was committed

	Examples []string // the first few failures of each kind, with their ids and positions
	Failures string   // the ledger's failed transactions
}

// examplesPerKind bounds Verdict.Examples.
const examplesPerKind = 3

// Problems lists the guarantees v breaks; duplicates count only when faults is false (I5).
func (v Verdict) Problems(faults bool) []string {
	var out []string
	add := func(n int, format string) {
		if n != 0 {
			out = append(out, fmt.Sprintf(format, n))
		}
	}
	add(v.Lost, "I1: %d committed messages lost (neither delivered nor dead-lettered)")
	add(v.Phantom, "I2: %d deliveries of rolled-back messages")
	add(v.Order, "I3: %d first deliveries out of commit order within their key")
	add(v.Foreign, "%d delivered ids were never enqueued")
	add(v.Corrupt, "%d messages arrived with another key or payload than committed")
	if !faults {
		add(v.Dups, "I5: %d duplicates without a fault")
	}
	return out
}

func (v Verdict) String() string {
	return fmt.Sprintf("committed %d, rolled back %d, indeterminate %d, deliveries %d, duplicates %d, dead-lettered %d; lost %d, phantom %d, order violations %d, foreign %d, corrupt %d",
		v.Committed, v.RolledBack, v.Unknown, v.Deliveries, v.Dups, v.Dead, v.Lost, v.Phantom, v.Order, v.Foreign, v.Corrupt)
}

// Assert logs v and fails t for each of its problems (see [Verdict.Problems]). It returns v.
func (v Verdict) Assert(t T, faults bool) Verdict {
	t.Helper()
	t.Logf("oracle: %s; generator: %s", v, v.Failures)
	problems := v.Problems(faults)
	for _, p := range problems {
		t.Errorf("%s", p)
	}
	if len(problems) > 0 && len(v.Examples) > 0 {
		t.Errorf("for example:\n\t%s", strings.Join(v.Examples, "\n\t"))
	}
	return v
}

// Check judges ds, a sink's deliveries in its order per key, against the ledger, with dead (the
// dead-letter table, id → error) counting as acked: see [Verdict] for what it counts.
func (l *Ledger) Check(ds []Delivery, dead map[string]string) Verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := Verdict{Committed: len(l.committed), RolledBack: len(l.rolledBack), Unknown: len(l.unknown),
		Deliveries: len(ds), Failures: l.failuresLocked()}
	examples := map[string]int{}
	example := func(kind, format string, args ...any) {
		if examples[kind] < examplesPerKind {
			examples[kind]++
			v.Examples = append(v.Examples, kind+": "+fmt.Sprintf(format, args...))
		}
	}
	seen := make(map[string]bool, len(ds))
	last := map[string]int{}
	lastPos := map[string]string{}
	for i, d := range ds {
		pos := d.Pos
		if pos == "" {
			pos = fmt.Sprintf("delivery #%d", i)
		}
		if l.rolledBack[d.ID] {
			v.Phantom++
			example("I2", "rolled-back message %s delivered at %s", d.ID, pos)
		}
		if seen[d.ID] {
			v.Dups++
			continue
		}
		seen[d.ID] = true
		s, ok := l.committed[d.ID]
		if !ok {
			if !l.rolledBack[d.ID] && !l.unknown[d.ID] {
				v.Foreign++
				example("foreign", "message %s delivered at %s was never enqueued", d.ID, pos)
			}
			continue
		}
		if d.Key != s.Key || !bytes.Equal(d.Payload, s.Payload) {
			v.Corrupt++
			example("corrupt", "message %s arrived at %s with key %q and %d payload bytes, want key %q and the exact %d bytes",
				d.ID, pos, d.Key, len(d.Payload), s.Key, len(s.Payload))
		}
		if prev, ok := last[s.Key]; ok && s.N < prev {
			v.Order++
			example("I3", "key %s: message #%d (%s, committed %s) first delivered at %s, after #%d at %s",
				s.Key, s.N, d.ID, s.At.Format("15:04:05.000"), pos, prev, lastPos[s.Key])
		}
		last[s.Key] = s.N
		lastPos[s.Key] = pos
	}
	for id, s := range l.committed {
		if _, ok := dead[id]; ok {
			v.Dead++
			continue
		}
		if !seen[id] {
			v.Lost++
			example("I1", "message %s (key %s #%d, committed %s) neither delivered nor dead-lettered", id, s.Key, s.N, s.At.Format("15:04:05.000"))
		}
	}
	return v
}

// missing counts the committed messages that are neither delivered nor in dead.
func (l *Ledger) missing(delivered func(string) bool, dead map[string]string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id := range l.committed {
		if _, ok := dead[id]; !ok && !delivered(id) {
			n++
		}
	}
	return n
}

// Source reads everything a sink delivered so far, in its order per key. An error is taken as
// passing (a broker that is not back yet) and the read is retried.
type Source func(ctx context.Context) ([]Delivery, error)

// Reading is one read of a sink and of the dead-letter table.
type Reading struct {
	Deliveries []Delivery
	Dead       map[string]string // id → error
}

// Await reads src and the dead-letter table until every committed message was delivered or
// dead-lettered, or until timeout has passed. It returns the last reading and how many committed
// messages it misses; an error means no read succeeded at the deadline, and is the last one.
func (l *Ledger) Await(ctx context.Context, timeout time.Duration, src Source) (Reading, int, error) {
	deadline := time.Now().Add(timeout)
	every := 10 * time.Millisecond
	for {
		r, err := l.read(ctx, src)
		if err == nil {
			ids := make(map[string]bool, len(r.Deliveries))
			for _, d := range r.Deliveries {
				ids[d.ID] = true
			}
			missing := l.missing(func(id string) bool { return ids[id] }, r.Dead)
			if missing == 0 || time.Now().After(deadline) {
				return r, missing, nil
			}
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			return Reading{}, 0, err
		}
		if !sleep(ctx, every) {
			return Reading{}, 0, ctx.Err()
		}
		every = min(every*3/2, 300*time.Millisecond)
	}
}

func (l *Ledger) read(ctx context.Context, src Source) (Reading, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ds, err := src(ctx)
	if err != nil {
		return Reading{}, err
	}
	dead, err := l.DeadLetters(ctx)
	if err != nil {
		return Reading{}, err
	}
	return Reading{Deliveries: ds, Dead: dead}, nil
}

// WaitAll waits until every committed message was delivered (by src) or dead-lettered, and fails t
// at once when that does not happen within timeout.
func (l *Ledger) WaitAll(t T, timeout time.Duration, src Source) Reading {
	t.Helper()
	r, missing, err := l.Await(context.Background(), timeout, src)
	if err != nil {
		t.Fatalf("oracle: read deliveries: %v", err)
	}
	if missing != 0 {
		c := l.Counts()
		t.Fatalf("I1: after %s, %d of %d committed messages are neither delivered nor dead-lettered", timeout, missing, c.Committed)
	}
	return r
}

// Verify waits as [Ledger.WaitAll] does (but goes on after the timeout, failing t), then checks what
// src delivered and asserts the verdict (faults: duplicates allowed). It returns the verdict.
func (l *Ledger) Verify(t T, timeout time.Duration, faults bool, src Source) Verdict {
	t.Helper()
	r, missing, err := l.Await(context.Background(), timeout, src)
	if err != nil {
		t.Fatalf("oracle: read deliveries: %v", err)
	}
	if missing != 0 {
		t.Errorf("I1: %d committed messages still neither delivered nor dead-lettered after %s", missing, timeout)
	}
	return l.Check(r.Deliveries, r.Dead).Assert(t, faults)
}
