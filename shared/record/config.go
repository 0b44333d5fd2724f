package record

import (
	"fmt"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// Keys of the fed_config bucket.
const (
	ConfigKeyPolicy  = "router.policy"
	ConfigKeyRegions = "regions"
	ConfigKeyTenants = "tenants"
)

// Load-balance strategies (DESIGN §6).
const (
	StrategyLeastLatency     = "least_latency"
	StrategyRoundRobin       = "round_robin"
	StrategyLeastConnections = "least_connections"
	StrategyWeightedRandom   = "weighted_random"
	StrategyConsistentHash   = "consistent_hash"
	StrategyPowerOfTwo       = "power_of_two"
	// StrategyExpectedTTFT (the default): the eligible node with the lowest
	// expected time to first token, prefix-cache reuse and cost included.
	StrategyExpectedTTFT = "expected_ttft"
	// StrategyRandom: uniformly random among the top candidates.
	StrategyRandom = "random"
)

// Strategies lists every load-balance strategy.
var Strategies = []string{StrategyExpectedTTFT, StrategyLeastLatency, StrategyRoundRobin, StrategyLeastConnections,
	StrategyWeightedRandom, StrategyConsistentHash, StrategyPowerOfTwo, StrategyRandom}

// Weights are the policy weights.
type Weights struct {
	Health   float64 `json:"health"`
	Latency  float64 `json:"latency"`
	Privacy  float64 `json:"privacy"`
	Locality float64 `json:"locality"`
	Cost     float64 `json:"cost"`
	Load     float64 `json:"load"`
}

// Policy is fed_config key router.policy. Zero fields take the defaults.
type Policy struct {
	Weights       Weights `json:"weights"`
	Strategy      string  `json:"strategy"`
	MinScore      float64 `json:"min_score"`
	MaxCandidates int     `json:"max_candidates"`
	MaxRetries    int     `json:"max_retries"`
	RetryDelayMs  int     `json:"retry_delay_ms"`
	AckTimeoutMs  int     `json:"ack_timeout_ms"`
	// MaxQueueMs is how long a request waits in a router's queue while every
	// eligible node is full, before 429; 0 answers 429 at once.
	MaxQueueMs int `json:"max_queue_ms"`
}

// DefaultPolicy is DESIGN §6's policy.
func DefaultPolicy() Policy {
	return Policy{
		Weights:       Weights{Health: 2, Latency: 1, Privacy: 1, Locality: 1, Cost: 1, Load: 1},
		Strategy:      StrategyExpectedTTFT,
		MinScore:      0.1,
		MaxCandidates: 10,
		MaxRetries:    3,
		RetryDelayMs:  100,
		AckTimeoutMs:  2000,
		MaxQueueMs:    2000,
	}
}

// Validate reports the first field of p that is out of range.
func (p *Policy) Validate() error {
	w := p.Weights
	for name, v := range map[string]float64{"health": w.Health, "latency": w.Latency, "privacy": w.Privacy,
		"locality": w.Locality, "cost": w.Cost, "load": w.Load} {
		if v < 0 || v > 100 {
			return fmt.Errorf("weights.%s = %v: want 0 to 100", name, v)
		}
	}
	ok := false
	for _, s := range Strategies {
		ok = ok || s == p.Strategy
	}
	if !ok {
		return fmt.Errorf("strategy %q: want one of %v", p.Strategy, Strategies)
	}
	switch {
	case p.MinScore < 0 || p.MinScore > 10:
		return fmt.Errorf("min_score = %v: want 0 to 10", p.MinScore)
	case p.MaxCandidates < 1 || p.MaxCandidates > 10000:
		return fmt.Errorf("max_candidates = %d: want 1 to 10000", p.MaxCandidates)
	case p.MaxRetries < 0 || p.MaxRetries > 20:
		return fmt.Errorf("max_retries = %d: want 0 to 20", p.MaxRetries)
	case p.RetryDelayMs < 0 || p.RetryDelayMs > 60000:
		return fmt.Errorf("retry_delay_ms = %d: want 0 to 60000", p.RetryDelayMs)
	case p.AckTimeoutMs < 1 || p.AckTimeoutMs > 60000:
		return fmt.Errorf("ack_timeout_ms = %d: want 1 to 60000", p.AckTimeoutMs)
	case p.MaxQueueMs < 0 || p.MaxQueueMs > 3600000:
		return fmt.Errorf("max_queue_ms = %d: want 0 to 3600000", p.MaxQueueMs)
	}
	return nil
}

// Region is one entry of fed_config key regions.
type Region struct {
	Privacy *wire.Privacy `json:"privacy,omitempty"` // highest level any node there may clear
	Cost    *float64      `json:"cost,omitempty"`    // default cost of its nodes, [0,1]
}

// Regions is fed_config key regions: region id → settings.
type Regions map[string]Region

// Tenant is one entry of fed_config key tenants.
type Tenant struct {
	RequestsPerSecond float64 `json:"requests_per_second"` // 0: unlimited
	Burst             int     `json:"burst,omitempty"`     // default: ceil(rate)
}

// Tenants is fed_config key tenants: tenant → limits.
type Tenants map[string]Tenant
