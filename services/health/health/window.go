package health

import (
	"math"
	"slices"
)

// window is a ring of the last n samples; percentiles are exact
// nearest-rank percentiles over it (not moving averages). It grows lazily
// so idle nodes cost nothing. float32 halves the memory of 10k busy nodes.
type window struct {
	buf  []float32
	next int
	size int
	gen  uint64 // bumped on every add, so callers can cache results
}

func newWindow(size int) window { return window{size: size} }

// add appends v. Values that would poison the window are refused: NaN or
// ±Inf, negatives, and anything beyond float32's range (which would become
// +Inf); the decoders already refuse them, this is the belt.
func (w *window) add(v float64) {
	if math.IsNaN(v) || v < 0 || v > math.MaxFloat32 {
		return
	}
	w.gen++
	if len(w.buf) < w.size {
		w.buf = append(w.buf, float32(v))
		return
	}
	w.buf[w.next] = float32(v)
	w.next = (w.next + 1) % w.size
}

func (w *window) len() int { return len(w.buf) }

// sum is the total of the window's samples.
func (w *window) sum() float64 {
	var t float64
	for _, v := range w.buf {
		t += float64(v)
	}
	return t
}

// percentiles returns the nearest-rank percentiles ps (0 < p <= 100) of the
// window, 0 each when it is empty.
func (w *window) percentiles(ps ...float64) []float64 {
	out := make([]float64, len(ps))
	if len(w.buf) == 0 {
		return out
	}
	s := slices.Clone(w.buf)
	slices.Sort(s)
	for i, p := range ps {
		out[i] = float64(s[rankIndex(p, len(s))])
	}
	return out
}

// rankIndex is the nearest-rank index of percentile p among n sorted samples.
func rankIndex(p float64, n int) int {
	k := int(math.Ceil(p/100*float64(n))) - 1
	return min(max(k, 0), n-1)
}

// outcomes is a ring of the last n success/failure results.
type outcomes struct {
	buf  []bool
	next int
	size int
	ok   int
}

func (o *outcomes) add(success bool) {
	if len(o.buf) < o.size {
		o.buf = append(o.buf, success)
	} else {
		if o.buf[o.next] {
			o.ok--
		}
		o.buf[o.next] = success
		o.next = (o.next + 1) % o.size
	}
	if success {
		o.ok++
	}
}

// rate is the success share of the window; 1 with no evidence yet.
func (o *outcomes) rate() float64 {
	if len(o.buf) == 0 {
		return 1
	}
	return float64(o.ok) / float64(len(o.buf))
}
