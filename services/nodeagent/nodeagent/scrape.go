package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

// Metric-name mappings of Config.Metrics (backend.metrics): which
// Prometheus names the model server uses for its load.
const (
	MetricsVLLM     = "vllm"
	MetricsSGLang   = "sglang"
	MetricsLlamaCpp = "llamacpp"
	MetricsTGI      = "tgi"
	// MetricsOff as backend.metrics_url turns the scrape off.
	MetricsOff = "off"
)

// Scrape of the model server's load (DESIGN §9.1).
const (
	DefaultMetrics         = MetricsVLLM
	DefaultMetricsInterval = 250 * time.Millisecond
	MinMetricsInterval     = 50 * time.Millisecond
	MaxMetricsInterval     = 5 * time.Second
	// MaxMetricsBytes bounds one scrape's body: vLLM's is ~100 KiB.
	MaxMetricsBytes = 4 << 20
	// metricsFreshIntervals: a load older than this many intervals is no
	// longer advertised (in heartbeats or acks).
	metricsFreshIntervals = 2
)

// hdrServerLoad is the ack header carrying the load.
const hdrServerLoad = record.HdrServerLoad

// serverMetrics is one mapping: for each load field the metric names
// tried in order (the first one present counts; later ones are older
// server versions' names). Values are summed over label sets (vLLM labels
// by model_name and engine), ratios averaged.
type serverMetrics struct {
	running, waiting []string
	kvUsage          []string
	// prefix are hit and query counters, as pairs: the hit rate is
	// Δhits/Δqueries between scrapes.
	prefix []counterPair
	// hitRate is a gauge of the hit rate, read when no counter pair is
	// present.
	hitRate []string
}

type counterPair struct{ hits, queries string }

var serverMetricSets = map[string]serverMetrics{
	MetricsVLLM: {
		running: []string{"vllm:num_requests_running"},
		waiting: []string{"vllm:num_requests_waiting"},
		kvUsage: []string{"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}, // 0–1 despite "perc"
		prefix: []counterPair{ // prometheus_client exposes counter X as X_total
			{"vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"},
			{"vllm:prefix_cache_hits", "vllm:prefix_cache_queries"},
			{"vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"},
			{"vllm:gpu_prefix_cache_hits", "vllm:gpu_prefix_cache_queries"},
		},
		hitRate: []string{"vllm:gpu_prefix_cache_hit_rate"},
	},
	MetricsSGLang: {
		running: []string{"sglang:num_running_reqs"},
		waiting: []string{"sglang:num_queue_reqs"},
		kvUsage: []string{"sglang:token_usage"},
		hitRate: []string{"sglang:cache_hit_rate"},
	},
	MetricsLlamaCpp: {
		running: []string{"llamacpp:requests_processing"},
		waiting: []string{"llamacpp:requests_deferred"},
		kvUsage: []string{"llamacpp:kv_cache_usage_ratio"}, // gone from newer builds: then 0
	},
	MetricsTGI: {
		running: []string{"tgi_batch_current_size"},
		waiting: []string{"tgi_queue_size"},
	},
}

// MetricsNames lists the mappings Config.Metrics accepts.
func MetricsNames() []string {
	return []string{MetricsVLLM, MetricsSGLang, MetricsLlamaCpp, MetricsTGI}
}

func checkMetrics(name string) error {
	if _, ok := serverMetricSets[name]; !ok {
		return fmt.Errorf("backend.metrics %q is not one of %s", name, strings.Join(MetricsNames(), ", "))
	}
	return nil
}

func checkMetricsInterval(d time.Duration) error {
	if d != 0 && (d < MinMetricsInterval || d > MaxMetricsInterval) {
		return fmt.Errorf("backend.metrics_interval must be 0 (default %s) or in [%s, %s], got %s",
			DefaultMetricsInterval, MinMetricsInterval, MaxMetricsInterval, d)
	}
	return nil
}

func checkMetricsURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("backend.metrics_url %q is not an http(s) URL (or %q)", servicecmd.Redact(v), MetricsOff)
	}
	return nil
}

// DefaultMetricsURL is where an OpenAI-compatible server at backendURL
// serves its Prometheus metrics: the URL without its /v1, plus /metrics
// ("http://h:8000/v1" → "http://h:8000/metrics"); "" when backendURL is
// not a URL.
func DefaultMetricsURL(backendURL string) string {
	u, err := url.Parse(strings.TrimSpace(backendURL))
	if err != nil || u.Host == "" {
		return ""
	}
	u.Path = strings.TrimSuffix(strings.TrimRight(u.Path, "/"), "/v1") + "/metrics"
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return u.String()
}

// serverSample is what one scrape read, before it becomes a load.
type serverSample struct {
	running, waiting float64
	kvUsage          float64
	hits, queries    float64
	counters         bool // a prefix counter pair was present
	hitRate          float64
	rateGauge        bool // the hit-rate gauge was present
}

// parseServerMetrics reads a Prometheus text exposition. Only the lines of
// the mapping's metrics are parsed (with expfmt), so the rest of a large
// body costs a line scan and cannot spoil the scrape. The running and
// waiting metrics must be present: without them the mapping is wrong.
func parseServerMetrics(body []byte, m serverMetrics) (serverSample, error) {
	var sm serverSample
	want := map[string]bool{}
	for _, names := range [][]string{m.running, m.waiting, m.kvUsage, m.hitRate} {
		for _, n := range names {
			want[n] = true
		}
	}
	for _, p := range m.prefix {
		want[p.hits], want[p.queries] = true, true
	}
	kept := filterSamples(body, want)
	p := expfmt.NewTextParser(pmodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(kept))
	if err != nil {
		return sm, fmt.Errorf("metrics text: %w", err)
	}
	var ok bool
	if sm.running, _, ok = sumOf(fams, m.running); !ok {
		return sm, fmt.Errorf("no %s in the metrics (is backend.metrics right?)", strings.Join(m.running, " or "))
	}
	if sm.waiting, _, ok = sumOf(fams, m.waiting); !ok {
		return sm, fmt.Errorf("no %s in the metrics (is backend.metrics right?)", strings.Join(m.waiting, " or "))
	}
	sm.kvUsage, _ = meanOf(fams, m.kvUsage)
	for _, cp := range m.prefix {
		hits, _, okH := sumOf(fams, []string{cp.hits})
		queries, _, okQ := sumOf(fams, []string{cp.queries})
		if okH && okQ {
			sm.hits, sm.queries, sm.counters = hits, queries, true
			break
		}
	}
	sm.hitRate, sm.rateGauge = meanOf(fams, m.hitRate)
	return sm, nil
}

// filterSamples keeps the sample lines whose metric name is wanted (no
// comments: every kept sample parses as untyped).
func filterSamples(body []byte, want map[string]bool) []byte {
	var out []byte
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimLeft(line, " \t")
		end := bytes.IndexAny(line, "{ \t")
		if end <= 0 || !want[string(line[:end])] {
			continue
		}
		out = append(out, line...)
		out = append(out, '\n')
	}
	return out
}

// sumOf sums the finite samples of the first family of names present; n
// is how many were summed, ok whether a family was present.
func sumOf(fams map[string]*dto.MetricFamily, names []string) (sum float64, n int, ok bool) {
	for _, name := range names {
		f, present := fams[name]
		if !present {
			continue
		}
		for _, m := range f.GetMetric() {
			v := valueOf(m)
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			sum += v
			n++
		}
		return sum, n, true
	}
	return 0, 0, false
}

// valueOf is a sample's value, whatever its type (filterSamples leaves
// them untyped).
func valueOf(m *dto.Metric) float64 {
	switch {
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return math.NaN()
}

// meanOf is the mean of the first family present; ok only with a finite
// sample.
func meanOf(fams map[string]*dto.MetricFamily, names []string) (float64, bool) {
	sum, n, ok := sumOf(fams, names)
	if !ok || n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

// loadState turns successive samples into loads: the hit rate from
// counters needs the previous scrape.
type loadState struct {
	prevHits, prevQueries float64
	havePrev              bool
	rate                  float64
}

// next is the load of sm. The hit rate is Δhits/Δqueries since the
// previous scrape; the first scrape, and one after a counter went down
// (the server restarted), count from zero, like Prometheus' rate(). With
// no queries since the previous scrape the rate stays as it was.
func (st *loadState) next(sm serverSample, at time.Time) record.ServerLoad {
	switch {
	case sm.counters:
		dh, dq := sm.hits-st.prevHits, sm.queries-st.prevQueries
		if !st.havePrev || dh < 0 || dq < 0 {
			dh, dq = sm.hits, sm.queries
		}
		st.prevHits, st.prevQueries, st.havePrev = sm.hits, sm.queries, true
		if dq > 0 {
			st.rate = clamp01(dh / dq)
		}
	case sm.rateGauge:
		st.rate, st.havePrev = clamp01(sm.hitRate), false
	}
	return record.ServerLoad{Running: requests(sm.running), Waiting: requests(sm.waiting),
		KVUsage: clamp01(sm.kvUsage), PrefixHitRate: st.rate, ScrapedAt: at.UTC()}
}

func clamp01(v float64) float64 {
	if !(v > 0) { // NaN too
		return 0
	}
	return min(v, 1)
}

func requests(v float64) int {
	if !(v > 0) {
		return 0
	}
	return int(min(math.Round(v), record.MaxServerRequests))
}

// scraper reads the model server's load every interval on the agent's
// loops group. A server that is down keeps its last load, which is
// advertised until it is metricsFreshIntervals old.
type scraper struct {
	url, shownURL string // shownURL without credentials
	mapping       string
	metrics       serverMetrics
	interval      time.Duration
	transport     *http.Transport
	client        *http.Client
	log           zerolog.Logger

	busy    sync.Mutex // one scrape at a time; a tick while one runs is skipped
	state   loadState  // under busy
	logged  bool       // under busy: a state was logged
	failing bool       // under busy: the state last logged

	mu   sync.Mutex
	last record.ServerLoad
	at   time.Time // when last was scraped, monotonic
}

// newScraper is nil when cfg has no metrics URL. cfg has its defaults.
func newScraper(cfg Config, log zerolog.Logger) *scraper {
	if cfg.MetricsURL == "" {
		return nil
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}
	return &scraper{url: cfg.MetricsURL, shownURL: servicecmd.Redact(cfg.MetricsURL), mapping: cfg.Metrics,
		metrics: serverMetricSets[cfg.Metrics], interval: cfg.MetricsInterval, transport: tr,
		// The timeout is the interval: a scrape never overlaps the next.
		client: &http.Client{Transport: tr, Timeout: cfg.MetricsInterval}, log: log}
}

// start scrapes at once, then every interval, until g stops.
func (sc *scraper) start(g *lifecycle.Group) {
	g.Go(func(ctx context.Context) {
		sc.tick(ctx, time.Now())
		<-ctx.Done()
		sc.transport.CloseIdleConnections()
	})
	g.Every(sc.interval, sc.tick)
}

func (sc *scraper) tick(ctx context.Context, _ time.Time) {
	if !sc.busy.TryLock() {
		return
	}
	defer sc.busy.Unlock()
	l, err := sc.scrape(ctx)
	if ctx.Err() != nil {
		return // stopping: not the server's fault
	}
	if err == nil {
		sc.mu.Lock()
		sc.last, sc.at = l, time.Now()
		sc.mu.Unlock()
	}
	// Once per change of state, not per scrape.
	switch {
	case err != nil && (!sc.logged || !sc.failing):
		sc.log.Warn().Err(err).Str("metrics_url", sc.shownURL).
			Msgf("model server load: scrape failed; the last load is advertised until %d intervals old", metricsFreshIntervals)
	case err == nil && (!sc.logged || sc.failing):
		sc.log.Info().Str("metrics_url", sc.shownURL).Str("metrics", sc.mapping).Dur("interval", sc.interval).
			Msg("model server load: scraping")
	}
	sc.logged, sc.failing = true, err != nil
}

// scrape reads the endpoint once. Caller holds busy.
func (sc *scraper) scrape(ctx context.Context) (record.ServerLoad, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sc.url, nil)
	if err != nil {
		return record.ServerLoad{}, fmt.Errorf("scrape %s: %w", sc.shownURL, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := sc.client.Do(req)
	if err != nil {
		return record.ServerLoad{}, fmt.Errorf("scrape: %w", err) // the error names the URL, without a password
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keep the connection
		return record.ServerLoad{}, fmt.Errorf("scrape %s: HTTP %s", sc.shownURL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxMetricsBytes+1))
	if err == nil && len(body) > MaxMetricsBytes {
		err = errors.New("body larger than 4 MiB")
	}
	if err != nil {
		return record.ServerLoad{}, fmt.Errorf("scrape %s: %w", sc.shownURL, err)
	}
	sm, err := parseServerMetrics(body, sc.metrics)
	if err != nil {
		return record.ServerLoad{}, fmt.Errorf("scrape %s: %w", sc.shownURL, err)
	}
	return sc.state.next(sm, time.Now()), nil
}

// current is the latest load while it is fresh, else nil (also on a nil
// scraper: the node does not scrape).
func (sc *scraper) current(now time.Time) *record.ServerLoad {
	if sc == nil {
		return nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.at.IsZero() || now.Sub(sc.at) > metricsFreshIntervals*sc.interval {
		return nil
	}
	l := sc.last
	return &l
}

// header is current as the Fed-Server-Load value; ok false when there is
// nothing fresh to advertise.
func (sc *scraper) header(now time.Time) (v string, ok bool) {
	l := sc.current(now)
	if l == nil {
		return "", false
	}
	return l.Header(), true
}
