package router

import (
	"sync"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// scored is one eligible candidate during a decision.
type scored struct {
	e     *entry
	total float64
}

// scratch is a decision's working memory, pooled so that a decision makes no
// per-candidate allocation.
type scratch struct {
	top []scored // the best max_candidates eligible, total descending
}

var scratchPool = sync.Pool{New: func() any { return &scratch{top: make([]scored, 0, 16)} }}

// decision is the outcome of one route decision. On failure code is the wire
// error code and the counters say why, for the message.
type decision struct {
	e        *entry
	model    string
	total    float64
	halfOpen bool // the chosen node's circuit is half-open: claim its probe slot
	// resumable: the chosen node's catalog record says resumable (a stream
	// it accepts may be taken over by another resumable node if it is lost)
	resumable bool
	// instance: the chosen node's agent instance as the catalog named it,
	// carried on this attempt's dispatch_failed so health does not blame a
	// restarted agent for its predecessor (DESIGN §9.2)
	instance string
	// decidedBy: the policy term that separated the node from the
	// runner-up (decisions.go), for the decision event
	decidedBy string
	// predicted: expected_ttft's judgement of the chosen node
	predicted prediction

	code     int // 0: a node was chosen
	serving  int // nodes serving the capability/model
	privOK   int // of those, nodes the privacy policy allows
	rejected [numRejects]int
}

// placementQuery is what a decision asks of the cache for one request: the
// capability and model to serve, the spec flattened for scoring, the
// rendezvous key, the nodes already tried and the nodes that answered busy.
type placementQuery struct {
	capability string
	model      string
	q          query
	key        uint64 // rendezvous key hash; hasKey false when none
	hasKey     bool
	tried      []*entry // failed or draining: not eligible again for this request
	busy       []*entry // answered busy: full (rejLoad) until the request is woken from the queue
	// resumableOnly: a stream taken over from a lost node, which only a
	// resumable node may continue
	resumableOnly bool
	// continuesOnly: a continuation (Fed-Continue-Seq), which only a node
	// that can continue an answer from its text may take
	continuesOnly bool
	// blocks are the request's prefix block hashes (prefix.go), matches
	// the nodes that were sent a leading run of them (expected_ttft).
	blocks   []uint64
	matches  []prefixMatch
	matchBuf [8]prefixMatch
}

// prefixShare is the share of the request's blocks e was sent, weighed
// by how recently (prefix.go rankCredit).
func (r *placementQuery) prefixShare(e *entry) float64 {
	for i := range r.matches {
		if r.matches[i].e == e {
			return r.matches[i].share(len(r.blocks))
		}
	}
	return 0
}

// decide runs one route decision against the cache: candidates, scores,
// eligibility, top max_candidates, strategy. It reads no KV and allocates
// nothing per candidate.
func (c *cache) decide(r *placementQuery, p *policyState, rr uint64) decision {
	sc := scratchPool.Get().(*scratch)
	sc.top = sc.top[:0]
	k := p.MaxCandidates
	var d decision

	c.rlockIndexed()
	cands := c.candidatesLocked(r.capability, r.model)
	r.q.callerID = c.callerRegionLocked(r.q.callerRegion)
	d.serving = len(cands)
	var hashBest *entry
	var hashBestH uint64
	var hashBestTotal float64
	// expected_ttft: the lowest expected TTFT over every eligible node (not
	// only the top by composite total), and the runner-up for decided_by
	ttft := p.strategy == stratExpectedTTFT
	fleet := c.fleetTTFT()
	var best, second prediction
	var bestE *entry
	var bestTotal float64
	for _, e := range cands {
		total, rej := scoreFast(e, &r.q, &p.w)
		if rej != rejClearance && rej != rejRegion {
			d.privOK++
		}
		if rej == rejNone && total < p.MinScore {
			rej = rejMinScore
		}
		if rej == rejNone && r.resumableOnly && !e.resumable {
			rej = rejNotResumable
		}
		if rej == rejNone && r.continuesOnly && !e.continues {
			rej = rejCannotContinue
		}
		if rej == rejNone && len(r.tried)+len(r.busy) > 0 {
			switch {
			case wasTried(r.tried, e):
				rej = rejTried
			case wasTried(r.busy, e):
				rej = rejLoad
			}
		}
		if rej != rejNone {
			d.rejected[rej]++
			continue
		}
		if r.hasKey && p.strategy == stratConsistentHash {
			// rendezvous over every eligible node, not just the top ones, so a
			// session moves only when its own node leaves
			if h := mix64(r.key ^ e.idHash); hashBest == nil || h > hashBestH {
				hashBest, hashBestH, hashBestTotal = e, h, total
			}
		}
		sc.top = insertTop(sc.top, k, scored{e, total})
		if ttft {
			pr := predict(e, r, fleet, r.prefixShare(e))
			switch {
			case bestE == nil || pr.beats(&best):
				if bestE != nil {
					second = best
				}
				best, bestE, bestTotal = pr, e, total
			case second.ms == 0 || pr.beats(&second):
				second = pr
			}
		}
	}
	switch {
	case len(sc.top) == 0:
		d.code = c.failureCodeLocked(r, &d)
	case ttft:
		d.e, d.total, d.predicted = bestE, bestTotal, best
		d.decidedBy = ""
		if second.ms > 0 {
			d.decidedBy = decidedByPrediction(&best, &second)
		}
	case hashBest != nil:
		d.e, d.total = hashBest, hashBestTotal
		d.decidedBy = decidedBy(d.e, d.total, sc.top, &r.q, &p.w, true)
	default:
		ch := pick(p.strategy, sc.top, rr)
		d.e, d.total = ch.e, ch.total
		d.decidedBy = decidedBy(d.e, d.total, sc.top, &r.q, &p.w, false)
	}
	if d.e != nil {
		d.model = d.e.modelFor(r.capability, r.model)
		d.halfOpen = d.e.circuit == circuitHalfOpen
		d.resumable = d.e.resumable
		if d.e.node != nil {
			d.instance = d.e.node.InstanceID
		}
	}
	c.mu.RUnlock()
	scratchPool.Put(sc)
	return d
}

// failureCodeLocked classifies a decision that found no eligible node
// (error codes in the project README).
func (c *cache) failureCodeLocked(r *placementQuery, d *decision) int {
	switch {
	case d.serving == 0 && r.model != "" && !c.models[r.model]:
		return wire.CodeNotFound // no node has that model
	case d.serving == 0 && r.model != "" && len(c.byCap[r.capability]) > 0:
		return wire.CodeNotFound // the model exists, but not for this capability
	case d.serving == 0:
		return wire.CodeNoCapacity // nothing registered serves it (yet)
	case d.privOK == 0:
		return wire.CodePrivacy
	}
	return wire.CodeNoCapacity
}

func wasTried(tried []*entry, e *entry) bool {
	for _, t := range tried {
		if t == e {
			return true
		}
	}
	return false
}

// insertTop keeps top sorted by total, descending, at most k long. An equal
// total does not displace an earlier one, so ties go to the older node.
func insertTop(top []scored, k int, s scored) []scored {
	n := len(top)
	if n == k {
		if s.total <= top[n-1].total {
			return top
		}
		n--
	} else {
		top = append(top, scored{})
	}
	i := n
	for i > 0 && top[i-1].total < s.total {
		top[i] = top[i-1]
		i--
	}
	top[i] = s
	return top
}

// mix64 is splitmix64's finaliser: it spreads the rendezvous hash bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hashKey is FNV-1a of s, without the allocation of hash/fnv.
func hashKey(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// rendezvousKey is the consistent-hash key of a request: Fed-Session, else
// the tenant.
func rendezvousKey(s *wire.Spec) (uint64, bool) {
	switch {
	case s.Session != "":
		return hashKey(s.Session), true
	case s.Tenant != "":
		return hashKey(s.Tenant), true
	}
	return 0, false
}

// newPlacementQuery builds a decision's query from a parsed spec, which it
// keeps pointing to: s must not change while the query is in use.
func newPlacementQuery(capability string, s *wire.Spec, routerRegion string) placementQuery {
	r := placementQuery{capability: capability, model: s.Model, q: newQuery(s, routerRegion)}
	r.key, r.hasKey = rendezvousKey(s)
	r.continuesOnly = s.ContinueSeq > 0
	return r
}

// policyState is a validated policy ready for decisions.
type policyState struct {
	record.Policy
	w        weightVec
	strategy strategy
}

func newPolicyState(p record.Policy) *policyState {
	return &policyState{Policy: p, w: weightsOf(p.Weights), strategy: strategyOf(p.Strategy)}
}
