package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// equalNodes are n identical healthy nodes.
func equalNodes(n int) []tnode {
	out := make([]tnode, n)
	for i := range out {
		out[i] = tnode{id: fmt.Sprintf("n%02d", i), region: "r", cost: 0.5, health: healthy(50)}
	}
	return out
}

func strat(name string) *policyState {
	return policyWith(func(p *record.Policy) { p.Strategy = name })
}

func TestLeastLatencyPicksHighestTotal(t *testing.T) {
	c := buildCache(t,
		tnode{id: "slow", region: "r", health: healthy(120)},
		tnode{id: "fast", region: "r", health: healthy(50)},
		tnode{id: "sick", region: "r", health: &record.Health{State: record.StateDegraded}})
	for i := uint64(0); i < 20; i++ {
		d := decideFor(c, specWith(nil), strat(record.StrategyLeastLatency), i)
		require.NotNil(t, d.e)
		assert.Equal(t, "fast", d.e.id)
	}
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	c := buildCache(t, equalNodes(3)...)
	// load differences must not skew the rotation
	c.lookup("n01").outstanding.Store(5)
	counts := map[string]int{}
	for i := uint64(0); i < 300; i++ {
		d := decideFor(c, specWith(nil), strat(record.StrategyRoundRobin), i)
		require.NotNil(t, d.e)
		counts[d.e.id]++
	}
	assert.Equal(t, map[string]int{"n00": 100, "n01": 100, "n02": 100}, counts)
}

func TestRoundRobinStaysWithinMaxCandidates(t *testing.T) {
	nodes := equalNodes(5)
	nodes[3].health = healthy(10) // the two best
	nodes[4].health = healthy(5)
	c := buildCache(t, nodes...)
	p := policyWith(func(p *record.Policy) { p.Strategy = record.StrategyRoundRobin; p.MaxCandidates = 2 })
	counts := map[string]int{}
	for i := uint64(0); i < 100; i++ {
		counts[decideFor(c, specWith(nil), p, i).e.id]++
	}
	assert.Equal(t, map[string]int{"n03": 50, "n04": 50}, counts)
}

func TestLeastConnectionsFollowsInFlight(t *testing.T) {
	c := buildCache(t, equalNodes(3)...)
	c.lookup("n00").outstanding.Store(5)
	c.lookup("n01").outstanding.Store(1)
	c.lookup("n02").outstanding.Store(3)
	p := strat(record.StrategyLeastConnections)
	assert.Equal(t, "n01", decideFor(c, specWith(nil), p, 0).e.id)
	// placing requests one by one (each counted as outstanding) levels the nodes
	for i := 0; i < 21; i++ {
		d := decideFor(c, specWith(nil), p, 0)
		d.e.outstanding.Add(1)
	}
	for _, id := range []string{"n00", "n01", "n02"} {
		assert.Equal(t, int32(10), c.lookup(id).outstanding.Load(), id)
	}
}

func TestWeightedRandomFollowsScores(t *testing.T) {
	c := buildCache(t,
		tnode{id: "good", region: "r", cost: 0, health: healthy(0)},
		tnode{id: "poor", region: "r", cost: 1, health: &record.Health{State: record.StateUnknown, LatencyP50Ms: 4000}})
	p := strat(record.StrategyWeightedRandom)
	q := newQuery(specWith(nil), "")
	q.callerID = -1
	good, _ := scoreFast(c.lookup("good"), &q, &p.w)
	poor, _ := scoreFast(c.lookup("poor"), &q, &p.w)
	const n = 20000
	hits := 0
	for i := 0; i < n; i++ {
		if decideFor(c, specWith(nil), p, 0).e.id == "good" {
			hits++
		}
	}
	assert.InDelta(t, good/(good+poor), float64(hits)/n, 0.02, "share of the better node")
}

func TestPowerOfTwoNeverPicksTheWorst(t *testing.T) {
	nodes := equalNodes(6)
	for i := range nodes {
		nodes[i].health = healthy(float64(100 * (i + 1))) // n00 best … n05 worst
	}
	c := buildCache(t, nodes...)
	p := strat(record.StrategyPowerOfTwo)
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		counts[decideFor(c, specWith(nil), p, 0).e.id]++
	}
	assert.Zero(t, counts["n05"], "the worst node loses every pair")
	assert.Greater(t, counts["n00"], counts["n04"])
	assert.Greater(t, counts["n04"], 0, "not a plain best-total pick")
}

func TestConsistentHashKeepsSessionsAndMovesAFraction(t *testing.T) {
	const nodes, sessions = 10, 2000
	c := buildCache(t, equalNodes(nodes)...)
	p := strat(record.StrategyConsistentHash)
	place := func() map[string]string {
		m := map[string]string{}
		for i := 0; i < sessions; i++ {
			sess := fmt.Sprintf("session-%d", i)
			d := decideFor(c, specWith(func(s *wire.Spec) { s.Session = sess }), p, uint64(i))
			require.NotNil(t, d.e)
			m[sess] = d.e.id
		}
		return m
	}
	before := place()
	again := place()
	assert.Equal(t, before, again, "a session stays on its node")
	perNode := map[string]int{}
	for _, n := range before {
		perNode[n]++
	}
	for id, n := range perNode {
		assert.InDelta(t, sessions/nodes, n, sessions/nodes*0.35, "node %s share", id)
	}
	// load changes do not move sessions
	c.lookup("n03").outstanding.Store(7)
	assert.Equal(t, before, place())
	c.lookup("n03").outstanding.Store(0)

	c.deleteNode("n04")
	after := place()
	moved := 0
	for s, n := range before {
		if after[s] != n {
			moved++
			assert.Equal(t, "n04", n, "only sessions of the node that left move")
		}
	}
	assert.InDelta(t, 1.0/nodes, float64(moved)/sessions, 0.04)

	// the tenant is the key when there is no session
	d1 := decideFor(c, specWith(func(s *wire.Spec) { s.Tenant = "acme" }), p, 1)
	d2 := decideFor(c, specWith(func(s *wire.Spec) { s.Tenant = "acme" }), p, 2)
	assert.Equal(t, d1.e.id, d2.e.id)
}

func TestDecideFailureCodes(t *testing.T) {
	internal := tnode{id: "a", region: "us", clearance: wire.PrivacyInternal, health: healthy(10)}
	cases := []struct {
		name  string
		nodes []tnode
		spec  func(*wire.Spec)
		code  int
	}{
		{"no node at all", nil, nil, wire.CodeNoCapacity},
		{"unknown model", []tnode{internal}, func(s *wire.Spec) { s.Model = "nope" }, wire.CodeNotFound},
		{"model of another capability", []tnode{internal, {id: "e", region: "us", health: healthy(1),
			models: []record.Model{{ModelID: "emb", Capabilities: []string{wire.CapEmbed}}}}},
			func(s *wire.Spec) { s.Model = "emb" }, wire.CodeNotFound},
		{"privacy", []tnode{internal}, func(s *wire.Spec) { s.Privacy = wire.PrivacyConfidential }, wire.CodePrivacy},
		{"residency", []tnode{internal}, func(s *wire.Spec) { s.Regions = []string{"eu"} }, wire.CodePrivacy},
		{"all unhealthy", []tnode{{id: "a", region: "us", health: &record.Health{State: record.StateUnhealthy}}}, nil, wire.CodeNoCapacity},
		{"cleared node unhealthy is 503 not 403", []tnode{internal,
			{id: "b", clearance: wire.PrivacyConfidential, health: &record.Health{State: record.StateHealthy, Circuit: record.CircuitOpen}}},
			func(s *wire.Spec) { s.Privacy = wire.PrivacyConfidential }, wire.CodeNoCapacity},
		{"found", []tnode{internal}, func(s *wire.Spec) { s.Model = "m1" }, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := buildCache(t, tc.nodes...)
			d := decideFor(c, specWith(tc.spec), defaultPolicy(), 0)
			assert.Equal(t, tc.code, d.code)
			assert.Equal(t, tc.code == 0, d.e != nil)
		})
	}
}

func TestDecideSkipsTriedAndMinScore(t *testing.T) {
	c := buildCache(t, equalNodes(2)...)
	r := newPlacementQuery(wire.CapGenerate, specWith(nil), "")
	r.tried = []*entry{c.lookup("n00")}
	d := c.decide(&r, defaultPolicy(), 0)
	require.NotNil(t, d.e)
	assert.Equal(t, "n01", d.e.id)
	r.tried = append(r.tried, c.lookup("n01"))
	d = c.decide(&r, defaultPolicy(), 0)
	assert.Nil(t, d.e)
	assert.Equal(t, 2, d.rejected[rejTried])

	high := policyWith(func(p *record.Policy) { p.MinScore = 5 })
	d = decideFor(c, specWith(nil), high, 0)
	assert.Nil(t, d.e)
	assert.Equal(t, wire.CodeNoCapacity, d.code)
	assert.Equal(t, 2, d.rejected[rejMinScore])
}

func TestDecideAllocations(t *testing.T) {
	run := NewDecisionBench(1000)
	run()
	allocs := testing.AllocsPerRun(200, run)
	assert.LessOrEqual(t, allocs, 2.0)
}

func TestHalfOpenAdmitsOneProbe(t *testing.T) {
	c := buildCache(t, tnode{id: "h", region: "r",
		health: &record.Health{State: record.StateDegraded, Circuit: record.CircuitHalfOpen}})
	out := newOutstanding()
	d := decideFor(c, specWith(nil), defaultPolicy(), 0)
	require.NotNil(t, d.e)
	require.True(t, d.halfOpen)
	require.True(t, d.e.probing.CompareAndSwap(false, true), "first request claims the probe slot")
	out.add("req-1", d.e, time.Now().Add(time.Minute), true, nil)

	d2 := decideFor(c, specWith(nil), defaultPolicy(), 0)
	assert.Nil(t, d2.e, "no second request while the probe is in flight")
	assert.Equal(t, wire.CodeNoCapacity, d2.code)
	assert.Equal(t, 1, d2.rejected[rejProbeBusy])

	out.done("req-1", "other-node") // another node's outcome for the id changes nothing
	assert.Nil(t, decideFor(c, specWith(nil), defaultPolicy(), 0).e)
	out.done("req-1", "h")
	assert.NotNil(t, decideFor(c, specWith(nil), defaultPolicy(), 0).e, "the completed probe frees the slot")
	assert.Zero(t, d.e.outstanding.Load())

	// a lost completion is swept
	out.add("req-2", d.e, time.Now().Add(-time.Second), true, nil)
	d.e.probing.Store(true)
	assert.Equal(t, 1, out.sweep(time.Now()))
	assert.False(t, d.e.probing.Load())
	assert.Zero(t, d.e.outstanding.Load())
}
