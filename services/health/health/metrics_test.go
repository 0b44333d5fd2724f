package health

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func scrape(t *testing.T, s *Service) metricstest.Families {
	t.Helper()
	reg, err := metrics.ForService("health", "h1", s)
	require.NoError(t, err)
	return metricstest.Scrape(t, metrics.Handler(reg))
}

// Circuit and node states, load from heartbeats, request and dispatch
// failure counts, events received and the catalog watch's lag; a node
// nobody registered labels nothing.
func TestMetricsHealth(t *testing.T) {
	h := newHarness(t)
	s := h.start(testConfig())
	h.register("good")
	h.register("bad")
	natsembed.Eventually(t, 0, func() error {
		m := scrape(t, s)
		return natsembed.Check(m.Value("fedmesh_health_nodes", nil) == 2, "nodes %v", m.Value("fedmesh_health_nodes", nil))
	})

	h.heartbeat("good")
	h.heartbeat("bad")
	h.heartbeat("made-up-node") // never registered
	for range 3 {
		h.ok("good", 20)
	}
	for range DefaultFailureThreshold {
		h.fail("bad", wire.CodeInternal)
	}
	h.publish(h.sp.RouterFailed("bad"), record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: "bad", Code: wire.CodeNoCapacity,
		Attempt: 1, Time: time.Now()})
	h.publish(h.sp.Unplaced(), record.Unplaced{Code: wire.CodeNoCapacity, Attempts: 2, Time: time.Now()})
	h.waitKV("bad", "circuit open", circuitIs(record.CircuitOpen))

	var m metricstest.Families
	natsembed.Eventually(t, 0, func() error {
		m = scrape(t, s)
		got := m.Value("fedmesh_health_events_received_total", metricstest.Labels{"event": "outcome"})
		return natsembed.Check(got == 3+DefaultFailureThreshold+1, "outcomes received %v", got)
	})
	node := func(id string, more ...string) metricstest.Labels {
		l := metricstest.Labels{"node": id}
		for i := 0; i+1 < len(more); i += 2 {
			l[more[i]] = more[i+1]
		}
		return l
	}
	for _, tc := range []struct {
		name   string
		labels metricstest.Labels
		want   float64
	}{
		{"fedmesh_health_circuit_state", node("bad", "state", "open"), 1},
		{"fedmesh_health_circuit_state", node("bad", "state", "closed"), 0},
		{"fedmesh_health_circuit_state", node("good", "state", "closed"), 1},
		{"fedmesh_health_node_state", node("good", "state", "healthy"), 1},
		{"fedmesh_health_node_state", node("bad", "state", "unhealthy"), 1},
		{"fedmesh_health_node_max_concurrency", node("good"), 4},
		{"fedmesh_health_node_in_flight", node("good"), 0},
		{"fedmesh_health_node_requests_total", node("good", "result", "ok"), 3},
		{"fedmesh_health_node_requests_total", node("bad", "result", "failed"), DefaultFailureThreshold},
		{"fedmesh_health_node_dispatch_failures_total", node("bad"), 1},
		{"fedmesh_health_node_success_rate", node("good"), 1},
		{"fedmesh_health_node_latency_seconds", node("good"), 3}, // a summary: its count
		{"fedmesh_health_requests_total", metricstest.Labels{"result": "ok"}, 3},
		{"fedmesh_health_requests_total", metricstest.Labels{"result": "failed"}, DefaultFailureThreshold + 1},
		{"fedmesh_health_dispatch_failures_total", nil, 1},
		{"fedmesh_health_retries_total", nil, 1},
		{"fedmesh_health_unplaced_total", metricstest.Labels{"code": strconv.Itoa(wire.CodeNoCapacity)}, 1},
		{"fedmesh_health_mesh_state", metricstest.Labels{"state": record.MeshDegraded}, 1},
		{"fedmesh_health_mesh_state", metricstest.Labels{"state": record.MeshReady}, 0},
		{"fedmesh_health_events_received_total", metricstest.Labels{"event": "heartbeat"}, 3},
		{"fedmesh_health_events_received_total", metricstest.Labels{"event": "unplaced"}, 1},
		{"fedmesh_health_events_dropped_total", metricstest.Labels{"event": "heartbeat"}, 0},
	} {
		got, ok := m.Sum(tc.name, tc.labels)
		if assert.True(t, ok, "%s%v missing", tc.name, tc.labels) {
			assert.InDelta(t, tc.want, got, 1e-9, "%s%v", tc.name, tc.labels)
		}
	}
	for _, lat := range m.Series("fedmesh_health_node_latency_seconds") {
		if lat.Labels["node"] == "good" {
			assert.InDelta(t, 0.06, lat.Sum, 1e-9, "three 20 ms requests")
		}
	}
	assert.Equal(t, []string{"bad", "good"}, m.LabelValues("", "node"), "only registered nodes")
	problems, err := testutil.CollectAndLint(s.Metrics())
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
	assert.Equal(t, 2.0, m.Value(metrics.NameWatchLag, metricstest.Labels{"bucket": h.cat.Bucket()}),
		"both registrations were written after the watch began")
}
