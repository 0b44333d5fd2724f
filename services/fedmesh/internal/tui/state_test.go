package tui

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func decision(req, node string) record.Decision {
	return record.Decision{RequestID: req, Capability: wire.CapGenerate, Model: "m1", Tenant: "acme", Node: node,
		Score: 1.234, DecidedBy: "latency", Strategy: record.StrategyLeastLatency, Attempts: 1, Time: t0}
}

func completed(req, node string, ok bool) record.Outcome {
	o := record.Outcome{Kind: record.OutcomeCompleted, NodeID: node, RequestID: req, OK: ok, Model: "m1",
		LatencyMs: 120, TTFTMs: 20, Tokens: 11, Time: t0}
	if !ok {
		o.Code = 503
	}
	return o
}

// routeOf finds the row of request id req for node ("" for an unplaced row).
func routeOf(t *testing.T, d Data, req, node string) Route {
	t.Helper()
	for _, r := range d.Routes {
		if r.RequestID() != req {
			continue
		}
		if (r.Decision == nil && node == "") || (r.Decision != nil && r.Decision.Node == node) {
			return r
		}
	}
	t.Fatalf("no route for request %s on %q in %+v", req, node, d.Routes)
	return Route{}
}

func TestTUIStateJoinsDecisionsWithTheirEnd(t *testing.T) {
	tests := []struct {
		name  string
		apply func(s *state)
		check func(t *testing.T, d Data)
	}{
		{"outcome after decision", func(s *state) {
			s.applyDecisions(record.Decisions{Router: "r1", Decisions: []record.Decision{decision("q1", "n1")}}, t0)
			s.applyOutcome(completed("q1", "n1", true))
		}, func(t *testing.T, d Data) {
			r := routeOf(t, d, "q1", "n1")
			require.NotNil(t, r.Outcome)
			assert.True(t, r.Outcome.OK)
			assert.Equal(t, "r1", r.Router)
		}},
		{"outcome before its batched decision", func(s *state) {
			s.applyOutcome(completed("q1", "n1", false))
			s.applyDecisions(record.Decisions{Router: "r1", Decisions: []record.Decision{decision("q1", "n1")}}, t0)
		}, func(t *testing.T, d Data) {
			r := routeOf(t, d, "q1", "n1")
			require.NotNil(t, r.Outcome, "joined from the pending outcomes")
			assert.Equal(t, 503, r.Outcome.Code)
			out, _ := outcomeCell(&r)
			assert.Equal(t, "err 503", out)
		}},
		{"outcome of another node waits", func(s *state) {
			s.applyDecisions(record.Decisions{Decisions: []record.Decision{decision("q1", "n1")}}, t0)
			s.applyOutcome(completed("q1", "n2", true))
		}, func(t *testing.T, d Data) {
			assert.Nil(t, routeOf(t, d, "q1", "n1").Outcome)
		}},
		{"unplaced without decision is its own row", func(s *state) {
			s.applyUnplaced(record.Unplaced{RequestID: "q2", Capability: wire.CapGenerate, Code: 503, Attempts: 2, Time: t0}, t0)
		}, func(t *testing.T, d Data) {
			r := routeOf(t, d, "q2", "")
			out, class := outcomeCell(&r)
			assert.Equal(t, "unplaced 503", out)
			assert.Equal(t, "bad", class)
		}},
		{"unplaced then a late decision fills the same row", func(s *state) {
			s.applyUnplaced(record.Unplaced{RequestID: "q2", Code: 503, Time: t0}, t0)
			s.applyDecisions(record.Decisions{Decisions: []record.Decision{decision("q2", "n1")}}, t0)
		}, func(t *testing.T, d Data) {
			require.Len(t, d.Routes, 1)
			r := routeOf(t, d, "q2", "n1")
			require.NotNil(t, r.Unplaced)
		}},
		{"unplaced after a decision ends it", func(s *state) {
			s.applyDecisions(record.Decisions{Decisions: []record.Decision{decision("q3", "n1")}}, t0)
			s.applyUnplaced(record.Unplaced{RequestID: "q3", Code: 504, Time: t0}, t0)
		}, func(t *testing.T, d Data) {
			require.Len(t, d.Routes, 1)
			out, _ := outcomeCell(&d.Routes[0])
			assert.Equal(t, "unplaced 504", out)
		}},
		{"takeover: each node's outcome joins its own decision", func(s *state) {
			s.applyDecisions(record.Decisions{Decisions: []record.Decision{decision("q4", "n1")}}, t0)
			second := decision("q4", "n2")
			second.Takeover, second.Attempts = "n1", 2
			s.applyDecisions(record.Decisions{Decisions: []record.Decision{second}}, t0)
			lost := completed("q4", "n1", false)
			lost.Silent = true
			s.applyOutcome(lost)
			s.applyOutcome(completed("q4", "n2", true))
		}, func(t *testing.T, d Data) {
			require.Len(t, d.Routes, 2)
			first, second := routeOf(t, d, "q4", "n1"), routeOf(t, d, "q4", "n2")
			out, _ := outcomeCell(&first)
			assert.Equal(t, "lost 503", out)
			out, _ = outcomeCell(&second)
			assert.Equal(t, "ok 120ms", out)
			assert.Equal(t, "q4", d.Routes[0].RequestID(), "newest first")
			assert.Equal(t, "n2", d.Routes[0].Decision.Node)
		}},
		{"other outcome kinds end nothing", func(s *state) {
			s.applyDecisions(record.Decisions{Decisions: []record.Decision{decision("q5", "n1")}}, t0)
			o := completed("q5", "n1", false)
			o.Kind = record.OutcomeDispatchFailed
			s.applyOutcome(o)
		}, func(t *testing.T, d Data) {
			assert.Nil(t, routeOf(t, d, "q5", "n1").Outcome)
			assert.Empty(t, d.Models)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newState(t0)
			tt.apply(s)
			tt.check(t, s.snapshot(t0))
		})
	}
}

func TestTUIStateRoutesAreBounded(t *testing.T) {
	s := newState(t0)
	for i := range 3 * maxRoutes {
		s.applyDecisions(record.Decisions{Decisions: []record.Decision{decision(fmt.Sprint("q", i), "n1")}}, t0)
	}
	for i := range 2 * maxPending {
		s.applyOutcome(completed(fmt.Sprint("nobody", i), "n1", true))
	}
	d := s.snapshot(t0)
	assert.LessOrEqual(t, len(d.Routes), 2*maxRoutes)
	assert.Equal(t, fmt.Sprint("q", 3*maxRoutes-1), d.Routes[0].RequestID())
	assert.LessOrEqual(t, len(s.byReq), 2*maxRoutes, "dropped rows leave the index")
	assert.LessOrEqual(t, len(s.pending), maxPending)
	// A late outcome of a kept row still joins.
	s.applyOutcome(completed(fmt.Sprint("q", 3*maxRoutes-1), "n1", true))
	assert.NotNil(t, s.snapshot(t0).Routes[0].Outcome)
}

func TestTUIStateModelWindow(t *testing.T) {
	s := newState(t0)
	for i := 1; i <= 100; i++ {
		o := completed("", "n1", true)
		o.LatencyMs, o.TTFTMs, o.Tokens = float64(i*10), float64(i), 11
		s.applyOutcome(o)
	}
	s.applyOutcome(completed("", "n1", false))
	other := completed("", "n2", true)
	other.Model, other.TTFTMs, other.Tokens = "m2", 0, 1
	s.applyOutcome(other)
	d := s.snapshot(t0)
	require.Len(t, d.Models, 2)
	m := d.Models[0]
	assert.Equal(t, ModelData{Node: "n1", Model: "m1", Requests: 101, Failures: 1, Samples: 100,
		P50Ms: 500, P99Ms: 990, TTFTP50Ms: 50, TPOTP50Ms: 45}, m)
	assert.Equal(t, ModelData{Node: "n2", Model: "m2", Requests: 1, Samples: 1, P50Ms: 120, P99Ms: 120}, d.Models[1],
		"no TTFT reported: no TTFT nor TPOT, not a 0")
}

func TestTUIStateConfigAsRoutersReadIt(t *testing.T) {
	good := `{"strategy":"round_robin","weights":{"cost":3}}`
	tests := []struct {
		name     string
		key      string
		writes   []string // "" deletes
		present  bool
		valid    bool
		inForce  uint64
		rejected string // substring of the reason; "" for none
		check    func(t *testing.T, e ConfigEntry)
	}{
		{"valid policy", record.ConfigKeyPolicy, []string{good}, true, true, 1, "", func(t *testing.T, e ConfigEntry) {
			assert.Equal(t, record.StrategyRoundRobin, e.Policy.Strategy)
			assert.Equal(t, 3.0, e.Policy.Weights.Cost)
			assert.Equal(t, 2.0, e.Policy.Weights.Health, "absent fields keep the base")
		}},
		{"rejected policy keeps the last good one", record.ConfigKeyPolicy,
			[]string{good, `{"strategy":"fastest"}`}, true, false, 1, `strategy "fastest"`, func(t *testing.T, e ConfigEntry) {
				assert.Equal(t, record.StrategyRoundRobin, e.Policy.Strategy)
				assert.Equal(t, `{"strategy":"fastest"}`, e.Rejected.Value)
				assert.Equal(t, uint64(2), e.Rejected.Revision)
			}},
		{"unknown field is refused", record.ConfigKeyPolicy, []string{`{"stratgy":"round_robin"}`}, true, false, 0, "unknown field", func(t *testing.T, e ConfigEntry) {
			assert.Equal(t, record.DefaultPolicy(), e.Policy, "the base stays in force")
		}},
		{"a good value after a rejected one keeps the rejection on show", record.ConfigKeyPolicy,
			[]string{`{"min_score":11}`, good}, true, true, 2, "min_score", nil},
		{"deleted policy returns to the base", record.ConfigKeyPolicy, []string{good, ""}, false, true, 0, "", func(t *testing.T, e ConfigEntry) {
			assert.Equal(t, record.DefaultPolicy(), e.Policy)
		}},
		{"regions", record.ConfigKeyRegions, []string{`{"eu-west":{"privacy":"internal","cost":0.3}}`}, true, true, 1, "", func(t *testing.T, e ConfigEntry) {
			require.Contains(t, e.Regions, "eu-west")
			assert.Equal(t, wire.PrivacyInternal, *e.Regions["eu-west"].Privacy)
		}},
		{"region cost out of range", record.ConfigKeyRegions, []string{`{"eu-west":{"cost":2}}`}, true, false, 0, "regions.eu-west.cost", nil},
		{"region id with a dot", record.ConfigKeyRegions, []string{`{"eu.west":{}}`}, true, false, 0, "region", nil},
		{"tenants", record.ConfigKeyTenants, []string{`{"acme":{"requests_per_second":5}}`}, true, true, 1, "", func(t *testing.T, e ConfigEntry) {
			assert.Equal(t, 5.0, e.Tenants["acme"].RequestsPerSecond)
		}},
		{"negative tenant rate", record.ConfigKeyTenants, []string{`{"acme":{"requests_per_second":-1}}`}, true, false, 0, "tenants.acme.requests_per_second", nil},
		{"trailing data", record.ConfigKeyTenants, []string{`{} {}`}, true, false, 0, "trailing data", nil},
		{"a key routers do not read", "router.poilcy", []string{`{"x":1}`}, true, true, 0, "", func(t *testing.T, e ConfigEntry) {
			assert.False(t, e.Known)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newState(t0)
			for i, w := range tt.writes {
				s.applyConfig(tt.key, uint64(i+1), t0.Add(time.Duration(i)*time.Second), w == "", []byte(w))
			}
			d := s.snapshot(t0)
			e := d.config(tt.key)
			require.NotNil(t, e)
			assert.Equal(t, tt.present, e.Present)
			assert.Equal(t, tt.valid, e.Valid)
			assert.Equal(t, tt.inForce, e.InForceRev)
			if tt.rejected == "" {
				assert.Nil(t, e.Rejected)
			} else {
				require.NotNil(t, e.Rejected)
				assert.Contains(t, e.Rejected.Reason, tt.rejected)
			}
			if tt.check != nil {
				tt.check(t, *e)
			}
		})
	}
}

func TestTUIStateCatalogHealthAndClearanceCap(t *testing.T) {
	s := newState(t0)
	node := record.Node{NodeID: "n1", Region: "eu-west", Clearance: wire.PrivacyConfidential, MaxConcurrency: 4, Cost: 0.5,
		Models: []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}}}
	put := func(v any) []byte {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return b
	}
	s.applyCatalog("nodes.n1", false, put(node))
	s.applyCatalog("nodes.bad", false, []byte(`{"node_id":"other"}`))
	s.applyCatalog("other.key", false, []byte(`junk`))
	s.applyHealth("nodes.n2", false, put(record.Health{NodeID: "n2", State: record.StateUnhealthy}))
	s.applyHealth("stats.mesh", false, []byte(`{"mesh":{}}`))
	s.applyConfig(record.ConfigKeyRegions, 1, t0, false, []byte(`{"eu-west":{"privacy":"internal"}}`))
	d := s.snapshot(t0)
	require.Len(t, d.Nodes, 2)
	assert.Equal(t, "internal", d.Nodes[0].Clearance)
	assert.True(t, d.Nodes[0].Capped)
	assert.Nil(t, d.Nodes[0].Health)
	assert.Nil(t, d.Nodes[1].Catalog, "health-only node")
	require.Len(t, d.Ignored, 1)
	assert.Equal(t, srcCatalog, d.Ignored[0].Source)
	assert.Contains(t, d.Ignored[0].Last, "names node")

	s.applyCatalog("nodes.n1", true, nil)
	assert.Len(t, s.snapshot(t0).Nodes, 1)
}

func TestTUIStateStatsSeries(t *testing.T) {
	s := newState(t0)
	st := func(total, node int64, p99 float64) record.Stats {
		return record.Stats{State: record.MeshReady, Counters: record.Counters{TotalRequests: total, LatencyP99Ms: p99},
			Nodes: map[string]record.Counters{"n1": {TotalRequests: node}}, Tenants: map[string]record.Counters{"acme": {TotalRequests: total}}}
	}
	s.applyStats("h1", st(10, 5, 0), t0)
	s.applyStats("h1", st(30, 15, 200), t0.Add(2*time.Second))
	s.applyStats("h1", st(4, 1, 100), t0.Add(3*time.Second)) // health restarted
	d := s.snapshot(t0)
	o := d.Stats.Overall
	require.Len(t, o.Rate, 3)
	assert.True(t, math.IsNaN(o.Rate[0]), "first answer: no rate")
	assert.InDelta(t, 10.0, o.Rate[1], 1e-9)
	assert.True(t, math.IsNaN(o.Rate[2]), "counters went back: no rate")
	assert.True(t, math.IsNaN(o.P99[0]), "p99 0: no data")
	assert.Equal(t, 200.0, o.P99[1])
	assert.InDelta(t, 5.0, d.Stats.Nodes["n1"].Rate[1], 1e-9)
	assert.InDelta(t, 10.0, d.Stats.Tenants["acme"].Rate[1], 1e-9)
	_, ok := o.LastRate()
	assert.False(t, ok)

	for i := range 2 * seriesLen {
		s.applyStats("h1", st(int64(100+i), 1, 1), t0.Add(time.Duration(10+i)*time.Second))
	}
	assert.Len(t, s.snapshot(t0).Stats.Overall.Rate, seriesLen)
}

// Stats come from one health instance at a time; a quiet mesh's rate is
// zero, and then another instance may be followed.
func TestTUIStateStatsFollowOneInstance(t *testing.T) {
	s := newState(t0)
	st := func(total int64) record.Stats { return record.Stats{Counters: record.Counters{TotalRequests: total}} }
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	last := func() (float64, bool) { return s.snapshot(t0).Stats.Overall.LastRate() }
	cases := []struct {
		name  string
		apply func()
		total int64
		rate  float64 // NaN: unknown
	}{
		{"the fed.stats answer", func() { s.applyStats("", st(10), at(0)) }, 10, math.NaN()},
		{"any instance's event after it", func() { s.applyStats("h1", st(20), at(1000)) }, 20, 10},
		{"another instance while h1 is alive", func() { s.applyStats("h2", st(19), at(1500)) }, 20, 10},
		{"h1 again", func() { s.applyStats("h1", st(30), at(2000)) }, 30, 10},
		{"a tick before quiet", func() { s.statsQuietTick(at(3000)) }, 30, 10},
		{"a quiet tick", func() { s.statsQuietTick(at(4000)) }, 30, 0},
		{"h2 once h1 is quiet", func() { s.applyStats("h2", st(40), at(5000)) }, 40, 10},
		{"h1 now that h2 is followed", func() { s.applyStats("h1", st(99), at(5500)) }, 40, 10},
		{"counters reset", func() { s.applyStats("h2", st(3), at(6000)) }, 3, math.NaN()},
	}
	for _, tc := range cases {
		tc.apply()
		assert.Equal(t, tc.total, s.snapshot(t0).Stats.Stats.TotalRequests, tc.name)
		r, ok := last()
		if math.IsNaN(tc.rate) {
			assert.False(t, ok, "%s: rate %v", tc.name, r)
		} else if assert.True(t, ok, tc.name) {
			assert.InDelta(t, tc.rate, r, 1e-9, tc.name)
		}
	}
	assert.Len(t, s.snapshot(t0).Stats.Overall.Rate, 6, "a point per stats taken and per quiet tick")
}

// Outcomes that beat their batched decision are joined and forgotten: the
// waiting list does not grow with traffic.
func TestTUIStatePendingOutcomesStayBounded(t *testing.T) {
	s := newState(t0)
	for i := range 5 * maxPending {
		id := fmt.Sprint("q", i)
		s.applyOutcome(completed(id, "n1", true))
		s.applyDecisions(record.Decisions{Decisions: []record.Decision{decision(id, "n1")}}, t0)
	}
	assert.Empty(t, s.pending)
	assert.LessOrEqual(t, len(s.pendQ), 2*maxPending+1)
	for _, r := range s.snapshot(t0).Routes {
		require.NotNil(t, r.Outcome, "request %s", r.RequestID())
	}
}
