package benchrouting

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestRoutingPercentile(t *testing.T) {
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	cases := []struct {
		name string
		xs   []float64
		q    float64
		want float64
	}{
		{"none", nil, 0.5, 0},
		{"one", []float64{3}, 0.99, 3},
		{"p50 of ten", ten, 0.5, 5},
		{"p90 of ten", ten, 0.9, 9},
		{"p99 of ten", ten, 0.99, 10},
		{"p0", ten, 0, 1},
		{"p100", ten, 1, 10},
		{"p90 of a hundred", seq(100), 0.9, 90},
		{"p99 of a hundred", seq(100), 0.99, 99},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { assert.Equal(t, c.want, percentile(c.xs, c.q)) })
	}
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

func TestRoutingHitRate(t *testing.T) {
	cases := []struct {
		name          string
		before, after []prefixCounters
		want          float64
		ok            bool
	}{
		{"fresh servers", []prefixCounters{{}, {}}, []prefixCounters{{queries: 100, hits: 30}, {queries: 300, hits: 90}}, 0.3, true},
		{"counts before the run do not count", []prefixCounters{{queries: 1000, hits: 1000}}, []prefixCounters{{queries: 1100, hits: 1025}}, 0.25, true},
		// the second server restarted: its counters went down and all of
		// after is new
		{"a reset", []prefixCounters{{queries: 100, hits: 50}, {queries: 500, hits: 400}}, []prefixCounters{{queries: 200, hits: 100}, {queries: 100, hits: 10}}, 60.0 / 200, true},
		{"nothing queried", []prefixCounters{{queries: 5, hits: 1}}, []prefixCounters{{queries: 5, hits: 1}}, 0, false},
		{"no servers", nil, nil, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := hitRate(c.before, c.after)
			assert.Equal(t, c.ok, ok)
			assert.InDelta(t, c.want, got, 1e-12)
		})
	}
	assert.Equal(t, 5.0, counterDelta(10, 15))
	assert.Equal(t, 3.0, counterDelta(10, 3), "a reset")
}

func TestRoutingScrapePrefix(t *testing.T) {
	reg := prometheus.NewRegistry()
	q := prometheus.NewCounterVec(prometheus.CounterOpts{Name: simserver.MetricPrefixQueries}, []string{"model_name"})
	h := prometheus.NewCounterVec(prometheus.CounterOpts{Name: simserver.MetricPrefixHits}, []string{"model_name"})
	reg.MustRegister(q, h)
	q.WithLabelValues("a").Add(100)
	q.WithLabelValues("b").Add(20)
	h.WithLabelValues("a").Add(40)
	c, err := scrapePrefix(reg)
	require.NoError(t, err)
	assert.Equal(t, prefixCounters{queries: 120, hits: 40}, c, "summed over series")

	_, err = scrapePrefix(prometheus.NewRegistry())
	assert.ErrorContains(t, err, simserver.MetricPrefixQueries)

	// a real server's registry has them from the start
	srv, err := simserver.New(simserver.Config{Addr: "127.0.0.1:0"})
	require.NoError(t, err)
	c, err = scrapePrefix(srv.Metrics())
	require.NoError(t, err)
	assert.Zero(t, c)
}

func TestRoutingSummarise(t *testing.T) {
	ms := time.Millisecond
	// real times at scale 10: 100 ms real is 1 s simulated
	req := func(node string, group int, sent, ttft, decode time.Duration, tokens int) sample {
		return sample{node: node, group: group, sent: sent, first: sent + ttft, last: sent + ttft + decode, end: sent + ttft + decode + ms, tokens: tokens}
	}
	samples := []sample{
		req("h100-1", 0, 0, 10*ms, 90*ms, 10),     // TTFT 0.1 s, mean gap 0.1 s
		req("h100-1", 0, 50*ms, 20*ms, 90*ms, 10), // 0.2 s
		req("a10-1", 0, 100*ms, 150*ms, 0, 1),     // 1.5 s, one token: no gap
		req("a10-1", 1, 200*ms, 300*ms, 180*ms, 10),
		{node: "h100-2", group: 1, sent: 300 * ms, end: 900 * ms, err: &wire.Error{Code: 429}},
		{group: 1, sent: 400 * ms, end: 1000 * ms, err: context.DeadlineExceeded},
		{group: 1, sent: 500 * ms, end: 600 * ms, err: errors.New("boom")},
	}
	profileOf := map[string]string{"h100-1": "h100", "h100-2": "h100", "a10-1": "a10"}
	s := summarise(samples, 10, 2*time.Second, profileOf)
	assert.Equal(t, 7, s.requests)
	assert.Equal(t, 4, s.ok)
	assert.Equal(t, 3, s.errors)
	assert.Equal(t, map[string]int{"429": 1, "timeout": 1, "other": 1}, s.errCodes)
	// TTFTs 0.1, 0.2, 1.5, 3.0 s
	assert.InDeltaSlice(t, []float64{0.2, 3.0, 3.0}, s.ttft[:], 1e-9)
	// mean gaps 0.1, 0.1, 0.2 s (the one-token answer has none)
	assert.InDeltaSlice(t, []float64{0.1, 0.2}, s.itl[:], 1e-9)
	// the span: first sent (0) to last end (1000 ms real = 10 s)
	assert.InDelta(t, 31.0/10, s.tokensPerSec, 1e-9)
	assert.InDelta(t, 3.0/10, s.goodput, 1e-9, "three answers within 2 s")
	assert.InDelta(t, 3.0/7, s.goodShare, 1e-9, "of all requests, errors included")
	assert.InDelta(t, 0.5, s.share["h100"], 1e-9)
	assert.InDelta(t, 0.5, s.share["a10"], 1e-9)
	assert.Equal(t, 2, s.byProfile["a10"].requests)
	assert.InDelta(t, 3.0, s.byProfile["a10"].ttftP90, 1e-9)
	// group 0 went to h100-1 and a10-1, group 1 (answered) to a10-1
	assert.InDelta(t, 1.5, s.spread, 1e-9)

	s.addHitRates([]string{"h100", "h100", "a10"},
		[]prefixCounters{{}, {}, {queries: 10, hits: 10}},
		[]prefixCounters{{queries: 100, hits: 80}, {queries: 100, hits: 20}, {queries: 210, hits: 110}})
	assert.True(t, s.hitKnown)
	assert.InDelta(t, 200.0/400, s.hit, 1e-9)
	assert.InDelta(t, 0.5, s.byProfile["h100"].hit, 1e-9)
	assert.InDelta(t, 0.5, s.byProfile["a10"].hit, 1e-9)

	empty := summarise(nil, 10, time.Second, nil)
	assert.Zero(t, empty.requests)
	assert.Zero(t, empty.tokensPerSec)
	assert.Zero(t, spread([]sample{req("a", -1, 0, ms, ms, 2)}), "nothing shared")
}
