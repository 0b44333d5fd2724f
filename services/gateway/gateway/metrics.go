package gateway

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedmesh/fedmesh/shared/client"
	fedmetrics "github.com/fedmesh/fedmesh/shared/metrics"
)

// modelsRefresh is how often the gateway reloads the model ids its model
// label may take from the catalog (fed.catalog.list).
const modelsRefresh = 30 * time.Second

var _ fedmetrics.Source = (*Service)(nil)

// metrics are per Service, so several gateways in one process (tests,
// fedmesh dev) do not collide; servicecmd serves them on --metrics-listen,
// apart from the API listener. The model label only takes model ids the
// catalog lists or a node answered for, else "other": a caller's made-up
// model never becomes a series.
type metrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	ttft     *prometheus.HistogramVec
	tokens   *prometheus.CounterVec
	streams  prometheus.Gauge
	// late and duplicates: what the SDK dropped instead of answering twice.
	late       *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	// models bounds the model label.
	models *fedmetrics.LabelSet
}

var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newMetrics() *metrics {
	m := &metrics{models: fedmetrics.NewLabelSet(0)}
	labels := []string{"endpoint", "model", "tenant", "node"}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fedmesh", Subsystem: "gateway",
		Name: "requests_total", Help: "HTTP inference requests by endpoint, model, tenant, serving node and HTTP status."},
		append(labels, "status"))
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fedmesh", Subsystem: "gateway",
		Name: "errors_total", Help: "Failed requests by fedmesh error code (499: client went away)."},
		append(labels, "code"))
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "fedmesh", Subsystem: "gateway",
		Name: "request_duration_seconds", Help: "Time from request to last byte.", Buckets: latencyBuckets}, labels)
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "fedmesh", Subsystem: "gateway",
		Name: "time_to_first_token_seconds", Help: "Time from request to the first streamed chunk.", Buckets: latencyBuckets}, labels)
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fedmesh", Subsystem: "gateway",
		Name: "tokens_total", Help: "Output tokens reported by nodes (Fed-Tokens)."}, labels)
	m.streams = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "fedmesh", Subsystem: "gateway",
		Name: "active_streams", Help: "SSE streams in progress."})
	m.late = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fedmesh", Subsystem: "gateway",
		Name: "late_messages_total", Help: "Mesh messages dropped because their request had already ended (after its one final, " +
			"or after the gateway gave up), by sending node (none: a router), message (chunk, final) and what ended the " +
			"request (final; caller: deadline or client gone)."}, []string{"node", "message", "ended_by"})
	m.duplicates = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fedmesh", Subsystem: "gateway",
		Name: "duplicates_total", Help: "Second nodes that answered a request another node answered (one per request and node; " +
			"reported as a duplicate outcome)."}, []string{"node"})
	return m
}

// Metrics is the gateway's collector (servicecmd adds the Go and process
// collectors).
func (s *Service) Metrics() prometheus.Collector {
	m := s.metrics
	return fedmetrics.Collectors{m.requests, m.errors, m.latency, m.ttft, m.tokens, m.streams, m.late, m.duplicates}
}

// followModels loads the catalog's model ids for the model label now, then
// every modelsRefresh on the serve group. No catalog is no error: requests
// then label their model once a node answered for it.
func (s *Service) followModels(ctx context.Context) {
	s.refreshModels(ctx)
	s.group.Every(modelsRefresh, func(ctx context.Context, _ time.Time) { s.refreshModels(ctx) })
}

func (s *Service) refreshModels(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CatalogTimeout)
	defer cancel()
	list, err := s.catalogList(ctx)
	if err != nil {
		s.log.Debug().Err(err).Msg("metrics: model ids not refreshed from the catalog")
		return
	}
	var ids []string
	for _, n := range list.Nodes {
		for _, m := range n.Models {
			ids = append(ids, m.ModelID)
		}
	}
	s.metrics.models.Replace(ids...)
	s.log.Debug().Int("models", s.metrics.models.Len()).Msg("metrics: model ids refreshed from the catalog")
}

// observation is one finished request as the metrics see it.
type observation struct {
	endpoint, model, tenant, node string
	status                        int
	code                          int // fedmesh error code, 0 on success
	tokens                        int
	elapsed                       time.Duration
	ttft                          time.Duration // 0: not streamed or no chunk
}

func (m *metrics) observe(o observation) {
	if o.node == "" {
		o.node = "none"
	}
	if o.model == "" {
		o.model = "any"
	} else {
		if o.code == 0 && o.node != "none" {
			m.models.Add(o.model) // a node answered for it: the mesh has it (the router 404s others)
		}
		o.model = m.models.Value(o.model)
	}
	lv := []string{o.endpoint, o.model, o.tenant, o.node}
	m.requests.WithLabelValues(append(lv, strconv.Itoa(o.status))...).Inc()
	if o.code != 0 {
		m.errors.WithLabelValues(append(lv, strconv.Itoa(o.code))...).Inc()
	}
	m.latency.WithLabelValues(lv...).Observe(o.elapsed.Seconds())
	if o.ttft > 0 {
		m.ttft.WithLabelValues(lv...).Observe(o.ttft.Seconds())
	}
	if o.tokens > 0 {
		m.tokens.WithLabelValues(lv...).Add(float64(o.tokens))
	}
}

// dropped counts a message the SDK dropped (client.WithDropped): it runs on
// the SDK's delivery path, so it only counts.
func (m *metrics) dropped(d client.Dropped) {
	node := d.Node
	if node == "" {
		node = "none"
	}
	if d.Late {
		message, endedBy := "chunk", "final"
		if d.Final {
			message = "final"
		}
		if d.EndedByCaller {
			endedBy = "caller"
		}
		m.late.WithLabelValues(node, message, endedBy).Inc()
	}
	if d.Duplicate {
		m.duplicates.WithLabelValues(node).Inc()
	}
}
