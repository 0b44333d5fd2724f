package catalog

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func scrape(t *testing.T, s *Service) metricstest.Families {
	t.Helper()
	reg, err := metrics.ForService("catalog", "c1", s)
	require.NoError(t, err)
	return metricstest.Scrape(t, metrics.Handler(reg))
}

// Registered nodes and their models, heartbeats received, requests per
// endpoint; a model a caller only asked for labels nothing.
func TestMetricsCatalog(t *testing.T) {
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	s := startCatalog(t, nc, natsembed.Logger(t), nil)
	e := &env{t: t, nc: nc, sp: subject.Default}

	e.register(node("n1", "i1"))
	e.register(node("n2", "i2", record.Model{ModelID: "bge-small", Capabilities: []string{wire.CapEmbed}}))
	for range 3 {
		e.heartbeat("n1", "i1")
	}
	e.find(wire.CapGenerate, "bogus-model-from-a-caller")
	e.eventuallyListed(2)

	var m metricstest.Families
	natsembed.Eventually(t, 0, func() error {
		m = scrape(t, s)
		got := m.Value("fedmesh_catalog_heartbeats_received_total", nil)
		// micro counts a request after its handler has replied: the
		// caller can have the answer before the count moves.
		finds := m.Value("fedmesh_catalog_requests_total", metricstest.Labels{"endpoint": "find"})
		regs := m.Value("fedmesh_catalog_requests_total", metricstest.Labels{"endpoint": "register"})
		return natsembed.Check(got == 3 && finds > 0 && regs >= 2, "heartbeats %v, finds %v, registers %v", got, finds, regs)
	})
	model := func(id, op string) metricstest.Labels {
		return metricstest.Labels{metrics.LabelModel: id, metrics.LabelOperation: op}
	}
	for _, tc := range []struct {
		name   string
		labels metricstest.Labels
		want   float64
	}{
		{"fedmesh_catalog_nodes", nil, 2},
		{"fedmesh_catalog_model_nodes", model("llama-3-8b", wire.CapGenerate), 1},
		{"fedmesh_catalog_model_nodes", model("llama-3-8b", wire.CapCode), 1},
		{"fedmesh_catalog_model_nodes", model("bge-small", wire.CapEmbed), 1},
		{"fedmesh_catalog_requests_total", metricstest.Labels{"endpoint": "register"}, 2},
		{"fedmesh_catalog_requests_total", metricstest.Labels{"endpoint": "find"}, 1},
		{"fedmesh_catalog_heartbeats_dropped_total", nil, 0},
		{"fedmesh_catalog_pending_writes", nil, 0},
	} {
		got, ok := m.Sum(tc.name, tc.labels)
		if assert.True(t, ok, "%s%v missing", tc.name, tc.labels) {
			assert.Equal(t, tc.want, got, "%s%v", tc.name, tc.labels)
		}
	}
	assert.Positive(t, m.Value("fedmesh_catalog_requests_total", metricstest.Labels{"endpoint": "list"}))
	assert.Equal(t, []string{"n1", "n2"}, m.LabelValues("fedmesh_catalog_node_heartbeat_age_seconds", "node"))
	for _, s := range m.Series("fedmesh_catalog_node_heartbeat_age_seconds") {
		assert.Less(t, s.Value, 5.0, "just heard from")
	}
	assert.Equal(t, []string{"bge-small", "llama-3-8b"}, m.LabelValues("", metrics.LabelModel))
	problems, err := testutil.CollectAndLint(s.Metrics())
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
}
