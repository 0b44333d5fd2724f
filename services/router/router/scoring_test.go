package router

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func ptr[T any](v T) *T { return &v }

func TestScore(t *testing.T) {
	type scores [numPolicies]float64
	cases := []struct {
		name    string
		node    tnode
		regions record.Regions
		spec    func(*wire.Spec)
		out     int // this router's outstanding dispatches on the node
		probing bool
		want    scores // health, latency, privacy, locality, cost, load
		total   float64
		rej     reject
	}{
		{name: "healthy fast local node", node: tnode{region: "eu", cost: 0.5, health: healthy(0)},
			spec: func(s *wire.Spec) { s.Region = "eu" }, want: scores{1, 1, 1, 0.8, 0.5, 1}, total: (2 + 1 + 1 + 0.8 + 0.5 + 1) / 6.0},
		{name: "degraded slow remote node", node: tnode{region: "us", cost: 0.2,
			health: &record.Health{State: record.StateDegraded, LatencyP50Ms: 2500, Samples: 50}},
			spec: func(s *wire.Spec) { s.Region = "eu" }, want: scores{0.5, 0.5, 1, 0.4, 0.8, 1}, total: (1 + 0.5 + 1 + 0.4 + 0.8 + 1) / 6.0},
		{name: "no health record is unknown, unknown caller region neutral", node: tnode{region: "eu", cost: 0.5},
			want: scores{0.3, 1, 1, 0.5, 0.5, 1}, total: (0.6 + 1 + 1 + 0.5 + 0.5 + 1) / 6.0},
		{name: "latency score floors at 5 s", node: tnode{region: "eu", cost: 0.5,
			health: &record.Health{State: record.StateHealthy, LatencyP50Ms: 9000}},
			want: scores{1, 0, 1, 0.5, 0.5, 1}, total: (2 + 0 + 1 + 0.5 + 0.5 + 1) / 6.0},
		{name: "unhealthy rejected by health", node: tnode{health: &record.Health{State: record.StateUnhealthy}},
			want: scores{0, 1, 1, 0.5, 0.5, 1}, rej: rejUnhealthy},
		{name: "open circuit rejected", node: tnode{health: &record.Health{State: record.StateHealthy, Circuit: record.CircuitOpen}},
			want: scores{1, 1, 1, 0.5, 0.5, 1}, rej: rejCircuitOpen},
		{name: "half-open with probe in flight rejected", node: tnode{health: &record.Health{State: record.StateDegraded, Circuit: record.CircuitHalfOpen}},
			probing: true, want: scores{0.5, 1, 1, 0.5, 0.5, 1}, rej: rejProbeBusy},
		{name: "half-open without probe admitted", node: tnode{health: &record.Health{State: record.StateDegraded, Circuit: record.CircuitHalfOpen}},
			want: scores{0.5, 1, 1, 0.5, 0.5, 1}, total: (1 + 1 + 1 + 0.5 + 0.5 + 1) / 6.0},
		{name: "draining rejected", node: tnode{health: &record.Health{State: record.StateHealthy, Draining: true}},
			want: scores{1, 1, 1, 0.5, 0.5, 1}, rej: rejDraining},
		{name: "clearance below request", node: tnode{clearance: wire.PrivacyInternal, health: healthy(0)},
			spec: func(s *wire.Spec) { s.Privacy = wire.PrivacyConfidential }, want: scores{1, 1, 1, 0.5, 0.5, 1}, rej: rejClearance},
		{name: "region caps clearance", node: tnode{region: "us", clearance: wire.PrivacyRestricted, health: healthy(0)},
			regions: record.Regions{"us": {Privacy: ptr(wire.PrivacyInternal)}},
			spec:    func(s *wire.Spec) { s.Privacy = wire.PrivacyConfidential }, want: scores{1, 1, 1, 0.5, 0.5, 1}, rej: rejClearance},
		{name: "region outside Fed-Regions", node: tnode{region: "us", clearance: wire.PrivacyRestricted, health: healthy(0)},
			spec: func(s *wire.Spec) { s.Regions = []string{"eu"} }, want: scores{1, 1, 1, 0.5, 0.5, 1}, rej: rejRegion},
		{name: "region default cost applies to cost-less node", node: tnode{region: "us", health: healthy(0)},
			regions: record.Regions{"us": {Cost: ptr(0.9)}}, want: scores{1, 1, 1, 0.5, 0.1, 1}, total: (2 + 1 + 1 + 0.5 + 0.1 + 1) / 6.0},
		{name: "p50 stands in for p99 under 20 samples", node: tnode{health: &record.Health{State: record.StateHealthy,
			LatencyP50Ms: 100, LatencyP99Ms: 900, Samples: 5}},
			spec: func(s *wire.Spec) { s.MaxLatencyMs = 500 }, want: scores{1, 0.98, 1, 0.5, 0.5, 1}, total: (2 + 0.98 + 1 + 0.5 + 0.5 + 1) / 6.0},
		{name: "p99 over max latency", node: tnode{health: &record.Health{State: record.StateHealthy,
			LatencyP50Ms: 100, LatencyP99Ms: 900, Samples: 50}},
			spec: func(s *wire.Spec) { s.MaxLatencyMs = 500 }, want: scores{1, 0.98, 1, 0.5, 0.5, 1}, rej: rejLatency},
		{name: "throughput under minimum", node: tnode{health: &record.Health{State: record.StateHealthy, ThroughputTPS: 40}},
			spec: func(s *wire.Spec) { s.MinThroughput = 50 }, want: scores{1, 1, 1, 0.5, 0.5, 1}, rej: rejThroughput},
		{name: "high cost tolerance scores throughput, GPU bonus", node: tnode{gpu: true, health: &record.Health{State: record.StateHealthy, ThroughputTPS: 500}},
			spec: func(s *wire.Spec) { s.CostTolerance = 80 }, want: scores{1, 1, 1, 0.5, 0.7, 1}, total: (2 + 1 + 1 + 0.5 + 0.7 + 1) / 6.0},
		{name: "GPU bonus off when not preferred", node: tnode{gpu: true, cost: 0.5, health: healthy(0)},
			spec: func(s *wire.Spec) { s.PreferGPU = false }, want: scores{1, 1, 1, 0.5, 0.5, 1}, total: (2 + 1 + 1 + 0.5 + 0.5 + 1) / 6.0},
		{name: "load from heartbeat in-flight", node: tnode{maxConc: 8, health: &record.Health{State: record.StateHealthy, InFlight: 4}},
			want: scores{1, 1, 1, 0.5, 0.5, 0.5}, total: (2 + 1 + 1 + 0.5 + 0.5 + 0.5) / 6.0},
		{name: "load takes own outstanding when larger", node: tnode{maxConc: 8, health: &record.Health{State: record.StateHealthy, InFlight: 2}},
			out: 6, want: scores{1, 1, 1, 0.5, 0.5, 0.25}, total: (2 + 1 + 1 + 0.5 + 0.5 + 0.25) / 6.0},
		{name: "at capacity rejected by load", node: tnode{maxConc: 8, health: &record.Health{State: record.StateHealthy, InFlight: 8}},
			want: scores{1, 1, 1, 0.5, 0.5, 0}, rej: rejLoad},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.node.id = "n1"
			if tc.node.region == "" {
				tc.node.region = "r"
			}
			c := buildCache(t, tc.node)
			if tc.regions != nil {
				c.setRegions(tc.regions)
			}
			e := c.lookup("n1")
			e.outstanding.Store(int32(tc.out))
			e.probing.Store(tc.probing)
			q := newQuery(specWith(tc.spec), "")
			c.mu.RLock()
			q.callerID = c.callerRegionLocked(q.callerRegion)
			c.mu.RUnlock()
			w := weightsOf(record.DefaultPolicy().Weights)
			var got [numPolicies]float64
			total, rej := score(e, &q, &w, &got)
			for i := range got {
				assert.InDelta(t, tc.want[i], got[i], 1e-9, "policy %s", policyNames[i])
			}
			assert.Equal(t, tc.rej, rej, "rejection")
			if tc.rej == rejNone {
				assert.InDelta(t, tc.total, total, 1e-9, "total")
			}
			ft, frej := scoreFast(e, &q, &w)
			assert.Equal(t, rej, frej, "scoreFast rejection")
			if rej == rejNone {
				assert.InDelta(t, total, ft, 1e-9, "scoreFast total")
			}
		})
	}
}

// TestScoreFastMatchesScore checks the hot path against the explained path
// on random nodes and requests.
func TestScoreFastMatchesScore(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	states := []string{record.StateHealthy, record.StateDegraded, record.StateUnknown, record.StateUnhealthy, ""}
	circuits := []string{record.CircuitClosed, record.CircuitOpen, record.CircuitHalfOpen, ""}
	regions := []string{"a", "b", "c"}
	for i := 0; i < 5000; i++ {
		n := tnode{id: "n", region: regions[rng.IntN(3)], clearance: wire.Privacy(rng.IntN(4)), gpu: rng.IntN(2) == 0,
			cost: rng.Float64(), maxConc: rng.IntN(5),
			health: &record.Health{State: states[rng.IntN(len(states))], Circuit: circuits[rng.IntN(len(circuits))],
				LatencyP50Ms: rng.Float64() * 6000, LatencyP99Ms: rng.Float64() * 9000, Samples: rng.IntN(40),
				ThroughputTPS: rng.Float64() * 1500, InFlight: rng.IntN(5), Draining: rng.IntN(10) == 0}}
		c := buildCache(t, n)
		e := c.lookup("n")
		e.outstanding.Store(int32(rng.IntN(5)))
		e.probing.Store(rng.IntN(2) == 0)
		s := specWith(func(s *wire.Spec) {
			s.Privacy = wire.Privacy(rng.IntN(4))
			if rng.IntN(3) == 0 {
				s.Regions = []string{regions[rng.IntN(3)]}
			}
			s.Region = []string{"", "a", "zz"}[rng.IntN(3)]
			s.MaxLatencyMs = float64(rng.IntN(3)) * 2000
			s.MinThroughput = float64(rng.IntN(3)) * 400
			s.CostTolerance = rng.IntN(101)
			s.PreferGPU = rng.IntN(2) == 0
		})
		q := newQuery(s, "")
		q.callerID = c.callerRegionLocked(q.callerRegion)
		w := weightsOf(record.Weights{Health: rng.Float64() * 3, Latency: rng.Float64(), Privacy: rng.Float64(),
			Locality: rng.Float64(), Cost: rng.Float64(), Load: rng.Float64()})
		var sc [numPolicies]float64
		total, rej := score(e, &q, &w, &sc)
		ft, frej := scoreFast(e, &q, &w)
		require.Equal(t, rej, frej, "case %d", i)
		if rej == rejNone {
			require.InDelta(t, total, ft, 1e-9, "case %d", i)
		}
		for _, v := range sc {
			require.True(t, v >= 0 && v <= 1 && !math.IsNaN(v), "score out of [0,1]: %v", sc)
		}
	}
}
