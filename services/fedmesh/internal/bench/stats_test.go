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

func TestMedianFloat(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 3}} {
		assert.Equal(t, tc.want, medianFloat(tc.in), "%v", tc.in)
	}
}
