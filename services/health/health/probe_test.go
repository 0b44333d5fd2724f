package health

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestActiveProbeOfSilentNode(t *testing.T) {
	cases := []struct {
		name    string
		answer  func(m *nats.Msg)
		want    string
		minFail int
	}{
		{"answering node becomes healthy", func(m *nats.Msg) { _ = m.Respond(nil) }, record.StateHealthy, 0},
		{"error reply counts as failure", func(m *nats.Msg) {
			r := nats.NewMsg(m.Reply)
			wire.SetError(r.Header, wire.CodeInternal, "model not loaded")
			_ = m.RespondMsg(r)
		}, record.StateUnhealthy, 3},
		{"no answer times out", func(*nats.Msg) {}, record.StateUnhealthy, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := testConfig()
			cfg.MissedHeartbeats = 3
			cfg.CheckInterval = 100 * time.Millisecond
			cfg.ProbeTimeout = 50 * time.Millisecond
			var probes atomic.Int32
			sub, err := h.nc.Subscribe(h.sp.NodeProbe("n1"), func(m *nats.Msg) {
				probes.Add(1)
				c.answer(m)
			})
			require.NoError(t, err)
			require.NoError(t, h.nc.Flush())
			t.Cleanup(func() { _ = sub.Unsubscribe() })

			h.register("n1") // known from the catalog, never reports
			h.start(cfg)
			r := h.waitKV("n1", c.want, func(r *record.Health) bool {
				return r.State == c.want && r.ConsecutiveFailures >= c.minFail
			})
			assert.GreaterOrEqual(t, probes.Load(), int32(2))
			if c.want == record.StateHealthy {
				assert.Equal(t, record.CircuitClosed, r.Circuit, "probes do not move the breaker")
			}
		})
	}
}

// A node that heartbeats is not probed: it reports.
func TestReportingNodeIsNotProbed(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.MissedHeartbeats = 3
	cfg.CheckInterval = 100 * time.Millisecond
	var probes atomic.Int32
	sub, err := h.nc.Subscribe(h.sp.NodeProbe("n1"), func(m *nats.Msg) { probes.Add(1); _ = m.Respond(nil) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	h.start(cfg)
	// Heartbeats and a steady flow of request outcomes: nothing to probe.
	deadline := time.Now().Add(400 * time.Millisecond)
	for time.Now().Before(deadline) {
		h.heartbeat("n1")
		h.ok("n1", 10)
		time.Sleep(cfg.HeartbeatInterval / 2)
	}
	assert.Zero(t, probes.Load())
	h.waitKV("n1", "healthy from its own successes", func(r *record.Health) bool { return r.State == record.StateHealthy })
}

// A node that heartbeats but has never served a request is probed, and the
// probes' successes make it healthy, so least_latency does not starve it.
func TestIdleUnknownNodeIsProbedToHealthy(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.MissedHeartbeats = 3
	cfg.CheckInterval = 100 * time.Millisecond
	var probes atomic.Int32
	sub, err := h.nc.Subscribe(h.sp.NodeProbe("n1"), func(m *nats.Msg) { probes.Add(1); _ = m.Respond(nil) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	h.start(cfg)
	require.Eventually(t, func() bool {
		h.heartbeat("n1")
		r := h.record("n1")
		return r != nil && r.State == record.StateHealthy
	}, 5*time.Second, cfg.HeartbeatInterval/2)
	assert.GreaterOrEqual(t, probes.Load(), int32(2), "two successes come from two probes")
}
