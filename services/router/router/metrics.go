package router

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/record"
)

// Prometheus metrics of one router (shared/metrics). Everything but the
// decision counts and the KV watch lag reads the counters Stats reports,
// so the placement path pays nothing for them.

var _ metrics.Source = (*Service)(nil)

// Metrics is the router's collector: its Stats as counters and gauges,
// decisions by strategy and deciding policy, and the lag of its KV watches.
func (s *Service) Metrics() prometheus.Collector {
	return metrics.Collectors{routerCollector{s}, &s.lag}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("fedmesh_router_"+name, help, labels, nil)
}

var (
	descRequests = desc("requests_total", "Inference requests this router received.")
	descPlaced   = desc("placed_total", "Requests a node accepted.")
	descUnplaced = desc("unplaced_total", "Requests the router answered itself with a final error (an unplaced event each).")
	descRetries  = desc("retries_total", "Dispatches tried again on another node after a failed attempt.")
	descRejected = desc("rejected_overload_total", "Requests answered 429 because the router already placed max_in_flight requests.")
	descBusy     = desc("busy_total", "Busy acks: a node was full; the request went on to another node or waited.")
	descQueued   = desc("queued_total", "Requests that waited in the queue for a free slot.")
	descQueueTO  = desc("queue_timeouts_total", "Requests answered 429 after waiting max_queue_ms in the queue.")
	descQueueFul = desc("queue_full_total", "Requests answered 429 at once because the queue was full.")
	descWait     = desc("queue_wait_seconds", "Time requests spent in the queue, counted when they leave it (placed or not).")
	descTooLarge = desc("too_large_total", "Requests answered 413: the dispatch would not fit max_payload.")
	descCancels  = desc("ack_cancels_total", "Targeted cancels sent after a dispatch's ack never came.")
	descSupp     = desc("finals_suppressed_total", "Final errors not sent because the node of an attempt whose ack was lost answered.")
	descTakeover = desc("takeovers_total", "Requests of a lost node placed again on another node (Fed-Takeover).")
	descLost     = desc("lost_finals_total", "Requests of a lost node that could not continue: a final 503 with Fed-Lost-Node.")
	descDoneAck  = desc("done_acks_total", "Dispatches acked done: the node answered at once and acked after its final.")
	descStAsked  = desc("status_asked_total", "Nodes asked whether they hold a request whose dispatch ack never came (at the ack wait's end and at the finals grace's end).")
	descStHeld   = desc("status_held_total", "Status questions answered held: placed there, or no final error from the router.")
	descDecision = desc("decisions_total", "Accepted dispatches by strategy and the policy term that decided them (DESIGN §9.5 decided_by; "+
		"none: the only candidate).", "strategy", "decided_by")
	descInFlight = desc("in_flight", "Requests being placed now.")
	descMaxIn    = desc("max_in_flight", "Requests placed at once before answering 429 (MaxInFlight).")
	descOutst    = desc("outstanding", "Accepted dispatches whose completion has not arrived yet.")
	descQueueLen = desc("queue_length", "Requests waiting for a free slot now.")
	descMaxQueue = desc("max_queue", "Requests that may wait in the queue (MaxQueue).")
	descNodes    = desc("nodes", "Nodes in the router's copy of fed_catalog.")
	descStrategy = desc("strategy", "1 for the strategy in force (fed_config router.policy, else the configured one).", "strategy")

	routerDescs = []*prometheus.Desc{descRequests, descPlaced, descUnplaced, descRetries, descRejected, descBusy, descQueued,
		descQueueTO, descQueueFul, descWait, descTooLarge, descCancels, descSupp, descTakeover, descLost, descDoneAck, descStAsked, descStHeld, descDecision,
		descInFlight, descMaxIn, descOutst, descQueueLen, descMaxQueue, descNodes, descStrategy}
)

type routerCollector struct{ s *Service }

func (c routerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range routerDescs {
		ch <- d
	}
}

func (c routerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	st := s.Stats()
	for _, x := range []struct {
		d *prometheus.Desc
		v int64
	}{
		{descRequests, st.Requests}, {descPlaced, st.Placed}, {descUnplaced, st.Unplaced}, {descRetries, st.Retries},
		{descRejected, st.Rejected}, {descBusy, st.Busy}, {descQueued, st.Queued}, {descQueueTO, st.QueueTimeouts},
		{descQueueFul, st.QueueFull}, {descTooLarge, st.TooLarge}, {descCancels, st.AckCancels},
		{descSupp, st.FinalsSuppressed}, {descTakeover, st.Takeovers}, {descLost, st.LostFinals},
		{descDoneAck, st.DoneAcks},
		{descStAsked, st.StatusAsked}, {descStHeld, st.StatusHeld},
	} {
		metrics.Counter(ch, x.d, float64(x.v))
	}
	ch <- prometheus.MustNewConstSummary(descWait, uint64(max(s.stats.queueLeft.Load(), 0)),
		float64(s.stats.queueWaitNs.Load())/1e9, nil)
	metrics.Gauge(ch, descInFlight, float64(st.InFlight))
	metrics.Gauge(ch, descMaxIn, float64(s.cfg.MaxInFlight))
	metrics.Gauge(ch, descOutst, float64(st.Outstanding))
	metrics.Gauge(ch, descQueueLen, float64(st.QueueLen))
	metrics.Gauge(ch, descMaxQueue, float64(s.cfg.MaxQueue))
	metrics.Gauge(ch, descNodes, float64(st.Nodes))
	metrics.Gauge(ch, descStrategy, 1, st.Strategy)
	s.decisions.counts.collect(ch)
}

// maxDecisionSeries bounds the strategy × decided_by pairs counted apart;
// both come from the router's own code and policy (never from a request),
// so the bound only guards against a bug.
const maxDecisionSeries = 256

type decisionKey struct{ strategy, decidedBy string }

// decisionCounts counts accepted dispatches by strategy and decided_by:
// after a pair's first decision, counting it is a map read and an atomic
// add. The zero value is ready.
type decisionCounts struct {
	m    sync.Map // decisionKey → *atomic.Int64
	size atomic.Int32
}

func (c *decisionCounts) add(x *record.Decision) {
	k := decisionKey{x.Strategy, x.DecidedBy}
	v, ok := c.m.Load(k)
	if !ok {
		if c.size.Load() >= maxDecisionSeries {
			k = decisionKey{metrics.Other, metrics.Other}
		}
		var loaded bool
		if v, loaded = c.m.LoadOrStore(k, new(atomic.Int64)); !loaded {
			c.size.Add(1)
		}
	}
	v.(*atomic.Int64).Add(1)
}

// decidedByLabel: an empty decided_by is the only candidate.
func decidedByLabel(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

func (c *decisionCounts) collect(ch chan<- prometheus.Metric) {
	c.m.Range(func(k, v any) bool {
		key := k.(decisionKey)
		metrics.Counter(ch, descDecision, float64(v.(*atomic.Int64).Load()), key.strategy, decidedByLabel(key.decidedBy))
		return true
	})
}
