package nodeagent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Prometheus metrics of one node agent (shared/metrics): the OpenTelemetry
// GenAI model-server histograms, observed once per finished request from
// its outcome, and the node's load read from the state the heartbeat
// reports. Every series carries the node id; model and operation labels
// only take the models and capabilities the node is configured with.

var _ metrics.Source = (*Service)(nil)

// nodeMetrics are the per-request histograms and the label sets bounding
// them.
type nodeMetrics struct {
	genai  *metrics.GenAI
	models *metrics.LabelSet
	ops    *metrics.LabelSet
}

func newNodeMetrics(cfg Config) *nodeMetrics {
	var ids, caps []string
	for _, m := range cfg.Models {
		ids = append(ids, m.ModelID)
		caps = append(caps, m.Capabilities...)
	}
	return &nodeMetrics{
		genai:  metrics.NewGenAI(prometheus.Labels{"node": cfg.NodeID}),
		models: metrics.NewLabelSet(len(ids)+1, ids...),
		ops:    metrics.NewLabelSet(len(caps)+1, caps...),
	}
}

// observe records one finished request from its completed outcome.
func (m *nodeMetrics) observe(o *record.Outcome) {
	if m == nil {
		return
	}
	code := o.Code
	if !o.OK && code == 0 {
		code = wire.CodeInternal // a failure always has an error_type
	}
	m.genai.Observe(metrics.Request{Operation: m.ops.Value(o.Capability), Model: m.models.Value(o.Model), Code: code,
		Duration: msDuration(o.LatencyMs), TTFT: msDuration(o.TTFTMs), OutputTokens: o.Tokens})
}

func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// Metrics is the node agent's collector.
func (s *Service) Metrics() prometheus.Collector {
	node := prometheus.Labels{"node": s.cfg.NodeID}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("fedmesh_node_"+name, help, nil, node)
	}
	return metrics.Collectors{s.metrics.genai, &nodeCollector{s: s,
		inFlight: desc("in_flight", "Accepted requests not finished."),
		maxConc:  desc("max_concurrency", "Requests the node takes at once; beyond, dispatches are answered busy."),
		queue:    desc("queue_depth", "Accepted requests without a first token yet (queued or in prefill on the backend)."),
		streams:  desc("active_streams", "Streamed requests in flight."),
		draining: desc("draining", "1 once the node stopped taking work."),
		tps:      desc("throughput_tokens_per_second", "EWMA of per-request decode speed (the heartbeat's throughput_tps)."),
		late:     desc("late_dispatches_total", "Dispatches dropped because their Fed-Ack-Deadline had passed: on arrival (unstarted), or before an answer at once went out."),
		dispatch: desc("dispatches_total", "Dispatches received on fed.node.<id>.infer, accepted or not."),
		conns: prometheus.NewDesc("fedmesh_node_backend_connections_total",
			"Backend requests by how they got their connection to the model server: reused=\"true\" from the keep-alive pool, \"false\" newly opened.",
			[]string{"reused"}, node),
	}}
}

// nodeCollector reads what the heartbeat reports, under the lock the
// heartbeat takes.
type nodeCollector struct {
	s                                                                       *Service
	inFlight, maxConc, queue, streams, draining, tps, late, dispatch, conns *prometheus.Desc
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.inFlight, c.maxConc, c.queue, c.streams, c.draining, c.tps, c.late, c.dispatch, c.conns} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	active, waiting, streams, draining, tps := s.active, s.waiting, s.streamsLocked(), s.draining, s.tps
	s.mu.Unlock()
	metrics.Gauge(ch, c.inFlight, float64(active))
	metrics.Gauge(ch, c.maxConc, float64(s.cfg.MaxConcurrency))
	metrics.Gauge(ch, c.queue, float64(waiting))
	metrics.Gauge(ch, c.streams, float64(streams))
	metrics.Gauge(ch, c.draining, metrics.Bool(draining))
	metrics.Gauge(ch, c.tps, tps)
	metrics.Counter(ch, c.late, float64(s.lateDispatches.Load()))
	if cs, ok := s.cfg.Backend.(backend.ConnStats); ok {
		opened, reused := cs.Stats()
		metrics.Counter(ch, c.conns, float64(opened), "false")
		metrics.Counter(ch, c.conns, float64(reused), "true")
	}
	metrics.Counter(ch, c.dispatch, s.dispatched())
}
