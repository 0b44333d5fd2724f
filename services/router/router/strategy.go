package router

import (
	"math/rand/v2"

	"github.com/fedmesh/fedmesh/shared/record"
)

// strategy is a load-balance strategy (DESIGN §6) as a small int.
type strategy uint8

const (
	stratLeastLatency strategy = iota
	stratRoundRobin
	stratLeastConnections
	stratWeightedRandom
	stratConsistentHash
	stratPowerOfTwo
	stratExpectedTTFT
	stratRandom
)

func strategyOf(name string) strategy {
	switch name {
	case record.StrategyRoundRobin:
		return stratRoundRobin
	case record.StrategyLeastConnections:
		return stratLeastConnections
	case record.StrategyWeightedRandom:
		return stratWeightedRandom
	case record.StrategyConsistentHash:
		return stratConsistentHash
	case record.StrategyPowerOfTwo:
		return stratPowerOfTwo
	case record.StrategyLeastLatency:
		return stratLeastLatency
	case record.StrategyRandom:
		return stratRandom
	}
	return stratExpectedTTFT
}

// pick chooses one of top (non-empty, total descending). rr is this
// decision's round-robin ticket. consistent_hash with a key is decided during
// the scan (it needs every eligible node); here, without a key, it falls back
// to the best total.
func pick(s strategy, top []scored, rr uint64) scored {
	switch s {
	case stratRoundRobin:
		// rotate over the candidates in a stable (registration) order, so
		// score jitter between decisions does not skew the rotation
		sortTopByOrd(top)
		return top[rr%uint64(len(top))]
	case stratLeastConnections:
		best := 0
		bestIn := top[0].e.inFlight()
		for i := 1; i < len(top); i++ {
			if in := top[i].e.inFlight(); in < bestIn {
				best, bestIn = i, in
			}
		}
		return top[best]
	case stratWeightedRandom:
		var sum float64
		for _, c := range top {
			sum += c.total
		}
		x := rand.Float64() * sum
		for _, c := range top {
			if x < c.total {
				return c
			}
			x -= c.total
		}
		return top[len(top)-1]
	case stratRandom:
		return top[rand.IntN(len(top))]
	case stratPowerOfTwo:
		if len(top) == 1 {
			return top[0]
		}
		i := rand.IntN(len(top))
		j := rand.IntN(len(top) - 1)
		if j >= i {
			j++
		}
		if top[j].total > top[i].total {
			return top[j]
		}
		return top[i]
	}
	return top[0]
}

// sortTopByOrd is an insertion sort: top is short (max_candidates) and this
// must not allocate.
func sortTopByOrd(top []scored) {
	for i := 1; i < len(top); i++ {
		for j := i; j > 0 && top[j].e.ord < top[j-1].e.ord; j-- {
			top[j], top[j-1] = top[j-1], top[j]
		}
	}
}
