package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// fed_config values are written by operators with `nats kv put`: untrusted
// input. Each decoder returns a value that is safe to route with, or an error
// naming the field; the cache then keeps the last good value.

// decodePolicy reads router.policy on top of base: fields absent from the
// JSON keep base's value, so `{"strategy":"round_robin"}` changes only the
// strategy. An explicit 0 weight disables that policy; all six weights 0 (a
// marshalled zero Weights) means "defaults", as record.Policy documents.
func decodePolicy(base record.Policy, data []byte) (record.Policy, error) {
	p := base
	if err := strictJSON(data, &p); err != nil {
		return base, fmt.Errorf("router.policy: %w", err)
	}
	fillPolicyZeros(&p)
	if err := p.Validate(); err != nil {
		return base, fmt.Errorf("router.policy: %w", err)
	}
	for _, w := range []float64{p.Weights.Health, p.Weights.Latency, p.Weights.Privacy, p.Weights.Locality, p.Weights.Cost, p.Weights.Load} {
		if math.IsNaN(w) {
			return base, fmt.Errorf("router.policy: weights: NaN")
		}
	}
	if math.IsNaN(p.MinScore) {
		return base, fmt.Errorf("router.policy: min_score: NaN")
	}
	return p, nil
}

// fillPolicyZeros applies record.Policy's "zero fields take the defaults" to
// the fields where zero can never be meant (a zero min_score, max_retries or
// retry delay is a real setting and is kept).
func fillPolicyZeros(p *record.Policy) {
	d := record.DefaultPolicy()
	if p.Weights == (record.Weights{}) {
		p.Weights = d.Weights
	}
	if p.Strategy == "" {
		p.Strategy = d.Strategy
	}
	if p.MaxCandidates == 0 {
		p.MaxCandidates = d.MaxCandidates
	}
	if p.AckTimeoutMs == 0 {
		p.AckTimeoutMs = d.AckTimeoutMs
	}
}

// decodeRegions reads fed_config key regions.
func decodeRegions(data []byte) (record.Regions, error) {
	var r record.Regions
	if err := strictJSON(data, &r); err != nil {
		return nil, fmt.Errorf("regions: %w", err)
	}
	for id, reg := range r {
		if err := wire.ValidateID("region", id); err != nil {
			return nil, fmt.Errorf("regions: %w", err)
		}
		if reg.Privacy != nil && *reg.Privacy > wire.PrivacyRestricted {
			return nil, fmt.Errorf("regions.%s.privacy: invalid level %d", id, *reg.Privacy)
		}
		if reg.Cost != nil && !(*reg.Cost >= 0 && *reg.Cost <= 1) {
			return nil, fmt.Errorf("regions.%s.cost = %v: want 0 to 1", id, *reg.Cost)
		}
	}
	return r, nil
}

// decodeTenants reads fed_config key tenants.
func decodeTenants(data []byte) (record.Tenants, error) {
	var t record.Tenants
	if err := strictJSON(data, &t); err != nil {
		return nil, fmt.Errorf("tenants: %w", err)
	}
	for name, tn := range t {
		if name == "" {
			return nil, fmt.Errorf("tenants: empty tenant name")
		}
		if !(tn.RequestsPerSecond >= 0 && tn.RequestsPerSecond <= 1e9) {
			return nil, fmt.Errorf("tenants.%s.requests_per_second = %v: want 0 to 1e9", name, tn.RequestsPerSecond)
		}
		if tn.Burst < 0 || tn.Burst > 1e9 {
			return nil, fmt.Errorf("tenants.%s.burst = %d: want 0 to 1e9", name, tn.Burst)
		}
	}
	return t, nil
}

// strictJSON decodes one JSON value, refusing unknown fields (a typo such
// as "stratgy" must not silently keep the old strategy) and trailing data.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}
