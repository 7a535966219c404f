// Package hist is a log-bucketed latency histogram (about 1% relative precision from 100 µs up,
// exact below), in the spirit of HdrHistogram but without dependencies.
//
// An H is safe for concurrent use: Record uses atomics only.
package hist

import (
	"math"
	"sync/atomic"
	"time"
)

const (
	linear   = 100  // exact microsecond buckets below 100 µs
	growth   = 1.01 // bucket width above: 1%
	nBuckets = 2200 // covers up to ~ 100 µs · 1.01^2100 ≈ 1.2e11 µs
)

var logGrowth = math.Log(growth)

// H counts durations in microsecond buckets. The zero value is ready to use.
type H struct {
	counts [nBuckets]atomic.Uint64
	n      atomic.Uint64
	sumUS  atomic.Int64
	maxUS  atomic.Int64
}

func bucket(us int64) int {
	if us < linear {
		return int(max(us, 0))
	}
	i := linear + int(math.Log(float64(us)/linear)/logGrowth)
	return min(i, nBuckets-1)
}

// upper returns the largest value (µs) that falls into bucket i.
func upper(i int) float64 {
	if i < linear {
		return float64(i)
	}
	return linear * math.Pow(growth, float64(i-linear+1))
}

// Record adds one duration.
func (h *H) Record(d time.Duration) {
	us := d.Microseconds()
	h.counts[bucket(us)].Add(1)
	h.n.Add(1)
	h.sumUS.Add(us)
	for {
		m := h.maxUS.Load()
		if us <= m || h.maxUS.CompareAndSwap(m, us) {
			break
		}
	}
}

// Merge adds o's counts into h.
func (h *H) Merge(o *H) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sumUS.Add(o.sumUS.Load())
	if m := o.maxUS.Load(); m > h.maxUS.Load() {
		h.maxUS.Store(m)
	}
}

// Count returns how many durations were recorded.
func (h *H) Count() uint64 { return h.n.Load() }

// Quantile returns the q-quantile (0 < q ≤ 1) in milliseconds, as the upper bound of its bucket
// (capped at the maximum recorded value).
func (h *H) Quantile(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(upper(i), float64(h.maxUS.Load())) / 1000
		}
	}
	return float64(h.maxUS.Load()) / 1000
}

// Summary is a histogram's digest in milliseconds.
type Summary struct {
	Count  uint64  `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// Summary digests h.
func (h *H) Summary() Summary {
	n := h.n.Load()
	s := Summary{Count: n, P50MS: h.Quantile(0.50), P90MS: h.Quantile(0.90), P99MS: h.Quantile(0.99),
		P999MS: h.Quantile(0.999), MaxMS: float64(h.maxUS.Load()) / 1000}
	if n > 0 {
		s.MeanMS = float64(h.sumUS.Load()) / float64(n) / 1000
	}
	return s
}
