package router

import (
	"cmp"
	"hash/fnv"
	"sync/atomic"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// circuit states as small ints so the hot path compares no strings.
const (
	circuitClosed uint8 = iota
	circuitHalfOpen
	circuitOpen
)

// entry is everything the router knows about one node, flattened and
// pre-scored so a route decision reads plain fields and never looks anything
// up. Fields other than the atomics change only under cache.mu held for
// writing; the hot ones come first.
type entry struct {
	// eligibility and scores precomputed from health, catalog and regions
	clearance       wire.Privacy // node clearance capped by its region's
	gate            reject       // rejCircuitOpen/rejUnhealthy/rejDraining, or rejNone
	halfOpen        bool
	gpu             bool
	regionID        int32
	healthScore     float64
	latScore        float64
	observedLat     float64 // p99, or p50 while under p99MinSamples
	tps             float64
	costLow         float64 // 1 − cost
	throughputScore float64 // min(tps/1000, 1): the cost score under high cost tolerance
	conc            int     // max concurrency; 0 = unbounded
	resumable       bool    // catalog record: may take over (and be taken over) mid-stream
	continues       bool    // catalog record: can continue an answer from its text (Fed-Continue-Seq)
	invConc         float64

	// load is the node's in-flight count as last reported: by its health
	// record (heartbeats), by a dispatch ack's Fed-In-Flight (a busy ack
	// marks the node full), minus one per completed outcome since. Acks and
	// outcomes write it without the cache lock.
	load atomic.Int32
	// this router's own accepted, not yet completed dispatches
	outstanding atomic.Int32
	// probing: a half-open circuit admits one probe request at a time
	probing atomic.Bool
	// losing: this router is saving the requests the node held (takeover.go);
	// a second loss signal meanwhile starts nothing
	losing atomic.Bool

	id     string
	idHash uint64 // FNV-1a of id, mixed with the request key for rendezvous hashing
	ord    int    // stable ordinal for round robin
	region string

	node *record.Node // nil: health known but not (or no longer) in the catalog

	// raw values, for explanations
	cost      float64
	maxConc   int
	hasHealth bool
	state     string
	p50, p99  float64
	samples   int
	hMaxConc  int
	ackConc   int // Fed-Max-Concurrency of the latest ack that had one
	circuit   uint8
	draining  bool
	// lastHeartbeat as health last wrote it: the sweep finds a node that
	// went silent while already unhealthy (health does not write again then)
	lastHeartbeat time.Time
	// expected_ttft inputs (predict.go): TTFT p50 per capability and model,
	// the model server's own load
	ttft   []ttftStat
	server serverLoad
	// failing: health's failure streak is not 0 (a degraded node that
	// failed, not one that was only slow)
	failing bool

	// subjects are the node's dispatch subjects by privacy level, built
	// at its first dispatch (dispatchSubject)
	subjects atomic.Pointer[[wire.PrivacyRestricted + 1]string]
}

func newEntry(id string, ord int) *entry {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return &entry{id: id, idHash: h.Sum64(), ord: ord}
}

// inFlight is the node's load as this router sees it. The reported count
// (heartbeat or ack) already includes this router's accepted dispatches, so
// the larger of the two is used rather than their sum (which would count them
// twice and reject nodes that still have room).
func (e *entry) inFlight() int {
	o, l := int(e.outstanding.Load()), int(e.load.Load())
	if l > o {
		return l
	}
	return o
}

// learnLoad records the in-flight count a dispatch ack reported.
func (e *entry) learnLoad(inFlight int) {
	e.load.Store(int32(min(inFlight, maxLoad)))
}

// completed lowers the reported load by the slot a completed request freed.
func (e *entry) completed() {
	for {
		l := e.load.Load()
		if l <= 0 || e.load.CompareAndSwap(l, l-1) {
			return
		}
	}
}

// free is how many more requests the node takes as this router sees it;
// maxLoad when its concurrency is unbounded.
func (e *entry) free() int {
	if e.conc <= 0 {
		return maxLoad
	}
	return max(e.conc-e.inFlight(), 0)
}

// maxLoad bounds a reported in-flight count so it fits the atomic.
const maxLoad = 1 << 30

func (e *entry) concurrency() int { return e.conc }

// refresh recomputes the precomputed fields from the raw ones.
func (e *entry) refresh() {
	e.gate = rejNone
	switch {
	case e.circuit == circuitOpen:
		e.gate = rejCircuitOpen
	case e.healthScore <= 0:
		e.gate = rejUnhealthy
	case e.draining:
		e.gate = rejDraining
	}
	e.halfOpen = e.circuit == circuitHalfOpen
	e.latScore = clamp01(1 - e.p50/latencyCeilingMs)
	e.observedLat = e.p99
	if e.samples < p99MinSamples {
		e.observedLat = e.p50
	}
	e.costLow = clamp01(1 - e.cost)
	e.throughputScore = clamp01(e.tps / throughputFull)
	e.conc = cmp.Or(e.ackConc, e.maxConc, e.hMaxConc)
	e.invConc = 0
	if e.conc > 0 {
		e.invConc = 1 / float64(e.conc)
	}
}

func (e *entry) setHealth(h *record.Health) {
	if h == nil {
		e.hasHealth = false
		e.state, e.healthScore = record.StateUnknown, healthScoreOf(record.StateUnknown)
		e.failing = false
		e.p50, e.p99, e.samples, e.tps, e.hMaxConc = 0, 0, 0, 0, 0
		e.load.Store(0)
		e.circuit, e.draining = circuitClosed, false
		e.lastHeartbeat = time.Time{}
		e.ttft = e.ttft[:0]
		e.server.set(nil)
		e.refresh()
		return
	}
	e.setTTFT(h)
	e.lastHeartbeat = h.LastHeartbeat
	e.hasHealth = true
	e.state = h.State
	e.failing = h.ConsecutiveFailures > 0
	if e.state == "" {
		e.state = record.StateUnknown
	}
	e.healthScore = healthScoreOf(e.state)
	e.p50, e.p99, e.samples = h.LatencyP50Ms, h.LatencyP99Ms, h.Samples
	e.tps, e.hMaxConc = h.ThroughputTPS, h.MaxConcurrency
	e.load.Store(int32(min(max(h.InFlight, 0), maxLoad)))
	switch h.Circuit {
	case record.CircuitOpen:
		e.circuit = circuitOpen
	case record.CircuitHalfOpen:
		e.circuit = circuitHalfOpen
	default:
		e.circuit = circuitClosed
	}
	e.draining = h.Draining
	e.refresh()
}

// derive recomputes the fields that depend on the catalog record and the
// regions config.
func (e *entry) derive(regions record.Regions, regionID int32) {
	n := e.node
	if n == nil {
		return
	}
	e.regionID = regionID
	e.region, e.gpu, e.maxConc = n.Region, n.GPU, n.MaxConcurrency
	e.clearance = n.Clearance
	e.resumable = n.Resumable
	e.continues = n.Continues
	e.cost = n.Cost
	if r, ok := regions[n.Region]; ok {
		if r.Privacy != nil && *r.Privacy < e.clearance {
			e.clearance = *r.Privacy
		}
		if e.cost == 0 && r.Cost != nil {
			e.cost = *r.Cost
		}
	}
	if e.cost == 0 && (regions == nil || regions[n.Region].Cost == nil) {
		e.cost = defaultCost
	}
	e.refresh()
}

// modelFor returns the first model of the node serving capability (and
// model when given), "" when none.
func (e *entry) modelFor(capability, model string) string {
	if e.node == nil {
		return ""
	}
	for i := range e.node.Models {
		m := &e.node.Models[i]
		if (model == "" || m.ModelID == model) && m.Serves(capability) {
			return m.ModelID
		}
	}
	return ""
}

// dispatchSubject is the node's dispatch subject for requests of privacy
// level (fed.node.<id>.infer.<level>), derived from the node id alone and
// built once per node instead of once per dispatch.
func (e *entry) dispatchSubject(sp subject.Space, level wire.Privacy) string {
	if level > wire.PrivacyRestricted {
		return sp.NodeInferAt(e.id, level.String())
	}
	subs := e.subjects.Load()
	if subs == nil {
		subs = new([wire.PrivacyRestricted + 1]string)
		for i := range subs {
			subs[i] = sp.NodeInferAt(e.id, wire.Privacy(i).String())
		}
		e.subjects.Store(subs)
	}
	return subs[level]
}
