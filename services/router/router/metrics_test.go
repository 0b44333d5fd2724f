package router

import (
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func scrape(t *testing.T, s *Service) metricstest.Families {
	t.Helper()
	reg, err := metrics.ForService("router", "r1", s)
	require.NoError(t, err)
	return metricstest.Scrape(t, metrics.Handler(reg))
}

// The router's series follow its counters: requests, busy acks, retries on
// another node, decisions by strategy and deciding policy, the KV watch
// lag; a model a caller made up labels nothing.
func TestMetricsRouter(t *testing.T) {
	// the composite strategy: it tries the busy node every time (expected_ttft learns to avoid it)
	e := newEnv(t, func(c *Config) { c.Policy.Strategy = record.StrategyLeastLatency })
	e.fakeNode("fast", always(wire.StatusBusy))
	e.fakeNode("slow", always(wire.StatusAccepted))
	e.addNode(tnode{id: "fast", region: "eu", health: healthy(10)})
	e.addNode(tnode{id: "slow", region: "eu", health: healthy(900)})
	e.waitEligible("fast", "slow")

	const n = 3
	for range n {
		resp, err := e.infer(client.Request{})
		require.NoError(t, err)
		assert.Equal(t, "slow", resp.Node)
	}
	_, err := e.infer(client.Request{Model: "bogus-model-from-a-caller"})
	require.Equal(t, wire.CodeNotFound, codeOf(t, err))

	// Published decisions are counted when they are added, before the batch goes out.
	natsembed.Eventually(t, 0, func() error {
		got := scrape(t, e.svc).Value("fedmesh_router_placed_total", nil)
		return natsembed.Check(got == n, "placed %v, want %d", got, n)
	})
	m := scrape(t, e.svc)
	only := metricstest.Labels{metrics.LabelService: "router", metrics.LabelInstance: "r1"}
	for name, want := range map[string]float64{
		"fedmesh_router_requests_total":    n + 1,
		"fedmesh_router_placed_total":      n,
		"fedmesh_router_unplaced_total":    1,
		"fedmesh_router_retries_total":     0, // busy is not a failed attempt: the request just moves on
		"fedmesh_router_takeovers_total":   0,
		"fedmesh_router_nodes":             2,
		"fedmesh_router_in_flight":         0,
		"fedmesh_router_max_in_flight":     DefaultMaxInFlight,
		"fedmesh_router_max_queue":         DefaultMaxQueue,
		"fedmesh_router_queue_length":      0,
		"fedmesh_router_lost_finals_total": 0,
	} {
		got, ok := m.Sum(name, only)
		if assert.True(t, ok, "%s missing", name) {
			assert.Equal(t, want, got, name)
		}
	}
	assert.GreaterOrEqual(t, m.Value("fedmesh_router_busy_total", nil), 1.0, "fast answered busy (then the router let it be)")
	strategy := e.svc.policy.Load().Strategy
	assert.Equal(t, float64(n), m.Value("fedmesh_router_decisions_total", metricstest.Labels{"strategy": strategy}))
	assert.Equal(t, []string{strategy}, m.LabelValues("fedmesh_router_decisions_total", "strategy"))
	assert.NotContains(t, m.LabelValues("fedmesh_router_decisions_total", "decided_by"), "", "the only candidate reads none")
	assert.Equal(t, 1.0, m.Value("fedmesh_router_strategy", metricstest.Labels{"strategy": strategy}))
	assert.Equal(t, "SUMMARY", m.Type("fedmesh_router_queue_wait_seconds"))
	assert.Equal(t, "HISTOGRAM", m.Type(metrics.NameWatchLag))
	for _, b := range []string{e.kv.Catalog.Bucket(), e.kv.Health.Bucket()} {
		assert.Positive(t, m.Value(metrics.NameWatchLag, metricstest.Labels{"bucket": b}), "entries written after start: %s", b)
	}
	for _, name := range m.Names() {
		for _, s := range m.Series(name) {
			for k, v := range s.Labels {
				assert.NotContains(t, v, "bogus", "%s{%s=%q}", name, k, v)
			}
		}
	}
}

func TestMetricsRouterLint(t *testing.T) {
	e := newEnv(t, nil)
	e.fakeNode("n", always(wire.StatusAccepted))
	e.addNode(tnode{id: "n", region: "eu", health: healthy(10)})
	e.waitEligible("n")
	_, err := e.infer(client.Request{})
	require.NoError(t, err)
	problems, err := testutil.CollectAndLint(e.svc.Metrics())
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
}

func TestDecisionCountsBounded(t *testing.T) {
	var c decisionCounts
	c.add(&record.Decision{Strategy: record.StrategyRoundRobin, DecidedBy: "strategy"})
	c.add(&record.Decision{Strategy: record.StrategyRoundRobin, DecidedBy: "strategy"})
	c.add(&record.Decision{Strategy: record.StrategyRoundRobin, DecidedBy: ""})
	for i := range maxDecisionSeries + 5 {
		c.add(&record.Decision{Strategy: record.StrategyPowerOfTwo, DecidedBy: "bug-" + strconv.Itoa(i)})
	}
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(collectorFunc(c.collect)))
	m := metricstest.Scrape(t, metrics.Handler(reg))
	assert.Equal(t, 2.0, m.Value("fedmesh_router_decisions_total", metricstest.Labels{"strategy": record.StrategyRoundRobin, "decided_by": "strategy"}))
	assert.Equal(t, 1.0, m.Value("fedmesh_router_decisions_total", metricstest.Labels{"strategy": record.StrategyRoundRobin, "decided_by": "none"}))
	assert.Len(t, m.Series("fedmesh_router_decisions_total"), maxDecisionSeries+1, "the pairs past the bound share one series")
	// two pairs before, maxDecisionSeries-2 bug pairs fit, the other 7 decisions share "other"
	assert.Equal(t, 7.0, m.Value("fedmesh_router_decisions_total", metricstest.Labels{"strategy": metrics.Other, "decided_by": metrics.Other}))
}

// collectorFunc is a collector of descDecision only.
type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- descDecision }
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }
