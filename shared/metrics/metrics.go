// Package metrics is fedmesh's one way to export Prometheus metrics. Every
// service implements Source: its collectors, which mostly read the counters
// and state the service keeps anyway. servicecmd serves them on
// --metrics-listen (off by default); devmesh serves every part of
// `fedmesh dev` from one registry. Each part's series carry fedmesh_service
// and fedmesh_instance, so two routers in one process never collide.
//
// Names follow the OpenTelemetry GenAI semantic conventions where one
// exists (gen_ai.server.request.duration becomes
// gen_ai_server_request_duration_seconds, with the buckets the convention
// recommends); the rest start with fedmesh_. Label values are bounded: a
// model or tenant label only ever holds a value the mesh knows (LabelSet),
// else "other", never a string a caller chose.
package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Labels every part's series carry (Wrap): the service, as its command is
// named (router, nodeagent, …), and the instance id its connection is named
// after (fedmesh-<service>-<id>: a node id, a router's instance id).
const (
	LabelService  = "fedmesh_service"
	LabelInstance = "fedmesh_instance"
)

// Source is a service that can be scraped. Metrics is meant to be
// registered once Start has returned: collectors read what Start set up.
type Source interface {
	Metrics() prometheus.Collector
}

// Collectors is several collectors as one.
type Collectors []prometheus.Collector

// Describe implements prometheus.Collector.
func (cs Collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (cs Collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

// Wrap labels every series of c with the part it comes from.
func Wrap(service, instance string, c prometheus.Collector) prometheus.Collector {
	return prometheus.WrapCollectorWith(prometheus.Labels{LabelService: service, LabelInstance: instance}, c)
}

// NewRegistry returns a registry holding the Go runtime and process
// collectors, once per process.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ForService is the registry of one service program: the process's
// collectors and, when svc is a Source, its series wrapped with service and
// instance.
func ForService(service, instance string, svc any) (*prometheus.Registry, error) {
	reg := NewRegistry()
	if src, ok := svc.(Source); ok {
		if err := reg.Register(Wrap(service, instance, src.Metrics())); err != nil {
			return nil, fmt.Errorf("metrics of %s %s: %w", service, instance, err)
		}
	}
	return reg, nil
}

// Counter, Gauge and Summary are the const metrics a collector that reads
// state builds on every scrape.

// Counter sends one counter sample of d.
func Counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

// Gauge sends one gauge sample of d.
func Gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// Bool is 1 for true, for 0/1 gauges.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
