package health

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// probeConfig turns probes and the silence rule on, with short intervals.
func probeConfig() Config {
	cfg := testConfig()
	cfg.MissedHeartbeats = 3
	cfg.CheckInterval = 100 * time.Millisecond
	return cfg
}

// answerProbes plays node id's agent: it answers every probe with answer
// and counts them.
func (h *harness) answerProbes(id string, answer func(m *nats.Msg)) *atomic.Int32 {
	h.t.Helper()
	var probes atomic.Int32
	sub, err := h.nc.Subscribe(h.sp.NodeProbe(id), func(m *nats.Msg) {
		probes.Add(1)
		answer(m)
	})
	require.NoError(h.t, err)
	require.NoError(h.t, h.nc.Flush())
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &probes
}

func answerOK(m *nats.Msg) { _ = m.Respond(nil) }

func TestActiveProbeOfSilentNode(t *testing.T) {
	cases := []struct {
		name    string
		answer  func(h *harness, m *nats.Msg)
		want    string
		minFail int
	}{
		{"answering node becomes healthy", func(_ *harness, m *nats.Msg) { answerOK(m) }, record.StateHealthy, 0},
		{"error reply counts as failure", func(h *harness, m *nats.Msg) {
			_ = wire.RespondError(h.nc, m.Reply, wire.Errorf(wire.CodeInternal, "model not loaded"))
		}, record.StateUnhealthy, 3},
		{"no answer times out", func(*harness, *nats.Msg) {}, record.StateUnhealthy, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := probeConfig()
			cfg.ProbeTimeout = 50 * time.Millisecond
			probes := h.answerProbes("n1", func(m *nats.Msg) { c.answer(h, m) })

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
	cfg := probeConfig()
	probes := h.answerProbes("n1", answerOK)
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
	probes := h.answerProbes("n1", answerOK)
	h.start(probeConfig())
	natsembed.Eventually(t, 5*time.Second, func() error {
		h.heartbeat("n1")
		r := h.record("n1")
		return natsembed.Check(r != nil && r.State == record.StateHealthy, "fed_health n1: healthy; last value %+v", r)
	})
	assert.GreaterOrEqual(t, probes.Load(), int32(2), "two successes come from two probes")
}

// A good probe keeps alive only a node that was not heartbeating: a node
// probed while it heartbeats (an idle unknown one) that then dies is
// unhealthy after its missed heartbeats, not CheckInterval later (routers
// take a lost node's requests over on that record; the chaos run's first
// kill, right after the idle start-up probes, left its streams waiting).
// A node that only answers probes stays alive between them.
func TestProbeDoesNotHideADeadHeartbeatingNode(t *testing.T) {
	cases := []struct {
		name       string
		heartbeats bool
		wantStale  bool // unhealthy 500 ms after the last sign of life
	}{
		{"heartbeating node dies after a probe", true, true},
		{"node that only answers probes", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := probeConfig()
			cfg.CheckInterval = 700 * time.Millisecond // a probe's grace: 700 + 150 ms, more than the 500 ms below
			var answering atomic.Bool
			answering.Store(true)
			probes := h.answerProbes("n1", func(m *nats.Msg) {
				if answering.Load() {
					answerOK(m)
				}
			})
			h.register("n1")
			h.start(cfg)
			natsembed.Eventually(t, 5*time.Second, func() error {
				if c.heartbeats {
					h.heartbeat("n1")
				}
				return natsembed.Check(probes.Load() >= 1, "n1 not probed yet")
			})
			if c.heartbeats {
				h.heartbeat("n1")
				answering.Store(false) // dead: no heartbeat, no probe answer
			}
			dead := time.Now()
			time.Sleep(500 * time.Millisecond)
			r := h.record("n1")
			require.NotNil(t, r)
			if c.wantStale {
				assert.Equal(t, record.StateUnhealthy, r.State, "500 ms after its last heartbeat (3 missed = 150 ms)")
				return
			}
			assert.NotEqual(t, record.StateUnhealthy, r.State, "a node answering probes is alive %s after its first probe", time.Since(dead))
		})
	}
}
