package router

import (
	"testing"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// tnode describes a test node: its catalog record and its health.
type tnode struct {
	id        string
	region    string
	clearance wire.Privacy
	gpu       bool
	cost      float64
	maxConc   int
	models    []record.Model
	health    *record.Health // nil: no health record (unknown)
	resumable bool
	continues bool
	instance  string // agent instance id
}

func (n tnode) record() *record.Node {
	models := n.models
	if models == nil {
		models = []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}}
	}
	cl := n.clearance
	if cl == wire.PrivacyPublic { // tests mean "the default" by the zero value
		cl = wire.DefaultPrivacy
	}
	return &record.Node{NodeID: n.id, Region: n.region, Clearance: cl, GPU: n.gpu, Cost: n.cost,
		MaxConcurrency: n.maxConc, Models: models, Resumable: n.resumable, Continues: n.continues, InstanceID: n.instance}
}

func healthy(p50 float64) *record.Health {
	return &record.Health{State: record.StateHealthy, LatencyP50Ms: p50, LatencyP99Ms: p50 * 2, Samples: 100,
		Circuit: record.CircuitClosed}
}

func buildCache(t testing.TB, nodes ...tnode) *cache {
	t.Helper()
	c := newCache()
	for _, n := range nodes {
		c.putNode(n.record())
		if n.health != nil {
			h := *n.health
			h.NodeID = n.id
			c.putHealth(n.id, &h)
		}
	}
	return c
}

func specWith(f func(*wire.Spec)) *wire.Spec {
	s := wire.NewSpec()
	if f != nil {
		f(&s)
	}
	return &s
}

func defaultPolicy() *policyState { return newPolicyState(record.DefaultPolicy()) }

func policyWith(f func(*record.Policy)) *policyState {
	p := record.DefaultPolicy()
	f(&p)
	return newPolicyState(p)
}

// decideFor runs one decision for capability generate.
func decideFor(c *cache, s *wire.Spec, p *policyState, rr uint64) decision {
	r := newPlacementQuery(wire.CapGenerate, s, "")
	return c.decide(&r, p, rr)
}
