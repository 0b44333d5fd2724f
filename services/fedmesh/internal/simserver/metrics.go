package simserver

import (
	"sort"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names: vLLM's (v1 engine), so dashboards and scrapers written
// for vLLM read a simserver unchanged. Every series has the labels
// model_name (the first served model name) and engine ("0").
const (
	MetricRequestsRunning  = "vllm:num_requests_running"
	MetricRequestsWaiting  = "vllm:num_requests_waiting"
	MetricKVCacheUsage     = "vllm:kv_cache_usage_perc" // 0–1, despite the name
	MetricPrefixQueries    = "vllm:prefix_cache_queries_total"
	MetricPrefixHits       = "vllm:prefix_cache_hits_total"
	MetricPromptTokens     = "vllm:prompt_tokens_total"
	MetricGenerationTokens = "vllm:generation_tokens_total"
	MetricRequestSuccess   = "vllm:request_success_total" // label finished_reason: stop, length, abort
	MetricPreemptions      = "vllm:num_preemptions_total"
	MetricTTFT             = "vllm:time_to_first_token_seconds"
	MetricInterToken       = "vllm:inter_token_latency_seconds"
	MetricE2E              = "vllm:e2e_request_latency_seconds"
	MetricQueueTime        = "vllm:request_queue_time_seconds"
	MetricPrefillTime      = "vllm:request_prefill_time_seconds"
	MetricDecodeTime       = "vllm:request_decode_time_seconds"
	MetricCacheConfig      = "vllm:cache_config_info"
	LabelModelName         = "model_name"
	LabelEngine            = "engine"
	LabelFinishedReason    = "finished_reason"
)

// vLLM's histogram buckets, in seconds.
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
		0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	itlBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
		1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}
	requestBuckets = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
		40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
)

// histogram counts observations in fixed buckets, as the engine goes; a
// scrape turns a copy into a const histogram.
type histogram struct {
	bounds []float64
	counts []uint64 // per bucket, not cumulative; the last one is +Inf
	sum    float64
	n      uint64
}

func newHistogram(bounds []float64) histogram {
	return histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	h.counts[sort.SearchFloat64s(h.bounds, v)]++ // first bound >= v: le is inclusive
	h.sum += v
	h.n++
}

func (h histogram) clone() histogram {
	h.counts = append([]uint64(nil), h.counts...)
	return h
}

// cumulative is the bucket map Prometheus wants (upper bound → count of
// observations <= it).
func (h histogram) cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(h.bounds))
	var c uint64
	for i, b := range h.bounds {
		c += h.counts[i]
		out[b] = c
	}
	return out
}

// engineMetrics are the engine's counters and histograms, in simulated
// time.
type engineMetrics struct {
	promptTokens, generationTokens uint64
	prefixQueries, prefixHits      uint64 // in tokens, as vLLM counts them
	finished                       map[string]uint64
	ttft, itl, e2e                 histogram
	queue, prefill, decode         histogram
}

func newEngineMetrics() engineMetrics {
	return engineMetrics{finished: map[string]uint64{},
		ttft: newHistogram(ttftBuckets), itl: newHistogram(itlBuckets), e2e: newHistogram(requestBuckets),
		queue: newHistogram(requestBuckets), prefill: newHistogram(requestBuckets), decode: newHistogram(requestBuckets)}
}

// snapshot is the engine's state at one scrape.
type snapshot struct {
	running, waiting int
	kvUsage          float64
	m                engineMetrics
}

func (e *engine) snapshot() snapshot {
	m := e.m
	m.finished = make(map[string]uint64, len(e.m.finished))
	for k, v := range e.m.finished {
		m.finished[k] = v
	}
	for _, h := range []*histogram{&m.ttft, &m.itl, &m.e2e, &m.queue, &m.prefill, &m.decode} {
		*h = h.clone()
	}
	return snapshot{running: len(e.running), waiting: len(e.waiting), kvUsage: e.kvUsage(), m: m}
}

// collector reads the engine at every scrape.
type collector struct {
	read func() snapshot

	running, waiting, kvUsage, cacheConfig       *prometheus.Desc
	queries, hits, prompt, generation, preempted *prometheus.Desc
	success                                      *prometheus.Desc
	ttft, itl, e2e, queue, prefill, decode       *prometheus.Desc
	cacheLabels                                  []string
}

func newCollector(model string, p Profile, read func() snapshot) *collector {
	constant := prometheus.Labels{LabelModelName: model, LabelEngine: "0"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, constant)
	}
	return &collector{read: read,
		running:    d(MetricRequestsRunning, "Number of requests in model execution batches."),
		waiting:    d(MetricRequestsWaiting, "Number of requests waiting to be processed."),
		kvUsage:    d(MetricKVCacheUsage, "KV-cache usage. 1 means 100 percent usage."),
		queries:    d(MetricPrefixQueries, "Prefix cache queries, in terms of number of queried tokens."),
		hits:       d(MetricPrefixHits, "Prefix cache hits, in terms of number of cached tokens."),
		prompt:     d(MetricPromptTokens, "Number of prefill tokens processed."),
		generation: d(MetricGenerationTokens, "Number of generation tokens processed."),
		preempted:  d(MetricPreemptions, "Cumulative number of preemption from the engine."),
		success:    d(MetricRequestSuccess, "Count of successfully processed requests.", LabelFinishedReason),
		ttft:       d(MetricTTFT, "Histogram of time to first token in seconds."),
		itl:        d(MetricInterToken, "Histogram of inter-token latency in seconds."),
		e2e:        d(MetricE2E, "Histogram of e2e request latency in seconds."),
		queue:      d(MetricQueueTime, "Histogram of time spent in WAITING phase for request."),
		prefill:    d(MetricPrefillTime, "Histogram of time spent in PREFILL phase for request."),
		decode:     d(MetricDecodeTime, "Histogram of time spent in DECODE phase for request."),
		// as vLLM: the cache config as labels of a gauge that is 1, without model_name
		cacheConfig: prometheus.NewDesc(MetricCacheConfig, "Information of the LLMEngine CacheConfig",
			[]string{"block_size", "num_gpu_blocks", "enable_prefix_caching", LabelEngine}, nil),
		cacheLabels: []string{strconv.Itoa(p.BlockSize), strconv.Itoa(p.KVBlocks), "True", "0"},
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.running, c.waiting, c.kvUsage, c.cacheConfig, c.queries, c.hits,
		c.prompt, c.generation, c.preempted, c.success, c.ttft, c.itl, c.e2e, c.queue, c.prefill, c.decode} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	hist := func(d *prometheus.Desc, h histogram) {
		ch <- prometheus.MustNewConstHistogram(d, h.n, h.sum, h.cumulative())
	}
	gauge(c.running, float64(s.running))
	gauge(c.waiting, float64(s.waiting))
	gauge(c.kvUsage, s.kvUsage)
	gauge(c.cacheConfig, 1, c.cacheLabels...)
	counter(c.queries, s.m.prefixQueries)
	counter(c.hits, s.m.prefixHits)
	counter(c.prompt, s.m.promptTokens)
	counter(c.generation, s.m.generationTokens)
	counter(c.preempted, 0) // admission reserves all a request needs: nothing is preempted
	for _, r := range []string{FinishStop, FinishLength, FinishAbort} {
		counter(c.success, s.m.finished[r], r)
	}
	hist(c.ttft, s.m.ttft)
	hist(c.itl, s.m.itl)
	hist(c.e2e, s.m.e2e)
	hist(c.queue, s.m.queue)
	hist(c.prefill, s.m.prefill)
	hist(c.decode, s.m.decode)
}
