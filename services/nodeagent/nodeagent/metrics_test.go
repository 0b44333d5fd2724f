package nodeagent

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func scrape(t *testing.T, s *Service) metricstest.Families {
	t.Helper()
	reg, err := metrics.ForService("nodeagent", s.cfg.NodeID, s)
	require.NoError(t, err)
	return metricstest.Scrape(t, metrics.Handler(reg))
}

// The GenAI histograms follow the requests the node finished, by model and
// operation, failures with their error_type; the load gauges follow what
// is in flight.
func TestMetricsNodeAgent(t *testing.T) {
	r := newRig(t)
	const tokens = 5
	good, _ := r.agent(testConfig("n1", synthetic.New(synthetic.Config{Tokens: tokens, TTFT: 20 * time.Millisecond, TokenDelay: 5 * time.Millisecond})))
	bad, _ := r.agent(testConfig("n2", synthetic.New(synthetic.Config{FailureRate: 1})))

	for _, opts := range [][]dispatchOpt{{stream, model("m1")}, {model("m1")}, {capab(wire.CapCode)}} {
		c := r.dispatch("n1", "hi", opts...)
		require.Equal(t, wire.StatusAccepted, c.status)
		require.Zero(t, codeOf(c.read(t, 5*time.Second).final))
	}
	c := r.dispatch("n2", "hi")
	require.Equal(t, wire.StatusAccepted, c.status)
	require.Equal(t, wire.CodeInternal, codeOf(c.read(t, 5*time.Second).final))
	refused := r.dispatch("n1", "hi", model("bogus-model-from-a-caller"))
	require.NotEqual(t, wire.StatusAccepted, refused.status)

	var m metricstest.Families
	natsembed.Eventually(t, 0, func() error { // the outcome is built right after the final is sent
		m = scrape(t, good)
		got := m.Value(metrics.NameRequestDuration, nil)
		return natsembed.Check(got == 3, "requests observed %v", got)
	})
	gen := metricstest.Labels{"node": "n1", metrics.LabelModel: "m1", metrics.LabelOperation: wire.CapGenerate}
	code := metricstest.Labels{"node": "n1", metrics.LabelModel: "m1", metrics.LabelOperation: wire.CapCode}
	assert.Equal(t, 2.0, m.Value(metrics.NameRequestDuration, gen))
	assert.Equal(t, 1.0, m.Value(metrics.NameRequestDuration, code))
	assert.Equal(t, 3.0, m.Value(metrics.NameTimeToFirstToken, nil))
	assert.Equal(t, 3.0, m.Value(metrics.NameTimePerOutputToken, nil))
	assert.Equal(t, "HISTOGRAM", m.Type(metrics.NameTimeToFirstToken))
	for _, s := range m.Series(metrics.NameTimeToFirstToken) {
		assert.GreaterOrEqual(t, s.Sum, 0.02*s.Value, "TTFT includes the backend's 20 ms")
	}
	for _, s := range m.Series(metrics.NameTimePerOutputToken) {
		assert.InDelta(t, 0.005*s.Value, s.Sum, 0.05, "about 5 ms a token after the first")
	}
	usage := metricstest.Labels{metrics.LabelTokenType: metrics.TokenOutput}
	assert.Equal(t, 3.0, m.Value(metrics.NameTokenUsage, usage), "one observation per request")
	var sum float64
	for _, s := range m.Series(metrics.NameTokenUsage) {
		sum += s.Sum
	}
	assert.Equal(t, float64(3*tokens), sum)
	assert.Equal(t, []string{""}, m.LabelValues(metrics.NameRequestDuration, metrics.LabelErrorType), "no failure on n1")
	assert.Equal(t, 4.0, m.Value("fedmesh_node_dispatches_total", nil), "the refused dispatch counts too")

	problems, err := testutil.CollectAndLint(good.Metrics())
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")

	mb := scrape(t, bad)
	assert.Equal(t, 1.0, mb.Value(metrics.NameRequestDuration, metricstest.Labels{metrics.LabelErrorType: "500", "node": "n2"}))
	assert.False(t, mb.Has(metrics.NameTimeToFirstToken), "failures have no TTFT")

	for _, name := range append(m.Names(), mb.Names()...) {
		for _, s := range append(m.Series(name), mb.Series(name)...) {
			for k, v := range s.Labels {
				assert.NotContains(t, v, "bogus", "%s{%s=%q}", name, k, v)
			}
		}
	}
}

func TestMetricsNodeAgentLoad(t *testing.T) {
	r := newRig(t)
	g := newGate()
	s, _ := r.agent(testConfig("n1", g))
	c := r.dispatch("n1", "hi", stream)
	require.Equal(t, wire.StatusAccepted, c.status)
	g.waitStarted(t, 1)
	m := scrape(t, s)
	for name, want := range map[string]float64{
		"fedmesh_node_in_flight":             1,
		"fedmesh_node_active_streams":        1,
		"fedmesh_node_queue_depth":           0, // its first token is out
		"fedmesh_node_max_concurrency":       float64(s.cfg.MaxConcurrency),
		"fedmesh_node_draining":              0,
		"fedmesh_node_late_dispatches_total": 0,
		"fedmesh_node_dispatches_total":      1,
	} {
		got, ok := m.Sum(name, metricstest.Labels{"node": "n1"})
		if assert.True(t, ok, "%s missing", name) {
			assert.Equal(t, want, got, name)
		}
	}
	close(g.release)
	c.read(t, 5*time.Second)
	natsembed.Eventually(t, 0, func() error {
		got := scrape(t, s).Value("fedmesh_node_in_flight", nil)
		return natsembed.Check(got == 0, "in flight %v", got)
	})
}

// Only the node's own models and capabilities label its series; anything
// else an outcome could name reads "other", and a failure without a code
// still has an error_type.
func TestNodeMetricsBounded(t *testing.T) {
	nm := newNodeMetrics(testConfig("n1", synthetic.New(synthetic.Config{})))
	nm.observe(&record.Outcome{OK: true, Model: "bogus-model", Capability: "custom.bogus", LatencyMs: 10})
	nm.observe(&record.Outcome{OK: false, Model: "m1", Capability: wire.CapGenerate, LatencyMs: 10})
	reg, err := metrics.ForService("nodeagent", "n1", metricsOnly{nm})
	require.NoError(t, err)
	m := metricstest.Scrape(t, metrics.Handler(reg))
	assert.Equal(t, []string{"m1", metrics.Other}, m.LabelValues(metrics.NameRequestDuration, metrics.LabelModel))
	assert.Equal(t, []string{"generate", metrics.Other}, m.LabelValues(metrics.NameRequestDuration, metrics.LabelOperation))
	assert.Equal(t, []string{"", "500"}, m.LabelValues(metrics.NameRequestDuration, metrics.LabelErrorType))
	var nilMetrics *nodeMetrics
	nilMetrics.observe(&record.Outcome{}) // a Service built without New observes nothing, and does not panic
}

type metricsOnly struct{ nm *nodeMetrics }

func (m metricsOnly) Metrics() prometheus.Collector { return m.nm.genai }
