package router

import (
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// NewDecisionBench builds a synthetic in-memory catalog of n nodes (mixed
// regions, GPU/CPU, clearances, health) and returns a closure that runs one
// full route decision against it with the default policy: candidates,
// scores, eligibility, top max_candidates and the strategy. The fedmesh CLI
// runs it under testing.Benchmark; the package's own BenchmarkDecide* do too.
func NewDecisionBench(n int) func() {
	c := newSyntheticCache(n)
	pol := newPolicyState(record.DefaultPolicy())
	spec := wire.NewSpec()
	spec.Region = "r1"
	r := newPlacementQuery(wire.CapGenerate, &spec, "")
	var rr uint64
	return func() {
		rr++
		if d := c.decide(&r, pol, rr); d.e == nil {
			panic(fmt.Sprintf("decision bench: no node chosen (code %d)", d.code))
		}
	}
}

// newSyntheticCache fills a cache with n generated nodes.
func newSyntheticCache(n int) *cache {
	c := newCache()
	states := []string{record.StateHealthy, record.StateHealthy, record.StateHealthy, record.StateDegraded, record.StateUnknown}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("node-%05d", i)
		c.putNode(&record.Node{NodeID: id, Region: fmt.Sprintf("r%d", i%8), GPU: i%2 == 0,
			Cost: float64(i%10) / 10, Clearance: wire.Privacy(i % 4), MaxConcurrency: 16,
			Models:       []record.Model{{ModelID: fmt.Sprintf("model-%d", i%50), Capabilities: []string{wire.CapGenerate, wire.CapCode}}},
			RegisteredAt: time.Unix(0, 0)})
		c.putHealth(id, &record.Health{NodeID: id, State: states[i%len(states)], LatencyP50Ms: float64(20 + i%400),
			LatencyP99Ms: float64(60 + i%900), Samples: 100, ThroughputTPS: float64(50 + i%700), InFlight: i % 12,
			Circuit: record.CircuitClosed})
	}
	c.rlockIndexed()
	c.mu.RUnlock()
	return c
}

// NewDecisionBenchPrefix is NewDecisionBench with the prefix index of
// expected_ttft in play: each run hashes a 6 KiB prompt that shares a
// 4 KiB system prompt with what the index holds (2,000 earlier requests
// over the nodes), matches it and decides.
func NewDecisionBenchPrefix(n int) func() {
	c := newSyntheticCache(n)
	pol := newPolicyState(record.DefaultPolicy())
	idx := newPrefixIndex(0)
	sys := make([]byte, 4096)
	for i := range sys {
		sys[i] = byte('a' + i%26)
	}
	ids := make([]*entry, 0, n)
	for _, e := range c.entries {
		ids = append(ids, e)
	}
	for i := 0; i < 2000; i++ {
		prompt := append(append([]byte(nil), sys...), fmt.Sprintf("question %d %s", i, sys[:2048])...)
		idx.add(ids[i%len(ids)], blockHashes(nil, prompt))
	}
	prompt := append(append([]byte(nil), sys...), fmt.Sprintf("a new question %s", sys[:2048])...)
	spec := wire.NewSpec()
	spec.Region = "r1"
	r := newPlacementQuery(wire.CapGenerate, &spec, "")
	blocks := make([]uint64, 0, maxPrefixBlocks)
	var rr uint64
	return func() {
		rr++
		r.blocks = blockHashes(blocks[:0], prompt)
		r.matches = idx.match(r.blocks, r.matchBuf[:0])
		if d := c.decide(&r, pol, rr); d.e == nil {
			panic(fmt.Sprintf("decision bench: no node chosen (code %d)", d.code))
		}
	}
}
