package health

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
)

func TestRoundMs(t *testing.T) {
	cases := []struct {
		in, want float64
	}{
		{821.2061157226562, 821.2},
		{float64(float32(821.2)), 821.2}, // 821.2000122070312
		{0.04, 0},
		{0.05, 0.1},
		{12.96, 13},
		{0, 0},
		{math.NaN(), 0},
		{math.Inf(1), 0},
		{1e300, 1e300}, // too large for tenths; must not overflow to +Inf
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, roundMs(tc.in), "roundMs(%v)", tc.in)
	}
}

// The windows keep float32 samples: without rounding, a node whose requests
// took 821.2 ms shows latency_p50_ms 821.2000122070312 in fed_health.
func TestRecordsCarryLatenciesRoundedToATenth(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	const lat = 821.2061157226562
	for range 3 {
		h.ok("n1", lat)
	}
	// the bucket is rewritten only when a routing field changes: the first
	// record with a latency is the one to check
	r := h.waitKV("n1", "a latency", func(r *record.Health) bool { return r.LatencyP50Ms > 0 })
	assert.Equal(t, 821.2, r.LatencyP50Ms)
	assert.Equal(t, 821.2, r.LatencyP99Ms)
	e, err := h.kv.Get(context.Background(), buckets.NodeKey("n1"))
	require.NoError(t, err)
	assert.Contains(t, string(e.Value()), `"latency_p50_ms":821.2,`, "the stored JSON itself")

	st := h.stats()
	for name, v := range map[string]float64{"latency_p50_ms": st.LatencyP50Ms, "latency_p99_ms": st.LatencyP99Ms,
		"avg_latency_ms": st.AvgLatencyMs, "node latency_p50_ms": st.Nodes["n1"].LatencyP50Ms} {
		assert.Equal(t, 821.2, v, "fed.stats %s", name)
	}

	// the mesh-wide counters health stores under stats.* too
	natsembed.Eventually(t, 0, func() error {
		e, err := h.kv.Get(context.Background(), buckets.StatsPrefix+"mesh")
		if err != nil {
			return err
		}
		v := string(e.Value())
		return natsembed.Check(strings.Contains(v, `"latency_p50_ms":821.2,`) && !strings.Contains(v, "821.20"),
			"stats.mesh %s", v)
	})
}
