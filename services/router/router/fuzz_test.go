package router

import (
	"testing"

	"github.com/fedmesh/fedmesh/shared/record"
)

// fed_config values are typed in by operators: the decoders must never
// panic, and whatever they accept must be safe to route with.

func FuzzDecodePolicy(f *testing.F) {
	f.Add([]byte(`{"strategy":"round_robin","weights":{"latency":2}}`))
	f.Add([]byte(`{"min_score":1e308}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodePolicy(record.DefaultPolicy(), data)
		if err != nil {
			return
		}
		if verr := p.Validate(); verr != nil {
			t.Fatalf("accepted an invalid policy %+v: %v", p, verr)
		}
		ps := newPolicyState(p)
		c := newSyntheticCache(20)
		r := newPlacementQuery("generate", specWith(nil), "")
		c.decide(&r, ps, 1)
	})
}

func FuzzDecodeRegions(f *testing.F) {
	f.Add([]byte(`{"eu-west-1":{"privacy":"confidential","cost":0.8}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRegions(data)
		if err != nil {
			return
		}
		for id, reg := range r {
			if reg.Cost != nil && (*reg.Cost < 0 || *reg.Cost > 1) {
				t.Fatalf("accepted cost %v for %s", *reg.Cost, id)
			}
		}
		c := newSyntheticCache(5)
		c.setRegions(r)
	})
}

func FuzzDecodeTenants(f *testing.F) {
	f.Add([]byte(`{"acme":{"requests_per_second":5,"burst":10}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tn, err := decodeTenants(data)
		if err != nil {
			return
		}
		l := newTenantLimits()
		l.configure(tn)
		for name := range tn {
			l.allow(name)
		}
	})
}
