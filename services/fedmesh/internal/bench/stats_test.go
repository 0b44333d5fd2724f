package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	d := summarise(s)
	assert.Equal(t, 50*time.Millisecond, d.p50)
	assert.Equal(t, 99*time.Millisecond, d.p99)
	assert.Equal(t, 100, d.n)
	assert.Equal(t, time.Duration(0), percentile(nil, 0.5))
	assert.Equal(t, 7*time.Millisecond, percentile([]time.Duration{7 * time.Millisecond}, 0.99))
}

func TestQuantileFloat(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		q    float64
		want float64
	}{
		{nil, 0.5, 0},
		{[]float64{3}, 0.1, 3},
		{[]float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 0.1, 1},
		{[]float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 0.5, 5},
		{[]float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 1, 10},
		{[]float64{2, 1}, 0, 1},
	} {
		assert.Equal(t, tc.want, quantileFloat(tc.in, tc.q), "%v q=%v", tc.in, tc.q)
	}
}
