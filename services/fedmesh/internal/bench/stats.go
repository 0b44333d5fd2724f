// Package bench measures fedmesh against raw NATS side by side in one run
// and prints Markdown tables (`make bench`). Figures are ratios measured in
// the same process on the same server, because absolute numbers on a shared
// 2-core machine are noise.
package bench

import (
	"slices"
	"time"
)

// percentile of sorted durations, q in [0,1] (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// dist summarises a set of samples.
type dist struct {
	p50, p99 time.Duration
	n        int
}

func summarise(samples []time.Duration) dist {
	s := slices.Clone(samples)
	slices.Sort(s)
	return dist{p50: percentile(s, 0.50), p99: percentile(s, 0.99), n: len(s)}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// quantileFloat returns the q quantile of xs, q in [0,1] (nearest rank; 0
// for none); xs is sorted in place.
func quantileFloat(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(q*float64(len(xs))+0.5) - 1
	return xs[max(0, min(i, len(xs)-1))]
}
