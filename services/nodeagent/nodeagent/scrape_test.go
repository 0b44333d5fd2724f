package nodeagent

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// metricsServer is a model server's /metrics: the body set last, or an
// HTTP error status while failing.
type metricsServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   string
	status int
}

func newMetricsServer(t *testing.T, body string) *metricsServer {
	m := &metricsServer{body: body, status: http.StatusOK}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		m.mu.Lock()
		body, status := m.body, m.status
		m.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *metricsServer) set(body string) {
	m.mu.Lock()
	m.body, m.status = body, http.StatusOK
	m.mu.Unlock()
}

func (m *metricsServer) fail(status int) {
	m.mu.Lock()
	m.status = status
	m.mu.Unlock()
}

func (m *metricsServer) metricsURL() string { return m.URL + "/metrics" }

// vllmText is a vLLM V1 exposition with two engines (data parallel), as
// prometheus_client writes it: counters as X_total with X_created, a
// histogram, and a line no parser should have to understand.
func vllmText(run0, run1, wait0, kv0, kv1, hits0, q0, hits1, q1 float64) string {
	const mn = `model_name="meta-llama/Llama-3.1-8B-Instruct"`
	return fmt.Sprintf(`# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",%[1]s} %[2]v
vllm:num_requests_running{engine="1",%[1]s} %[3]v
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",%[1]s} %[4]v
vllm:num_requests_waiting{engine="1",%[1]s} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",%[1]s} %[5]v
vllm:kv_cache_usage_perc{engine="1",%[1]s} %[6]v
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",%[1]s} %[8]v
vllm:prefix_cache_queries_total{engine="1",%[1]s} %[10]v
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",%[1]s} 1.7589e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",%[1]s} %[7]v
vllm:prefix_cache_hits_total{engine="1",%[1]s} %[9]v
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",%[1]s} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",%[1]s} 12.0
vllm:time_to_first_token_seconds_count{engine="0",%[1]s} 12.0
vllm:time_to_first_token_seconds_sum{engine="0",%[1]s} 1.53
this line is not Prometheus text {{{
`, mn, run0, run1, wait0, kv0, kv1, hits0, q0, hits1, q1)
}

const vllmOldText = `# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 6.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 2.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.8
# TYPE vllm:gpu_prefix_cache_hit_rate gauge
vllm:gpu_prefix_cache_hit_rate{model_name="m"} 0.66
`

// Both the current and the deprecated counters (--show-hidden-metrics):
// the current ones count.
const vllmBothCountersText = `vllm:num_requests_running{model_name="m"} 1
vllm:num_requests_waiting{model_name="m"} 0
vllm:prefix_cache_queries_total{model_name="m"} 100
vllm:prefix_cache_hits_total{model_name="m"} 40
vllm:gpu_prefix_cache_queries_total{model_name="m"} 200
vllm:gpu_prefix_cache_hits_total{model_name="m"} 10
`

const vllmDeprecatedCountersText = `vllm:num_requests_running 1
vllm:num_requests_waiting 0
vllm:gpu_prefix_cache_queries_total 200
vllm:gpu_prefix_cache_hits_total 50
`

const sglangText = `# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP sglang:token_usage The token usage
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.28
# HELP sglang:cache_hit_rate The cache hit rate
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.007507552643049313
# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
`

const llamacppText = `# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 6886
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.62
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 7
`

// Newer llama.cpp builds dropped the KV gauge.
const llamacppNoKVText = `llamacpp:requests_processing 1
llamacpp:requests_deferred 0
`

const tgiText = `# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 4
# TYPE tgi_queue_size gauge
tgi_queue_size 3
# TYPE tgi_request_count counter
tgi_request_count 100
`

// scraperFor scrapes url with the mapping; a long interval, so the HTTP
// timeout never decides a unit test.
func scraperFor(t *testing.T, url, mapping string) *scraper {
	t.Helper()
	cfg := Config{MetricsURL: url, Metrics: mapping, MetricsInterval: MaxMetricsInterval}.withDefaults()
	require.NoError(t, checkServerMetrics(cfg.MetricsURL, cfg.Metrics, cfg.MetricsInterval))
	return newScraper(cfg, natsembed.Logger(t))
}

type load struct {
	r, w   int
	kv, ph float64
}

func loadOf(l record.ServerLoad) load {
	return load{l.Running, l.Waiting, l.KVUsage, l.PrefixHitRate}
}

// near: the same load, ratios within float rounding.
func (a load) near(b load) bool {
	return a.r == b.r && a.w == b.w && math.Abs(a.kv-b.kv) < 1e-9 && math.Abs(a.ph-b.ph) < 1e-9
}

// Each mapping against its server's text, scrape after scrape: sums over
// label sets, ratios averaged, the hit rate from counter deltas (first
// scrape: totals; a reset: totals since the reset; no new queries: kept).
func TestScrapeMappings(t *testing.T) {
	cases := []struct {
		name, mapping string
		bodies        []string
		want          []load
	}{
		{"vllm counters and resets", MetricsVLLM, []string{
			vllmText(2, 1, 1, 0.5, 0.34, 30, 60, 10, 40),  // first: 40/100 since start
			vllmText(0, 0, 0, 0.1, 0.1, 70, 105, 15, 45),  // Δ 45/50
			vllmText(4, 4, 9, 1.5, 0.9, 70, 105, 15, 45),  // no new queries: kept; kv clamped per mean
			vllmText(1, 0, 0, 0.02, 0.02, 1, 4, 0, 0),     // engines restarted: 1/4 since then
			vllmText(1, 0, 0, 0.02, 0.02, 11, 14, 10, 20), // Δ 20/30
		}, []load{
			{3, 1, 0.42, 0.4},
			{0, 0, 0.1, 0.9},
			{8, 9, 1, 0.9},
			{1, 0, 0.02, 0.25},
			{1, 0, 0.02, 20.0 / 30},
		}},
		{"vllm older names", MetricsVLLM, []string{vllmOldText}, []load{{6, 2, 0.8, 0.66}}},
		{"vllm current counters win", MetricsVLLM, []string{vllmBothCountersText}, []load{{1, 0, 0, 0.4}}},
		{"vllm deprecated counters", MetricsVLLM, []string{vllmDeprecatedCountersText}, []load{{1, 0, 0, 0.25}}},
		{"sglang", MetricsSGLang, []string{sglangText}, []load{{5, 2, 0.28, 0.007507552643049313}}},
		{"llama.cpp", MetricsLlamaCpp, []string{llamacppText, llamacppNoKVText}, []load{{2, 7, 0.62, 0}, {1, 0, 0, 0}}},
		{"tgi", MetricsTGI, []string{tgiText}, []load{{4, 3, 0, 0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms := newMetricsServer(t, "")
			sc := scraperFor(t, ms.metricsURL(), tc.mapping)
			for i, body := range tc.bodies {
				ms.set(body)
				before := time.Now()
				l, err := sc.scrape(context.Background())
				require.NoError(t, err, "scrape %d", i)
				got := loadOf(l)
				assert.Equal(t, tc.want[i].r, got.r, "scrape %d running", i)
				assert.Equal(t, tc.want[i].w, got.w, "scrape %d waiting", i)
				assert.InDelta(t, tc.want[i].kv, got.kv, 1e-9, "scrape %d kv_usage", i)
				assert.InDelta(t, tc.want[i].ph, got.ph, 1e-9, "scrape %d prefix_hit_rate", i)
				assert.False(t, l.ScrapedAt.Before(before.Truncate(time.Millisecond)), "scraped_at is the scrape's time")
				require.NoError(t, l.Validate())
			}
		})
	}
}

// What a scrape refuses, each naming why.
func TestScrapeErrors(t *testing.T) {
	cases := []struct {
		name, mapping, body string
		status              int
		says                string
	}{
		{"wrong mapping", MetricsVLLM, sglangText, 200, "no vllm:num_requests_running"},
		{"no waiting", MetricsTGI, "tgi_batch_current_size 4\n", 200, "no tgi_queue_size"},
		{"bad sample of a wanted metric", MetricsTGI, "tgi_batch_current_size{x=} 4\ntgi_queue_size 1\n", 200, "metrics text"},
		{"not a number", MetricsTGI, "tgi_batch_current_size four\ntgi_queue_size 1\n", 200, "metrics text"},
		{"empty", MetricsLlamaCpp, "", 200, "no llamacpp:requests_processing"},
		{"server error", MetricsVLLM, "", 503, "HTTP 503"},
		{"too large", MetricsTGI, "tgi_batch_current_size 1\ntgi_queue_size 1\n" + strings.Repeat("#", MaxMetricsBytes), 200, "larger than 4 MiB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms := newMetricsServer(t, tc.body)
			ms.fail(tc.status)
			sc := scraperFor(t, ms.metricsURL(), tc.mapping)
			_, err := sc.scrape(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.says)
			assert.Contains(t, err.Error(), ms.URL, "the error names the endpoint")
		})
	}
	t.Run("credentials never shown", func(t *testing.T) {
		ms := newMetricsServer(t, "")
		ms.fail(http.StatusUnauthorized)
		withPass := strings.Replace(ms.metricsURL(), "http://", "http://scraper:s3cret@", 1)
		_, err := scraperFor(t, withPass, MetricsVLLM).scrape(context.Background())
		require.ErrorContains(t, err, "HTTP 401")
		ms.Close()
		_, err = scraperFor(t, withPass, MetricsVLLM).scrape(context.Background())
		require.Error(t, err, "server gone")
		assert.NotContains(t, err.Error(), "s3cret")
		assert.NotContains(t, checkMetricsURL("ftp://scraper:s3cret@h/metrics").Error(), "s3cret")
	})
	t.Run("not finite", func(t *testing.T) {
		ms := newMetricsServer(t, "tgi_batch_current_size NaN\ntgi_queue_size +Inf\n")
		l, err := scraperFor(t, ms.metricsURL(), MetricsTGI).scrape(context.Background())
		require.NoError(t, err)
		assert.Equal(t, load{}, loadOf(l), "NaN and Inf samples count as absent")
	})
}

// A server that goes away: the last load is kept but advertised only while
// it is at most 2 intervals old; the failure and the recovery are each
// logged once, however many scrapes fail.
func TestScrapeStaleAndLoggedOncePerChange(t *testing.T) {
	ms := newMetricsServer(t, tgiText)
	logs, log := natsembed.NewLogBuffer(t)
	cfg := Config{MetricsURL: ms.metricsURL(), Metrics: MetricsTGI, MetricsInterval: time.Second}.withDefaults()
	sc := newScraper(cfg, log)
	ctx := context.Background()

	assert.Nil(t, sc.current(time.Now()), "nothing before the first scrape")
	_, ok := sc.header(time.Now())
	assert.False(t, ok)

	sc.tick(ctx, time.Now())
	scraped := time.Now()
	l := sc.current(scraped)
	require.NotNil(t, l)
	assert.True(t, load{4, 3, 0, 0}.near(loadOf(*l)), "%+v", *l)
	v, ok := sc.header(scraped)
	require.True(t, ok)
	assert.Equal(t, "r=4;w=3;kv=0.000;ph=0.000", v)

	ms.fail(http.StatusServiceUnavailable)
	for range 5 {
		sc.tick(ctx, time.Now())
	}
	require.NotNil(t, sc.current(scraped.Add(time.Second)), "kept while fresh")
	assert.Nil(t, sc.current(scraped.Add(2*time.Second+50*time.Millisecond)), "stale after 2 intervals")
	_, ok = sc.header(scraped.Add(3 * time.Second))
	assert.False(t, ok)

	ms.set(llamacppText) // a different server came up: its names are wrong for tgi
	sc.tick(ctx, time.Now())
	ms.set(tgiText)
	sc.tick(ctx, time.Now())
	sc.tick(ctx, time.Now())
	require.NotNil(t, sc.current(time.Now()), "advertised again")

	out := logs.String()
	assert.Equal(t, 2, strings.Count(out, "model server load: scraping"), "start and recovery: %s", out)
	assert.Equal(t, 1, strings.Count(out, "scrape failed"), "one line for the whole outage: %s", out)

	var nilScraper *scraper
	assert.Nil(t, nilScraper.current(time.Now()), "a node that does not scrape advertises nothing")
}

// heartbeats reads the node's heartbeats.
func heartbeats(t *testing.T, nc *nats.Conn, node string) func() record.Heartbeat {
	sub, err := nc.SubscribeSync(subject.Default.Heartbeat(node))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() record.Heartbeat {
		t.Helper()
		m, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err, "no heartbeat")
		hb, err := record.DecodeHeartbeat(m.Subject, m.Data)
		require.NoError(t, err)
		return hb
	}
}

// A node whose scrape works puts its server's load in every heartbeat and
// in accepted and busy acks; when the server goes away both stop once the
// last scrape is stale, and come back with it.
func TestServerLoadInHeartbeatsAndAcks(t *testing.T) {
	ms := newMetricsServer(t, vllmText(2, 1, 1, 0.5, 0.34, 30, 60, 10, 40))
	r := newRig(t)
	g := newGate()
	cfg := testConfig("n1", g)
	cfg.MaxConcurrency = 1
	cfg.MetricsURL = ms.metricsURL()
	cfg.MetricsInterval = 100 * time.Millisecond
	next := heartbeats(t, r.nc, "n1")
	r.agent(cfg)

	want := load{3, 1, 0.42, 0.4}
	natsembed.Eventually(t, 5*time.Second, func() error {
		hb := next()
		return natsembed.Check(hb.Server != nil, "heartbeat without server load")
	})
	for range 3 { // every heartbeat, not only some
		hb := next()
		require.NotNil(t, hb.Server)
		assert.True(t, want.near(loadOf(*hb.Server)), "heartbeat server load %+v, want %+v", *hb.Server, want)
		assert.WithinDuration(t, time.Now(), hb.Server.ScrapedAt, 2*time.Second)
	}

	ackLoad := func(c *call) (load, bool) {
		v := c.ack.Header.Get(record.HdrServerLoad)
		if v == "" {
			return load{}, false
		}
		l, err := record.ParseServerLoad(v)
		require.NoError(t, err, "header %q", v)
		return loadOf(l), true
	}
	wantHdr := load{3, 1, 0.42, 0.4} // the header's 3 decimals are exact here
	accepted := r.dispatch("n1", "hello")
	require.Equal(t, wire.StatusAccepted, accepted.status)
	g.waitStarted(t, 1)
	got, ok := ackLoad(accepted)
	require.True(t, ok, "accepted ack carries %s", record.HdrServerLoad)
	assert.True(t, wantHdr.near(got), "accepted ack load %+v, want %+v", got, wantHdr)
	busy := r.dispatch("n1", "hello")
	require.Equal(t, wire.StatusBusy, busy.status)
	got, ok = ackLoad(busy)
	require.True(t, ok, "busy ack carries %s", record.HdrServerLoad)
	assert.True(t, wantHdr.near(got), "busy ack load %+v, want %+v", got, wantHdr)
	close(g.release)
	accepted.read(t, 5*time.Second)

	ms.fail(http.StatusServiceUnavailable) // the model server's metrics go away
	natsembed.Eventually(t, 5*time.Second, func() error {
		hb := next()
		return natsembed.Check(hb.Server == nil, "stale load still in heartbeats: %+v", hb.Server)
	})
	c := r.dispatch("n1", "hello")
	require.Equal(t, wire.StatusAccepted, c.status)
	_, ok = ackLoad(c)
	assert.False(t, ok, "no %s from a stale scrape", record.HdrServerLoad)
	c.read(t, 5*time.Second)

	ms.set(vllmText(0, 0, 0, 0.1, 0.1, 70, 105, 15, 45)) // back, with new numbers
	natsembed.Eventually(t, 5*time.Second, func() error {
		hb := next()
		return natsembed.Check(hb.Server != nil && loadOf(*hb.Server).near(load{0, 0, 0.1, 0.9}),
			"heartbeat server load %+v", hb.Server)
	})
	natsembed.Eventually(t, 5*time.Second, func() error {
		c := r.dispatch("n1", "hello")
		c.read(t, 5*time.Second)
		got, ok := ackLoad(c)
		return natsembed.Check(ok && got.near(load{0, 0, 0.1, 0.9}), "ack server load %+v %v", got, ok)
	})
}

// Without a metrics URL (the synthetic backend's default) nothing is
// scraped: heartbeats have no server field and acks no Fed-Server-Load.
func TestServerLoadAbsentWithoutScrape(t *testing.T) {
	r := newRig(t)
	next := heartbeats(t, r.nc, "n1")
	s, _ := r.agent(testConfig("n1", synthetic.New(synthetic.Config{})))
	require.Nil(t, s.load)
	for range 3 {
		assert.Nil(t, next().Server)
	}
	c := r.dispatch("n1", "hello")
	require.Equal(t, wire.StatusAccepted, c.status)
	assert.Empty(t, c.ack.Header.Get(record.HdrServerLoad))
	c.read(t, 5*time.Second)
}

func TestScrapeDefaultMetricsURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8000/v1":         "http://127.0.0.1:8000/metrics",
		"http://127.0.0.1:8000/v1/":        "http://127.0.0.1:8000/metrics",
		"http://127.0.0.1:8000":            "http://127.0.0.1:8000/metrics",
		"https://u:p@gpu:443/serve/v1?x=1": "https://u:p@gpu:443/serve/metrics",
		" http://h:1/ ":                    "http://h:1/metrics",
		"not a url":                        "",
	} {
		assert.Equal(t, want, DefaultMetricsURL(in), in)
	}
}

// The YAML keys backend.metrics_url, backend.metrics, backend.metrics_interval.
func TestScrapeConfig(t *testing.T) {
	base := "node_id: n1\nregion: r1\nmodels: [{model_id: m1, capabilities: [generate]}]\n"
	noEnv := func(string) (string, bool) { return "", false }
	for _, tc := range []struct {
		name, backend string
		url, metrics  string
		interval      time.Duration
	}{
		{"openai default", "{type: openai, url: 'http://127.0.0.1:8000/v1'}", "http://127.0.0.1:8000/metrics", MetricsVLLM, DefaultMetricsInterval},
		{"openai off", "{type: openai, url: 'http://h:8000/v1', metrics_url: 'off'}", "", MetricsVLLM, DefaultMetricsInterval},
		{"openai OFF unquoted", "{type: openai, url: 'http://h:8000/v1', metrics_url: OFF}", "", MetricsVLLM, DefaultMetricsInterval},
		{"openai empty", "{type: openai, url: 'http://h:8000/v1', metrics_url: ''}", "", MetricsVLLM, DefaultMetricsInterval},
		{"openai sglang", "{type: openai, url: 'http://h:30000/v1', metrics: sglang, metrics_interval: 100ms}", "http://h:30000/metrics", MetricsSGLang, 100 * time.Millisecond},
		{"openai own url", "{type: openai, url: 'http://h:8080', metrics_url: 'http://h:9090/metrics', metrics: llamacpp}", "http://h:9090/metrics", MetricsLlamaCpp, DefaultMetricsInterval},
		{"synthetic has none", "{type: synthetic}", "", MetricsVLLM, DefaultMetricsInterval},
		{"synthetic given one", "{metrics_url: 'http://h:1/metrics', metrics: tgi, metrics_interval: 5s}", "http://h:1/metrics", MetricsTGI, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := ParseFile([]byte(base + "backend: " + tc.backend + "\n"))
			require.NoError(t, err)
			c, err := fc.Config(noEnv)
			require.NoError(t, err)
			assert.Equal(t, tc.url, c.MetricsURL)
			assert.Equal(t, tc.metrics, c.Metrics)
			assert.Equal(t, tc.interval, c.MetricsInterval)
		})
	}
	for _, tc := range []struct{ name, backend, says string }{
		{"mapping", "{metrics: triton}", "backend.metrics"},
		{"interval too short", "{metrics_interval: 10ms}", "backend.metrics_interval"},
		{"interval too long", "{metrics_interval: 6s}", "backend.metrics_interval"},
		{"url", "{metrics_url: 'ftp://h/metrics'}", "backend.metrics_url"},
		{"url without host", "{type: openai, url: 'http://h:1/v1', metrics_url: 'http:///metrics'}", "backend.metrics_url"},
	} {
		t.Run("bad "+tc.name, func(t *testing.T) {
			_, err := ParseFile([]byte(base + "backend: " + tc.backend + "\n"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.says)
		})
	}
	t.Run("go config", func(t *testing.T) {
		c := testConfig("n1", synthetic.New(synthetic.Config{}))
		assert.Equal(t, DefaultMetrics, c.Metrics)
		assert.Equal(t, DefaultMetricsInterval, c.MetricsInterval)
		c.Metrics, c.MetricsInterval = "", 0 // zero: the defaults
		require.NoError(t, c.Validate())
		s, err := New(&nats.Conn{}, c, natsembed.Logger(t))
		require.NoError(t, err)
		assert.Equal(t, DefaultMetrics, s.cfg.Metrics)
		assert.Equal(t, DefaultMetricsInterval, s.cfg.MetricsInterval)
		for _, bad := range []func(*Config){
			func(c *Config) { c.MetricsURL = "localhost:8000/metrics" },
			func(c *Config) { c.Metrics = "VLLM" },
			func(c *Config) { c.MetricsInterval = -time.Second },
		} {
			c := testConfig("n1", synthetic.New(synthetic.Config{}))
			bad(&c)
			require.Error(t, c.Validate())
		}
	})
}

// FuzzScrapeParse: a model server's body is untrusted. Parsing never
// panics, and whatever it accepts becomes a load that validates, scrape
// after scrape.
func FuzzScrapeParse(f *testing.F) {
	for _, s := range []string{vllmText(2, 1, 1, 0.5, 0.34, 30, 60, 10, 40), vllmOldText, sglangText, llamacppText, tgiText,
		"", "vllm:num_requests_running 1e300\nvllm:num_requests_waiting -4\nvllm:kv_cache_usage_perc 7\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, name := range MetricsNames() {
			var st loadState
			sm, err := parseServerMetrics(body, serverMetricSets[name])
			if err != nil {
				continue
			}
			for range 2 {
				l := st.next(sm, time.Now())
				if err := l.Validate(); err != nil {
					t.Fatalf("%s: accepted a load that does not validate: %v (%+v)", name, err, l)
				}
				if _, err := record.ParseServerLoad(l.Header()); err != nil {
					t.Fatalf("%s: header %q does not parse: %v", name, l.Header(), err)
				}
				sm.hits, sm.queries = sm.hits/2, sm.queries*2 // a second scrape, counters moved
			}
		}
	})
}
