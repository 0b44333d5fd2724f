package router

import (
	"fmt"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Policy indices; policyNames spells them as the candidates endpoint and
// DESIGN §6 do.
const (
	polHealth = iota
	polLatency
	polPrivacy
	polLocality
	polCost
	polLoad
	numPolicies
)

var policyNames = [numPolicies]string{"health", "latency", "privacy", "locality", "cost", "load"}

// Scoring constants of DESIGN §6.
const (
	latencyCeilingMs = 5000.0 // latency score reaches 0 at 5 s
	p99MinSamples    = 20     // below this, p50 stands in for p99
	localitySame     = 0.8
	localityOther    = 0.4
	localityUnknown  = 0.5
	gpuBonus         = 0.2 // what Fed-Prefer-Gpu adds to a GPU node's cost score
	throughputFull   = 1000.0
	defaultCost      = 0.5
)

func healthScoreOf(state string) float64 {
	switch state {
	case record.StateHealthy:
		return 1
	case record.StateDegraded:
		return 0.5
	case record.StateUnknown, "":
		return 0.3
	}
	return 0 // unhealthy, or a state this router does not know
}

// reject says why a candidate is not eligible; rejNone when it is.
type reject uint8

const (
	rejNone reject = iota
	rejClearance
	rejRegion
	rejCircuitOpen
	rejProbeBusy
	rejUnhealthy
	rejDraining
	rejLatency
	rejThroughput
	rejLoad
	rejMinScore
	rejTried
	// rejNotResumable: a stream taken over from a lost node goes only to a
	// resumable node (takeover.go)
	rejNotResumable
	// rejCannotContinue: a continuation (Fed-Continue-Seq) goes only to a
	// node that can continue an answer from its text
	rejCannotContinue
	numRejects
)

// policy reports which policy a rejection belongs to.
func (r reject) policy() string {
	switch r {
	case rejClearance, rejRegion:
		return policyNames[polPrivacy]
	case rejCircuitOpen, rejProbeBusy, rejUnhealthy, rejDraining:
		return policyNames[polHealth]
	case rejLatency, rejThroughput:
		return policyNames[polLatency]
	case rejLoad:
		return policyNames[polLoad]
	case rejMinScore:
		return "min_score"
	case rejTried:
		return "retry"
	case rejNotResumable, rejCannotContinue:
		return "takeover"
	}
	return ""
}

// query is a request's spec flattened for scoring. Fed-Regions is judged
// through spec.RegionAllowed, the one definition of what it allows.
type query struct {
	spec          *wire.Spec
	privacy       wire.Privacy
	maxLatencyMs  float64
	minThroughput float64
	preferGPU     bool
	highTolerance bool // cost tolerance > 50: the cost policy scores throughput
	callerRegion  string
	callerID      int32 // set under the cache lock: see cache.callerRegionLocked
}

func newQuery(s *wire.Spec, routerRegion string) query {
	q := query{spec: s, privacy: s.Privacy, maxLatencyMs: s.MaxLatencyMs,
		minThroughput: s.MinThroughput, preferGPU: s.PreferGPU, highTolerance: s.CostTolerance > 50,
		callerRegion: s.Region}
	if q.callerRegion == "" {
		q.callerRegion = routerRegion
	}
	return q
}

// weightVec is a policy's weights in policy-index order, divided by the
// number of policies so the weighted sum is already the mean.
type weightVec [numPolicies]float64

func weightsOf(w record.Weights) weightVec {
	v := weightVec{w.Health, w.Latency, w.Privacy, w.Locality, w.Cost, w.Load}
	for i := range v {
		v[i] /= numPolicies
	}
	return v
}

// scoreFast is the hot path's judgement of one node: the composite total, or
// the first reason it is not eligible (then the total is not computed). It
// allocates nothing. score below is the same judgement with every policy's
// score spelled out; TestScoreFastMatchesScore keeps the two in step.
func scoreFast(e *entry, q *query, w *weightVec) (float64, reject) {
	if !e.clearance.Allows(q.privacy) {
		return 0, rejClearance
	}
	if !q.spec.RegionAllowed(e.region) {
		return 0, rejRegion
	}
	if e.gate != rejNone {
		return 0, e.gate
	}
	if e.halfOpen && e.probing.Load() {
		return 0, rejProbeBusy
	}
	if q.maxLatencyMs > 0 && e.observedLat > q.maxLatencyMs {
		return 0, rejLatency
	}
	if q.minThroughput > 0 && e.tps < q.minThroughput {
		return 0, rejThroughput
	}
	load := 1.0
	if e.conc > 0 {
		inf := e.inFlight()
		if inf >= e.conc {
			return 0, rejLoad
		}
		load = 1 - float64(inf)*e.invConc
	}
	return w[polHealth]*e.healthScore + w[polLatency]*e.latScore + w[polPrivacy] +
		w[polLocality]*locality(e, q) + w[polCost]*costScore(e, q) + w[polLoad]*load, rejNone
}

func locality(e *entry, q *query) float64 {
	switch {
	case q.callerID == -1:
		return localityUnknown
	case e.regionID == q.callerID:
		return localitySame
	}
	return localityOther
}

func costScore(e *entry, q *query) float64 {
	c := e.costLow
	if q.highTolerance {
		c = e.throughputScore
	}
	if q.preferGPU && e.gpu {
		c += gpuBonus
		if c > 1 {
			c = 1
		}
	}
	return c
}

// score judges one node for one request: every policy's score in [0,1] into
// s, the composite total (mean of the weighted scores) and the first reason
// it is not eligible. min_score is applied by the caller.
func score(e *entry, q *query, w *weightVec, s *[numPolicies]float64) (total float64, rej reject) {
	s[polHealth] = e.healthScore
	s[polLatency] = e.latScore
	s[polPrivacy] = 1
	s[polLocality] = locality(e, q)
	s[polCost] = costScore(e, q)
	s[polLoad] = 1
	if e.conc > 0 {
		s[polLoad] = clamp01(1 - float64(e.inFlight())*e.invConc)
	}
	switch {
	case !e.clearance.Allows(q.privacy):
		rej = rejClearance
	case !q.spec.RegionAllowed(e.region):
		rej = rejRegion
	case e.gate != rejNone:
		rej = e.gate
	case e.halfOpen && e.probing.Load():
		rej = rejProbeBusy
	case q.maxLatencyMs > 0 && e.observedLat > q.maxLatencyMs:
		rej = rejLatency
	case q.minThroughput > 0 && e.tps < q.minThroughput:
		rej = rejThroughput
	case e.conc > 0 && e.inFlight() >= e.conc:
		rej = rejLoad
	}
	for i := range s {
		total += w[i] * s[i]
	}
	return total, rej
}

func clamp01(v float64) float64 {
	if v < 0 {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

// reason spells out a rejection for the candidates endpoint and 503 messages.
// It allocates, so only explanations and error paths call it.
func reason(e *entry, q *query, rej reject, total, minScore float64) string {
	switch rej {
	case rejClearance:
		return fmt.Sprintf("clearance %s is below request level %s", e.clearance, q.privacy)
	case rejRegion:
		return fmt.Sprintf("region %s is not in Fed-Regions %v", e.region, q.spec.Regions)
	case rejCircuitOpen:
		return "circuit open"
	case rejProbeBusy:
		return "circuit half-open and its one probe request is in flight"
	case rejUnhealthy:
		return "state " + e.state
	case rejDraining:
		return "draining"
	case rejLatency:
		return fmt.Sprintf("latency p99 %.0f ms (p50 %.0f ms, %d samples) over Fed-Max-Latency-Ms %.0f", e.p99, e.p50, e.samples, q.maxLatencyMs)
	case rejThroughput:
		return fmt.Sprintf("throughput %.1f tokens/s under Fed-Min-Throughput %.1f", e.tps, q.minThroughput)
	case rejLoad:
		return fmt.Sprintf("at capacity: %d in flight of %d", e.inFlight(), e.concurrency())
	case rejMinScore:
		return fmt.Sprintf("total %.3f below min_score %.3f", total, minScore)
	case rejTried:
		return "already tried for this request"
	case rejNotResumable:
		return "not resumable: cannot take over a stream"
	case rejCannotContinue:
		return "cannot continue an answer from its text (Fed-Continue-Seq)"
	}
	return ""
}
