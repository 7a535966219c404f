package hist

import (
	"math"
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	t.Parallel()
	var h H
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond * 10) // 10 µs .. 100 ms
	}
	for _, tc := range []struct {
		name string
		q    float64
		want float64 // ms
	}{
		{"p50", 0.5, 50}, {"p99", 0.99, 99}, {"p99.9", 0.999, 99.9}, {"max", 1, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := h.Quantile(tc.q)
			if math.Abs(got-tc.want)/tc.want > 0.02 {
				t.Errorf("Quantile(%v) = %v ms, want %v ms ±2%%", tc.q, got, tc.want)
			}
		})
	}
	if s := h.Summary(); s.Count != 10000 || math.Abs(s.MeanMS-50.005) > 0.01 {
		t.Errorf("Summary = %+v", s)
	}
}

func BenchmarkRecord(b *testing.B) {
	var h H
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i%100000) * time.Microsecond)
	}
}
