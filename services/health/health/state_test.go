package health

import (
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/stretchr/testify/assert"
)

func TestUnknownToHealthyAfterTwoSuccesses(t *testing.T) {
	h := newHarness(t)
	s := h.start(testConfig())

	// Heartbeats alone keep a node unknown (routable, DESIGN §6 score 0.3).
	h.heartbeat("n1")
	r := h.waitKV("n1", "written as unknown", stateIs(record.StateUnknown))
	assert.Equal(t, record.CircuitClosed, r.Circuit)

	h.ok("n1", 20)
	natsembed.Eventually(t, 0, func() error {
		m, _ := inMemory(s, "n1")
		return natsembed.Check(m.ConsecutiveSuccess == 1, "consecutive successes %d, want 1", m.ConsecutiveSuccess)
	})
	m, _ := inMemory(s, "n1")
	assert.Equal(t, record.StateUnknown, m.State, "one success is not enough")

	h.ok("n1", 20)
	h.waitKV("n1", "healthy after 2 successes", stateIs(record.StateHealthy))
}

func TestSlowSuccessDegradesThenFastSuccessesHeal(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())

	h.ok("n1", 10)
	h.ok("n1", 10)
	h.waitKV("n1", "healthy", stateIs(record.StateHealthy))

	h.ok("n1", 2000) // reported latency, no real sleep
	r := h.waitKV("n1", "degraded by a 2 s success", stateIs(record.StateDegraded))
	assert.Zero(t, r.ConsecutiveFailures, "a slow success is no failure")

	h.ok("n1", 10)
	h.ok("n1", 10)
	h.waitKV("n1", "healthy again", stateIs(record.StateHealthy))
}

func TestFailuresDegradeThenMakeUnhealthy(t *testing.T) {
	cases := []struct {
		failures int
		want     string
	}{
		{1, record.StateDegraded},
		{2, record.StateDegraded},
		{3, record.StateUnhealthy},
	}
	h := newHarness(t)
	h.start(testConfig())
	for _, c := range cases {
		id := "n" + string(rune('0'+c.failures))
		h.ok(id, 10)
		h.ok(id, 10)
		h.waitKV(id, "healthy", stateIs(record.StateHealthy))
		for range c.failures {
			h.fail(id, wire.CodeInternal)
		}
		h.waitKV(id, c.want, func(r *record.Health) bool {
			return r.State == c.want && r.ConsecutiveFailures == c.failures
		})
	}
}

func TestDegradedByFailuresRecovers(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	h.fail("n1", wire.CodeTimeout)
	h.waitKV("n1", "degraded", stateIs(record.StateDegraded))
	h.ok("n1", 10)
	h.ok("n1", 10)
	r := h.waitKV("n1", "healthy", stateIs(record.StateHealthy))
	assert.Zero(t, r.ConsecutiveFailures)
}

// Outcomes that say nothing about the node's health must not count.
func TestNeutralOutcomesDoNotCount(t *testing.T) {
	cases := []struct {
		name string
		o    record.Outcome
	}{
		{"bad request", record.Outcome{Kind: record.OutcomeCompleted, Code: wire.CodeBadRequest}},
		{"not found", record.Outcome{Kind: record.OutcomeCompleted, Code: wire.CodeNotFound}},
		{"canceled", record.Outcome{Kind: record.OutcomeCompleted, Code: wire.CodeCanceled}},
		{"busy", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: wire.CodeOverloaded, Error: "busy"}},
		{"draining", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: wire.CodeNoCapacity, Error: "node draining"}},
		{"duplicate", record.Outcome{Kind: record.OutcomeDuplicate}},
		// The client's own doing (issue 12): a deadline the node could not
		// meet, a body too large for the dispatch. The 12 of them in a row
		// here are over FailureThreshold: counted, they would open the
		// circuit of a healthy node.
		{"client deadline", record.Outcome{Kind: record.OutcomeCompleted, Code: wire.CodeTimeout, Fault: record.FaultClient}},
		{"client fault 500", record.Outcome{Kind: record.OutcomeCompleted, Code: wire.CodeInternal, Fault: record.FaultClient}},
		{"dispatch too large", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: wire.CodeTooLarge, Error: "maximum payload exceeded"}},
		{"dispatch client fault", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: wire.CodeNoCapacity, Fault: record.FaultClient}},
	}
	h := newHarness(t)
	s := h.start(testConfig())
	for _, c := range cases {
		c.o.NodeID = "n1"
		for range 3 {
			h.publish(h.outcomeSubject(c.o), c.o)
		}
	}
	// A marker: the next real failure must be the first one.
	h.fail("n1", wire.CodeInternal)
	r := h.waitKV("n1", "one failure", func(r *record.Health) bool { return r.ConsecutiveFailures > 0 })
	assert.Equal(t, 1, r.ConsecutiveFailures)
	assert.Equal(t, record.StateDegraded, r.State)
	// Neutral for health, but still counted in stats.
	assert.Equal(t, record.CircuitClosed, r.Circuit)
	st := h.stats()
	assert.Equal(t, int64(12), st.DispatchFailures)
	assert.Equal(t, int64(3), st.DuplicatesDropped)
	assert.Equal(t, int64(16), st.TotalRequests)
	assert.Equal(t, int64(16), st.FailedRequests)
	m, _ := inMemory(s, "n1")
	assert.Equal(t, 1, m.ConsecutiveFailures)
	assert.Zero(t, m.SuccessRate, "only the marker is in the success rate")
}

func TestDispatchFailedCountsAsFailure(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	for range 3 {
		h.publish(h.sp.RouterFailed("n1"), record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: "n1",
			Code: wire.CodeNoCapacity, Error: "no responders"})
	}
	h.waitKV("n1", "unhealthy", stateIs(record.StateUnhealthy))
}

func TestMissedHeartbeatsMakeUnhealthy(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.MissedHeartbeats = 3
	h.start(cfg)
	for range 3 {
		h.heartbeat("n1")
		time.Sleep(cfg.HeartbeatInterval / 2)
	}
	h.waitKV("n1", "written", stateIs(record.StateUnknown))
	start := time.Now()
	r := h.waitKV("n1", "unhealthy after silence", stateIs(record.StateUnhealthy))
	assert.GreaterOrEqual(t, time.Since(start), 2*cfg.HeartbeatInterval, "not before ~3 intervals")
	assert.Zero(t, r.ConsecutiveFailures)

	h.heartbeat("n1")
	h.waitKV("n1", "back to unknown once heard", stateIs(record.StateUnknown))
}

func TestDrainingHeartbeatIsPublished(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	h.publish(h.sp.Heartbeat("n1"), record.Heartbeat{NodeID: "n1", Draining: true, InFlight: 2, QueueDepth: 1,
		GPUUtilization: 0.5, ThroughputTPS: 42})
	r := h.waitKV("n1", "draining", func(r *record.Health) bool { return r.Draining })
	assert.Equal(t, 2, r.InFlight)
	assert.Equal(t, 1, r.QueueDepth)
	assert.Equal(t, 0.5, r.GPUUtilization)
	assert.Equal(t, 42.0, r.ThroughputTPS)
}
