package health

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// heartbeatOf is a heartbeat of one agent instance of node id.
func (h *harness) heartbeatOf(id, instance string) {
	h.publish(h.sp.Heartbeat(id), record.Heartbeat{NodeID: id, InstanceID: instance, Time: time.Now(), MaxConcurrency: 4})
}

// routerFailed is a router's dispatch_failed for node id, about the agent
// instance it dispatched to ("" when it named none).
func (h *harness) routerFailed(id, instance string) {
	h.publish(h.sp.RouterFailed(id), record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: id,
		Code: wire.CodeNoCapacity, Error: "ack timeout", Fault: record.FaultNode, InstanceID: instance, Time: time.Now()})
}

// A restarted agent (a heartbeat with a new instance_id) is judged on its
// own: failures routers report about the process that died, after its
// successor started, move neither its state nor its circuit, and a circuit
// the old process opened lets the new one be tried at once (half_open).
func TestRestartedAgentIsNotBlamedForItsPredecessor(t *testing.T) {
	cases := []struct {
		name        string
		tripFirst   bool   // the old instance opened the circuit before it died
		failAbout   string // instance the later failures name
		failures    int
		wantState   string
		wantCircuit string
	}{
		{"late failures about the old instance judge nothing", false, "old", 5, record.StateUnknown, record.CircuitClosed},
		{"failures naming no instance still count", false, "", 3, record.StateUnhealthy, record.CircuitClosed},
		{"failures about the new instance count", false, "new", 5, record.StateUnhealthy, record.CircuitOpen},
		{"a circuit the old instance opened is half_open for the new one", true, "old", 5, record.StateUnknown, record.CircuitHalfOpen},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := testConfig()
			cfg.ResetTimeout = time.Hour // only the restart may move an open circuit
			s := h.start(cfg)
			h.heartbeatOf("n1", "old")
			h.waitKV("n1", "the old instance is known", func(r *record.Health) bool { return r.InstanceID == "old" })
			if c.tripFirst {
				for range cfg.FailureThreshold {
					h.routerFailed("n1", "old")
				}
				h.waitKV("n1", "open", circuitIs(record.CircuitOpen))
			}
			h.heartbeatOf("n1", "new")
			h.waitKV("n1", "the new instance is known", func(r *record.Health) bool { return r.InstanceID == "new" })
			for range c.failures {
				h.routerFailed("n1", c.failAbout)
			}
			// A marker outcome after the failures: once it is counted, so are they.
			h.publish(h.sp.RouterFailed("n1"), record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: "n1",
				Code: wire.CodeOverloaded, Error: wire.StatusBusy, Time: time.Now()})
			want := int64(c.failures + 1) // and the marker
			if c.tripFirst {
				want += int64(cfg.FailureThreshold)
			}
			natsembed.Eventually(t, 0, func() error {
				m, _ := inMemory(s, "n1")
				s.mu.Lock()
				got := s.stats().Nodes["n1"].DispatchFailures
				s.mu.Unlock()
				return natsembed.Check(got == want, "dispatch failures counted %d, want %d (memory %+v)", got, want, m)
			})
			m, _ := inMemory(s, "n1")
			assert.Equal(t, c.wantState, m.State)
			assert.Equal(t, c.wantCircuit, m.Circuit)
			r := h.waitKV("n1", "written", func(r *record.Health) bool { return r.Circuit == c.wantCircuit && r.State == c.wantState })
			assert.Equal(t, "new", r.InstanceID)
		})
	}
}

// A health instance that starts after a node's agent restarted learns the
// instance from fed_health, so the next restart resets what it holds
// (before, its first heartbeat set the instance and nothing was reset).
func TestSeededInstanceSeesTheNextRestart(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.ResetTimeout = time.Hour
	first := h.start(cfg)
	h.heartbeatOf("n1", "a")
	for range cfg.FailureThreshold {
		h.routerFailed("n1", "a")
	}
	h.waitKV("n1", "open, instance a", func(r *record.Health) bool {
		return r.Circuit == record.CircuitOpen && r.InstanceID == "a"
	})
	second := h.start(cfg)
	natsembed.Eventually(t, 0, func() error {
		m, ok := inMemory(second, "n1")
		return natsembed.Check(ok && m.Circuit == record.CircuitOpen, "second instance seeded: %+v", m)
	})
	h.heartbeatOf("n1", "b")
	for _, s := range []*Service{first, second} {
		natsembed.Eventually(t, 0, func() error {
			m, _ := inMemory(s, "n1")
			return natsembed.Check(m.Circuit == record.CircuitHalfOpen && m.State == record.StateUnknown && m.InstanceID == "b",
				"after the restart: %+v", m)
		})
	}
}

// Failures that come while the node is silent (a frozen agent's
// dispatches timing out) are counted but judge nothing, so a node back
// from a freeze is routable at its next heartbeat instead of unhealthy
// until a probe with its circuit open for reset_timeout; failures while
// heartbeats flow judge it as before.
func TestFailuresWhileSilentJudgeNothing(t *testing.T) {
	cases := []struct {
		name        string
		silence     time.Duration // between the last heartbeat and the failures
		wantState   string
		wantCircuit string
	}{
		{"in a silence", 600 * time.Millisecond, record.StateUnknown, record.CircuitClosed},
		{"while heartbeats flow", 0, record.StateUnhealthy, record.CircuitOpen},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := testConfig()
			cfg.HeartbeatInterval = 200 * time.Millisecond // silent: more than 400 ms
			cfg.ResetTimeout = time.Hour
			s := h.start(cfg)
			h.heartbeatOf("n1", "a")
			h.waitKV("n1", "known", func(r *record.Health) bool { return r.InstanceID == "a" })
			time.Sleep(c.silence)
			for range cfg.FailureThreshold {
				h.routerFailed("n1", "a")
			}
			natsembed.Eventually(t, 0, func() error {
				s.mu.Lock()
				got := s.stats().Nodes["n1"].DispatchFailures
				s.mu.Unlock()
				return natsembed.Check(got == int64(cfg.FailureThreshold), "dispatch failures counted %d", got)
			})
			h.heartbeatOf("n1", "a") // back, same instance
			h.heartbeatOf("n2", "x") // a marker: once it is applied, so is n1's heartbeat
			natsembed.Eventually(t, 0, func() error {
				_, ok := inMemory(s, "n2")
				return natsembed.Check(ok, "n2 not seen yet")
			})
			m, _ := inMemory(s, "n1")
			assert.Equal(t, c.wantState, m.State)
			assert.Equal(t, c.wantCircuit, m.Circuit)
			h.waitKV("n1", "written", func(r *record.Health) bool { return r.State == c.wantState && r.Circuit == c.wantCircuit })
		})
	}
}
