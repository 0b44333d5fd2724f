package router

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// TestPrivacyProperty: over 10,000 random catalogs and requests, a decision
// never picks a node below the request's privacy level (after the region
// cap) or outside Fed-Regions, and answers 403 exactly when no serving node
// qualifies.
func TestPrivacyProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	regionNames := []string{"eu", "us", "ap", "sa"}
	states := []string{record.StateHealthy, record.StateDegraded, record.StateUnknown, record.StateUnhealthy}
	circuits := []string{record.CircuitClosed, record.CircuitClosed, record.CircuitHalfOpen, record.CircuitOpen}
	strategies := record.Strategies
	for iter := 0; iter < 10000; iter++ {
		c := newCache()
		regions := record.Regions{}
		for _, r := range regionNames {
			if rng.IntN(3) == 0 {
				p := wire.Privacy(rng.IntN(4))
				regions[r] = record.Region{Privacy: &p}
			}
		}
		c.setRegions(regions)
		n := rng.IntN(8)
		nodes := make([]*record.Node, n)
		for i := range nodes {
			nodes[i] = &record.Node{NodeID: fmt.Sprintf("n%d", i), Region: regionNames[rng.IntN(len(regionNames))],
				Clearance: wire.Privacy(rng.IntN(4)), GPU: rng.IntN(2) == 0, Cost: rng.Float64(), MaxConcurrency: rng.IntN(4),
				Models: []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}}}
			c.putNode(nodes[i])
			if rng.IntN(5) > 0 {
				c.putHealth(nodes[i].NodeID, &record.Health{State: states[rng.IntN(len(states))],
					Circuit: circuits[rng.IntN(len(circuits))], LatencyP50Ms: rng.Float64() * 3000,
					InFlight: rng.IntN(3), Samples: rng.IntN(50)})
			}
		}
		spec := specWith(func(s *wire.Spec) {
			s.Privacy = wire.Privacy(rng.IntN(4))
			if rng.IntN(2) == 0 {
				for _, r := range regionNames {
					if rng.IntN(2) == 0 {
						s.Regions = append(s.Regions, r)
					}
				}
				if s.Regions == nil {
					s.Regions = []string{"nowhere"}
				}
			}
			s.Session = fmt.Sprintf("s%d", rng.IntN(5))
			s.CostTolerance = rng.IntN(101)
		})
		qualifies := func(nd *record.Node) bool {
			cl := nd.Clearance
			if r, ok := regions[nd.Region]; ok && r.Privacy != nil && *r.Privacy < cl {
				cl = *r.Privacy
			}
			return cl >= spec.Privacy && spec.RegionAllowed(nd.Region)
		}
		anyQualifies := false
		for _, nd := range nodes {
			anyQualifies = anyQualifies || qualifies(nd)
		}
		pol := policyWith(func(p *record.Policy) { p.Strategy = strategies[rng.IntN(len(strategies))] })
		d := decideFor(c, spec, pol, uint64(iter))
		if d.e != nil {
			require.True(t, qualifies(d.e.node), "iter %d: chose %s (clearance %s, region %s) for privacy %s regions %v",
				iter, d.e.id, d.e.node.Clearance, d.e.node.Region, spec.Privacy, spec.Regions)
			continue
		}
		switch {
		case n == 0:
			require.Equal(t, wire.CodeNoCapacity, d.code, "iter %d: empty catalog", iter)
		case !anyQualifies:
			require.Equal(t, wire.CodePrivacy, d.code, "iter %d: no node qualifies", iter)
		default:
			require.Equal(t, wire.CodeNoCapacity, d.code, "iter %d: some node qualifies but none is eligible", iter)
		}
	}
}
