package router

import (
	"math"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/record"
)

// The expected_ttft strategy (DESIGN §6.7), the default: among eligible
// nodes, the one where the request is expected to get its first token
// soonest, from what each node's health record, acks and the model server
// itself say, with expected prefix-cache reuse, then weighed by cost per
// Fed-Cost-Tolerance. Every factor is a plain field read: the decision
// stays allocation-free.

const (
	// prefixSaving is the share of the base TTFT a fully cached prompt
	// saves (prefill skipped; queueing and the first decode step remain):
	// 0.9 rather than 0.7, as a 4 000-token prompt's prefill is nearly all
	// of its TTFT, and a cached prompt then keeps to its node against
	// small load differences (make bench-routing shared_prefix at 90 %,
	// TTFT p90 0.69 and 1.01 s against 1.24 and 1.33 s at 0.7, two runs
	// each side by side)
	prefixSaving = 0.9
	// newNodeOptimism: a node without TTFT data is expected to be this
	// much faster than the fleet's median, so a new node gets traffic (and
	// data) as soon as it is healthy.
	newNodeOptimism = 0.8
	// defaultTTFTMs is the prior when no node has data yet.
	defaultTTFTMs = 200
	// maxCostPenalty is the cost factor's slope at Fed-Cost-Tolerance 0
	// (cheapest): a node of cost 1 counts (1 + 3)× as slow.
	maxCostPenalty = 3
	// otherRegionFactor: another region than the caller's counts 15 %
	// slower (the network in between).
	otherRegionFactor = 1.15
	// degradedFactor: a node degraded by failures counts 50 % slower. One
	// degraded only by slow successes (DESIGN §6.4) is not: its slowness
	// is in its TTFT already, and under load the state flips from one
	// heartbeat to the next, which moved whole streams of requests
	// (decided_by health for 1 in 5 decisions in make bench-routing's
	// no_sharing; TTFT p90 +39 % against power_of_two at 60 %).
	degradedFactor = 1.5
	// loadWeight scales in-flight per slot: a slot of a model server is
	// not a free lane (queued prefills add up long before the slots run
	// out); 8 measured best in make bench-routing (no_sharing p90 within
	// 3 % of power_of_two at 60 % load and 22–44 % under it at 30 and 90 %,
	// shared-prefix and multi-turn better still), against 1 (up to 2× worse).
	loadWeight = 8
)

// ttftStat is a node's TTFT p50 for one capability and model (fed_health models).
type ttftStat struct {
	capability, model string
	ms                float64
}

// serverLoad is the model server's own load as the router last learned it
// (health record or ack): written without the cache lock.
type serverLoad struct {
	running, waiting atomic.Int32
	kvMilli          atomic.Int32 // KV usage × 1000
	known            atomic.Bool
}

func (l *serverLoad) set(s *record.ServerLoad) {
	if s == nil {
		l.known.Store(false)
		return
	}
	l.running.Store(int32(min(s.Running, record.MaxServerRequests)))
	l.waiting.Store(int32(min(s.Waiting, record.MaxServerRequests)))
	l.kvMilli.Store(int32(math.Round(s.KVUsage * 1000)))
	l.known.Store(true)
}

// learnServerLoad reads an ack's Fed-Server-Load.
func (e *entry) learnServerLoad(h nats.Header) {
	v := h.Get(record.HdrServerLoad)
	if v == "" {
		return
	}
	if l, err := record.ParseServerLoad(v); err == nil {
		e.server.set(&l)
	}
}

// setTTFT keeps the per-model TTFT p50s of a health record (cache lock held).
func (e *entry) setTTFT(h *record.Health) {
	e.ttft = e.ttft[:0]
	for k, m := range h.Models {
		if m.TTFTP50Ms <= 0 && m.Streams == 0 {
			continue
		}
		for i := 0; i < len(k); i++ {
			if k[i] == '/' {
				e.ttft = append(e.ttft, ttftStat{capability: k[:i], model: k[i+1:], ms: math.Max(m.TTFTP50Ms, minBaseMs)})
				break
			}
		}
	}
	if h.Server != nil {
		// a record without one (a health write that raced an ack) keeps
		// what the latest ack said; the load is dropped with the record
		e.server.set(h.Server)
	}
}

// baseTTFT is the node's TTFT for the request's capability and model: its
// own p50 for them, else its latency p50 (older health, whole answers),
// else 0 (no data).
func (e *entry) baseTTFT(capability, model string) float64 {
	for i := range e.ttft {
		t := &e.ttft[i]
		if t.capability == capability && (model == "" || t.model == model) {
			return t.ms
		}
	}
	if e.samples > 0 {
		return math.Max(e.p50, minBaseMs)
	}
	return 0
}

// minBaseMs is the base of a node with samples whose p50 reads 0: health
// rounds to 0.1 ms, so it answers in under 0.05 ms (a backend answering at
// once), which is data, not its absence (that would give it the new-node
// prior, hundreds of times slower than it is).
const minBaseMs = 0.05

// anyTTFT is the node's TTFT for the fleet median: its first per-model
// p50, else its latency p50, else 0.
func (e *entry) anyTTFT() float64 {
	if len(e.ttft) > 0 {
		return e.ttft[0].ms
	}
	if e.samples > 0 {
		return math.Max(e.p50, minBaseMs)
	}
	return 0
}

// prediction is expected_ttft's judgement of one candidate: the expected
// TTFT in milliseconds and the factors behind it (for decided_by and the
// candidates endpoint).
type prediction struct {
	ms                                         float64
	base, load, prefix, cost, locality, health float64
	match                                      float64 // share of the request's blocks the node was sent
}

// predict judges e for the request; fleet is the fleet's median TTFT (0
// when unknown); match the share of the request's prefix blocks e was
// sent, its recency weighed in (prefix.go).
func predict(e *entry, r *placementQuery, fleet, match float64) prediction {
	p := prediction{match: match, load: 1, prefix: 1, cost: 1, locality: 1, health: 1}
	p.base = e.baseTTFT(r.capability, r.model)
	if p.base <= 0 {
		p.base = cmpPositive(fleet, defaultTTFTMs) * newNodeOptimism
	}
	// Queueing: what runs and waits on the node per slot, as the router
	// (in flight) and the server (waiting, KV pressure) see it.
	conc := float64(max(e.conc, 1))
	q := loadWeight * float64(e.inFlight()) / conc
	if e.server.known.Load() {
		q += 2 * float64(e.server.waiting.Load()) / conc
		if kv := float64(e.server.kvMilli.Load()) / 1000; kv > 0.9 {
			q += 10 * (kv - 0.9) // a full KV cache makes new requests wait
		}
	}
	p.load = 1 + q
	p.prefix = 1 - prefixSaving*match
	cost := e.cost
	if r.q.preferGPU && e.gpu {
		cost = math.Max(0, cost-gpuBonus)
	}
	tol := float64(r.q.spec.CostTolerance) / 100
	p.cost = 1 + maxCostPenalty*(1-tol)*(1-tol)*cost
	if r.q.callerID >= 0 && e.regionID != r.q.callerID {
		p.locality = otherRegionFactor
	}
	if e.state == record.StateDegraded && e.failing {
		p.health = degradedFactor
	}
	p.ms = p.base * p.load * p.prefix * p.cost * p.locality * p.health
	return p
}

// tieBand: predictions this close (relative) are a tie, which the node
// holding more of the prompt wins: it keeps one server's cache warm
// instead of two half-warm ones, and a prediction is not that precise.
const tieBand = 0.02

// beats says whether p is the better choice than q.
func (p *prediction) beats(q *prediction) bool {
	if p.match != q.match && math.Abs(p.ms-q.ms) <= tieBand*q.ms {
		return p.match > q.match
	}
	return p.ms < q.ms
}

func cmpPositive(v, def float64) float64 {
	if v > 0 {
		return v
	}
	return def
}

// decidedByPrediction names the factor that put a ahead of b (the runner-up).
func decidedByPrediction(a, b *prediction) string {
	best, lead := "", 0.0
	for _, f := range [...]struct {
		name string
		a, b float64
	}{
		{"ttft", a.base, b.base}, {"load", a.load, b.load}, {"prefix", a.prefix, b.prefix},
		{"cost", a.cost, b.cost}, {"locality", a.locality, b.locality}, {"health", a.health, b.health},
	} {
		if f.a > 0 && f.b > 0 {
			if d := math.Log(f.b / f.a); d > lead {
				best, lead = f.name, d
			}
		}
	}
	if best == "" {
		return "strategy"
	}
	return best
}
