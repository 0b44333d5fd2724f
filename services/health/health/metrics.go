package health

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/record"
)

// Prometheus metrics of one health instance (shared/metrics), read from the
// state it keeps for fed_health and fed.stats: nothing on the event path.
// Counters are this instance's (seeded from fed_health at start, so they
// continue across restarts); every instance sees every event, so each
// reports the whole mesh: aggregate instances with max, not sum. Per-node
// series cover the nodes registered in fed_catalog only, so an event naming
// a made-up node never becomes a label value.

var _ metrics.Source = (*Service)(nil)

// Metrics is the health service's collector.
func (s *Service) Metrics() prometheus.Collector {
	return metrics.Collectors{healthCollector{s}, &s.lag}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("fedmesh_health_"+name, help, labels, nil)
}

var (
	descMeshState  = desc("mesh_state", "1 for the mesh state (DESIGN §7.2): initializing, ready or degraded.", "state")
	descNodes      = desc("nodes", "Nodes registered in fed_catalog that this instance judges.")
	descRequests   = desc("requests_total", "Requests the mesh finished (completed outcomes) or no node took (unplaced), by result.", "result")
	descTokens     = desc("tokens_total", "Output tokens of completed outcomes.")
	descRetries    = desc("retries_total", "Retries: attempt - 1 of completed outcomes and unplaced events.")
	descDuplicates = desc("duplicates_dropped_total", "Second answers to one request the SDK dropped (duplicate outcomes).")
	descDispatchF  = desc("dispatch_failures_total", "Failed dispatch attempts the routers reported (dispatch_failed outcomes).")
	descUnplaced   = desc("unplaced_total", "Requests a router answered itself with a final error, by wire code.", "code")
	descEvents     = desc("events_received_total", "Events delivered to this instance (before decoding), by kind.", "event")
	descDropped    = desc("events_dropped_total", "Events the client library dropped because this instance fell behind, by kind.", "event")

	descNodeState   = desc("node_state", "1 for the node's state as routers see it: healthy, degraded, unhealthy or unknown.", "node", "state")
	descCircuit     = desc("circuit_state", "1 for the node's circuit breaker state: closed, open or half_open.", "node", "state")
	descInFlight    = desc("node_in_flight", "Requests in flight on the node (latest heartbeat).", "node")
	descMaxConc     = desc("node_max_concurrency", "The node's max_concurrency (latest heartbeat, else its registration).", "node")
	descQueueDepth  = desc("node_queue_depth", "Accepted requests without a first token yet (latest heartbeat).", "node")
	descStreams     = desc("node_active_streams", "Streams in flight on the node (latest heartbeat).", "node")
	descTPS         = desc("node_throughput_tokens_per_second", "The node's decode speed (heartbeat throughput_tps).", "node")
	descGPU         = desc("node_gpu_utilization", "The node's GPU utilisation, 0-1 (heartbeat).", "node")
	descDraining    = desc("node_draining", "1 while the node drains.", "node")
	descSuccessRate = desc("node_success_rate", "Share of the node's recent requests that succeeded.", "node")
	descLatency     = desc("node_latency_seconds", "Latency of the node's successful requests: count and sum since the counters "+
		"began, quantiles over the recent ones (the fed_health window).", "node")
	descConsecFail = desc("node_consecutive_failures", "The node's current run of failures.", "node")
	descNodeReq    = desc("node_requests_total", "Requests the node finished, by result.", "node", "result")
	descNodeDispF  = desc("node_dispatch_failures_total", "Failed dispatches to the node the routers reported.", "node")

	healthDescs = []*prometheus.Desc{descMeshState, descNodes, descRequests, descTokens, descRetries, descDuplicates,
		descDispatchF, descUnplaced, descEvents, descDropped, descNodeState, descCircuit, descInFlight, descMaxConc,
		descQueueDepth, descStreams, descTPS, descGPU, descDraining, descSuccessRate, descLatency, descConsecFail,
		descNodeReq, descNodeDispF}

	meshStates    = []string{record.MeshInitializing, record.MeshReady, record.MeshDegraded}
	nodeStates    = []string{record.StateHealthy, record.StateDegraded, record.StateUnhealthy, record.StateUnknown}
	circuitStates = []string{record.CircuitClosed, record.CircuitOpen, record.CircuitHalfOpen}
)

type healthCollector struct{ s *Service }

func (c healthCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range healthDescs {
		ch <- d
	}
}

func (c healthCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	c.collectEvents(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	state := meshState(s.nodes)
	for _, st := range meshStates {
		metrics.Gauge(ch, descMeshState, metrics.Bool(st == state), st)
	}
	mc := s.mesh.all.c
	metrics.Counter(ch, descRequests, float64(mc.SuccessfulRequests), "ok")
	metrics.Counter(ch, descRequests, float64(mc.FailedRequests), "failed")
	metrics.Counter(ch, descTokens, float64(mc.TotalTokens))
	metrics.Counter(ch, descRetries, float64(mc.Retries))
	metrics.Counter(ch, descDuplicates, float64(mc.DuplicatesDropped))
	metrics.Counter(ch, descDispatchF, float64(mc.DispatchFailures))
	for code, n := range s.mesh.unplaced {
		if _, err := strconv.Atoi(code); err == nil { // keys are codes the decoder checked
			metrics.Counter(ch, descUnplaced, float64(n), code)
		}
	}
	registered := 0
	for id, n := range s.nodes {
		if !n.registered {
			continue
		}
		registered++
		r := n.record()
		for _, st := range nodeStates {
			metrics.Gauge(ch, descNodeState, metrics.Bool(st == r.State), id, st)
		}
		for _, st := range circuitStates {
			metrics.Gauge(ch, descCircuit, metrics.Bool(st == r.Circuit), id, st)
		}
		metrics.Gauge(ch, descInFlight, float64(r.InFlight), id)
		metrics.Gauge(ch, descMaxConc, float64(r.MaxConcurrency), id)
		metrics.Gauge(ch, descQueueDepth, float64(r.QueueDepth), id)
		metrics.Gauge(ch, descStreams, float64(n.activeStreams), id)
		metrics.Gauge(ch, descTPS, r.ThroughputTPS, id)
		metrics.Gauge(ch, descGPU, r.GPUUtilization, id)
		metrics.Gauge(ch, descDraining, metrics.Bool(r.Draining), id)
		metrics.Gauge(ch, descSuccessRate, r.SuccessRate, id)
		ch <- prometheus.MustNewConstSummary(descLatency, uint64(max(n.stats.latN, 0)), n.stats.latSum/1000,
			map[float64]float64{0.5: r.LatencyP50Ms / 1000, 0.99: r.LatencyP99Ms / 1000}, id)
		metrics.Gauge(ch, descConsecFail, float64(r.ConsecutiveFailures), id)
		nc := n.stats.c
		metrics.Counter(ch, descNodeReq, float64(nc.SuccessfulRequests), id, "ok")
		metrics.Counter(ch, descNodeReq, float64(nc.FailedRequests), id, "failed")
		metrics.Counter(ch, descNodeDispF, float64(nc.DispatchFailures), id)
	}
	metrics.Gauge(ch, descNodes, float64(registered))
}

// collectEvents reads the subscriptions' own counts: heartbeats, outcomes
// and unplaced events cost nothing more to count.
func (c healthCollector) collectEvents(ch chan<- prometheus.Metric) {
	sp := c.s.cfg.Subjects
	// outcomes come on three subjects, one per publisher: one series
	kinds := map[string]string{sp.HeartbeatAll(): "heartbeat", sp.OutcomeAll(): "outcome", sp.RouterFailedAll(): "outcome",
		sp.ClientDuplicateAll(): "outcome", sp.Unplaced(): "unplaced"}
	delivered, dropped := map[string]float64{}, map[string]float64{}
	for _, sub := range c.s.subs {
		kind, ok := kinds[sub.Subject]
		if !ok {
			continue
		}
		if n, err := sub.Delivered(); err == nil { // gone once unsubscribed
			delivered[kind] += float64(n)
		}
		if n, err := sub.Dropped(); err == nil {
			dropped[kind] += float64(n)
		}
	}
	for kind, n := range delivered {
		metrics.Counter(ch, descEvents, n, kind)
	}
	for kind, n := range dropped {
		metrics.Counter(ch, descDropped, n, kind)
	}
}
