package catalog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedmesh/fedmesh/shared/metrics"
)

// Prometheus metrics of one catalog instance (shared/metrics), read from
// its cache, its heartbeat subscription and its micro endpoints' stats:
// nothing on the request path. Model and node labels come from the
// registered records only: they are what the catalog knows.

var _ metrics.Source = (*Service)(nil)

// Metrics is the catalog's collector.
func (s *Service) Metrics() prometheus.Collector { return catalogCollector{s} }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("fedmesh_catalog_"+name, help, labels, nil)
}

var (
	descNodes      = desc("nodes", "Nodes registered in fed_catalog (this instance's copy).")
	descModelNodes = desc("model_nodes", "Registered nodes serving a model with a capability.", metrics.LabelModel, metrics.LabelOperation)
	descAge        = desc("node_heartbeat_age_seconds", "Time since the node's last sign of life (heartbeat or registration); "+
		"the record expires at node_ttl.", "node")
	descHeartbeats = desc("heartbeats_received_total", "Heartbeats delivered to this instance (before decoding).")
	descHBDropped  = desc("heartbeats_dropped_total", "Heartbeats the client library dropped because this instance fell behind.")
	descRequests   = desc("requests_total", "Requests to the catalog's micro endpoints, by endpoint.", "endpoint")
	descJobs       = desc("pending_writes", "Register and deregister requests waiting for a worker.")
	descJobsCap    = desc("pending_writes_limit", "Pending writes before the catalog answers 503.")

	catalogDescs = []*prometheus.Desc{descNodes, descModelNodes, descAge, descHeartbeats, descHBDropped, descRequests,
		descJobs, descJobsCap}
)

type catalogCollector struct{ s *Service }

func (c catalogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range catalogDescs {
		ch <- d
	}
}

func (c catalogCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	nodes := s.cache.snapshot()
	metrics.Gauge(ch, descNodes, float64(len(nodes)))
	type modelCap struct{ model, capability string }
	serving := map[modelCap]int{}
	now := time.Now()
	for _, n := range nodes {
		for _, m := range n.node.Models {
			for _, cp := range m.Capabilities {
				serving[modelCap{m.ModelID, cp}]++
			}
		}
		metrics.Gauge(ch, descAge, max(now.Sub(s.lastSign(n.node)), 0).Seconds(), n.node.NodeID)
	}
	for k, v := range serving {
		metrics.Gauge(ch, descModelNodes, float64(v), k.model, k.capability)
	}
	if s.hbSub != nil {
		if n, err := s.hbSub.Delivered(); err == nil {
			metrics.Counter(ch, descHeartbeats, float64(n))
		}
		if n, err := s.hbSub.Dropped(); err == nil {
			metrics.Counter(ch, descHBDropped, float64(n))
		}
	}
	if s.svc != nil {
		for _, ep := range s.svc.Stats().Endpoints {
			metrics.Counter(ch, descRequests, float64(ep.NumRequests), ep.Name)
		}
	}
	metrics.Gauge(ch, descJobs, float64(len(s.jobs)))
	metrics.Gauge(ch, descJobsCap, float64(cap(s.jobs)))
}
