package router

import (
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/record"
)

// Decision events (DESIGN §9.5): every accepted dispatch is one
// record.Decision; they go out in batches on fed.router.decisions, so a
// placement costs an append, not a publish.
const (
	// decisionsBatch is the batch size that is sent at once.
	decisionsBatch = 128
	// decisionsEvery is how often a partial batch is sent.
	decisionsEvery = 250 * time.Millisecond
)

// decisions collects a router's placements between two sends.
type decisions struct {
	nc      *nats.Conn
	subject string
	router  string
	log     zerolog.Logger

	mu  sync.Mutex
	buf []record.Decision

	counts decisionCounts // fedmesh_router_decisions_total (metrics.go)
}

// add records one placement; a full batch is sent at once.
func (d *decisions) add(x record.Decision) {
	d.counts.add(&x)
	d.mu.Lock()
	d.buf = append(d.buf, x)
	var full []record.Decision
	if len(d.buf) >= decisionsBatch {
		full, d.buf = d.buf, make([]record.Decision, 0, decisionsBatch)
	}
	d.mu.Unlock()
	if full != nil {
		d.send(full)
	}
}

// flush sends what was collected (the periodic send and the last one on
// Stop); nothing when idle.
func (d *decisions) flush() {
	d.mu.Lock()
	b := d.buf
	d.buf = nil
	d.mu.Unlock()
	if len(b) > 0 {
		d.send(b)
	}
}

func (d *decisions) send(b []record.Decision) {
	data, err := record.EncodeDecisions(&record.Decisions{Router: d.router, Decisions: b})
	if err == nil {
		err = d.nc.Publish(d.subject, data)
	}
	if err != nil {
		d.log.Debug().Err(err).Int("decisions", len(b)).Msg("publish decisions")
	}
}

// decision is the event of one accepted dispatch.
func (p *placement) decision(res *Result) record.Decision {
	x := record.Decision{RequestID: p.spec.RequestID, Capability: p.inbound.Capability, Model: res.Model,
		Tenant: p.spec.Tenant, Node: res.Node, Score: res.Score, DecidedBy: res.DecidedBy,
		Strategy: p.s.policy.Load().Strategy, Attempts: res.Attempts, Takeover: p.lostNodeOrEmpty(), Time: time.Now().UTC()}
	if res.Queued > 0 {
		x.QueuedMs = float64(res.Queued.Microseconds()) / 1000
	}
	x.PredictedTTFTMs = math.Round(res.PredictedTTFTMs*10) / 10
	x.PrefixMatch = math.Round(res.PrefixMatch*1000) / 1000
	return x
}

func (p *placement) lostNodeOrEmpty() string {
	if p.takeover == "" {
		return ""
	}
	return p.lostNode()
}

// decidedBy names the policy term that put the chosen node ahead of the
// runner-up (the best other candidate): the term with the largest weighted
// lead. "strategy" when the strategy chose a node that does not score best
// (round robin, random, power of two, consistent hash); "" without a
// runner-up. Called under the cache's read lock; allocates nothing.
func decidedBy(chosen *entry, chosenTotal float64, top []scored, q *query, w *weightVec, hashed bool) string {
	var runner *scored
	for i := range top {
		if top[i].e != chosen && (runner == nil || top[i].total > runner.total) {
			runner = &top[i]
		}
	}
	switch {
	case runner == nil:
		return ""
	case hashed || chosenTotal < runner.total:
		return "strategy"
	}
	var a, b [numPolicies]float64
	score(chosen, q, w, &a)
	score(runner.e, q, w, &b)
	best, lead := -1, 0.0
	for i := range a {
		if d := w[i] * (a[i] - b[i]); d > lead {
			best, lead = i, d
		}
	}
	if best < 0 {
		return "strategy" // a tie: the strategy's order decided
	}
	return policyNames[best]
}
