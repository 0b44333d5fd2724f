package health

import (
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMalformedEventsAreDroppedAndLoggedRateLimited(t *testing.T) {
	h := newHarness(t)
	logs, log := natsembed.NewLogBuffer(t)
	s := h.startLogging(testConfig(), log)
	h.ok("n1", 10)
	h.ok("n1", 10)
	before := h.waitKV("n1", "healthy", stateIs(record.StateHealthy))

	bad := []struct {
		subj string
		data string
	}{
		{h.sp.Heartbeat("n1"), `{not json`},
		{h.sp.Heartbeat("n1"), `{"node_id":"other"}`},
		{h.sp.Heartbeat("n1"), `{"in_flight":-1}`},
		{h.sp.Heartbeat("n1"), `{"gpu_utilization":-3}`},
		{h.sp.Outcome("n1"), `[]`},
		{h.sp.Outcome("n1"), `{"kind":"exploded","ok":false}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":false,"code":5000}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"latency_ms":-5}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","node_id":"n2","ok":false,"code":500}`},
		{h.sp.Unplaced(), `{"code":"x"}`},
	}
	for range 3 {
		for _, b := range bad {
			require.NoError(t, h.nc.Publish(b.subj, []byte(b.data)))
		}
	}
	// A good event after the bad ones: once it is applied, all were seen.
	h.publish(h.sp.Heartbeat("n1"), record.Heartbeat{NodeID: "n1", QueueDepth: 7})
	after := h.waitKV("n1", "queue depth 7", func(r *record.Health) bool { return r.QueueDepth == 7 })

	assert.Equal(t, before.State, after.State)
	assert.Equal(t, before.ConsecutiveFailures, after.ConsecutiveFailures)
	assert.Equal(t, before.Samples, after.Samples)
	assert.Zero(t, after.InFlight)
	_, known := inMemory(s, "n2")
	assert.False(t, known, "a mismatched node_id creates no node")
	assert.Equal(t, int64(2), h.stats().TotalRequests)
	assert.Equal(t, 1, strings.Count(logs.String(), "dropping malformed message"), "30 bad messages, one log line per second")
}

func TestPercentilesOverKnownLatencies(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	lat := rand.Perm(100)
	for _, l := range lat {
		h.ok("n1", float64(l+1)) // 1..100 ms in random order
	}
	// fed.health.get answers from memory: the bucket is rewritten only when
	// something routers use changes, so its sample count may lag.
	var r record.Health
	natsembed.Eventually(t, 0, func() error {
		var werr *wire.Error
		r, werr = h.get("n1")
		if werr != nil {
			return werr
		}
		return natsembed.Check(r.Samples == 100, "%d samples", r.Samples)
	})
	assert.Equal(t, 50.0, r.LatencyP50Ms)
	assert.Equal(t, 99.0, r.LatencyP99Ms)
	assert.Equal(t, 1.0, r.SuccessRate)
}

func TestPercentileWindowSlides(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.LatencyWindow = 10
	cfg.DegradedLatency = time.Hour
	h.start(cfg)
	for range 10 {
		h.ok("n1", 5000)
	}
	for i := range 10 {
		h.ok("n1", float64(i+1))
	}
	r := h.waitKV("n1", "window of the last 10", func(r *record.Health) bool { return r.LatencyP99Ms == 10 })
	assert.Equal(t, 5.0, r.LatencyP50Ms)
	assert.Equal(t, 10, r.Samples)
}

func TestStatsCounts(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	sp := h.sp
	h.publish(sp.Outcome("a"), record.Outcome{Kind: record.OutcomeCompleted, NodeID: "a", OK: true, Tenant: "t1",
		Attempt: 2, LatencyMs: 100, TTFTMs: 20, Tokens: 50})
	h.publish(sp.Outcome("a"), record.Outcome{Kind: record.OutcomeCompleted, NodeID: "a", OK: true, Tenant: "t1",
		Attempt: 1, LatencyMs: 300, TTFTMs: 40, Tokens: 10})
	h.publish(sp.Outcome("b"), record.Outcome{Kind: record.OutcomeCompleted, NodeID: "b", Code: wire.CodeInternal, Tenant: "t2"})
	h.publish(sp.RouterFailed("b"), record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: "b", Code: wire.CodeTimeout, Tenant: "t1"})
	h.publish(sp.ClientDuplicate("a"), record.Outcome{Kind: record.OutcomeDuplicate, NodeID: "a"})
	h.publish(sp.Unplaced(), record.Unplaced{Code: wire.CodeNoCapacity, Error: "all nodes failed", Attempts: 4, Tenant: "t2"})
	h.publish(sp.Unplaced(), record.Unplaced{Code: wire.CodePrivacy, Error: "no node cleared"})

	var st record.Stats
	natsembed.Eventually(t, 0, func() error {
		st = h.stats()
		// each subject has its own subscription: wait for all of them
		return natsembed.Check(st.TotalRequests == 5 && st.DuplicatesDropped == 1 && st.DispatchFailures == 1, "stats %+v", st)
	})
	assert.Equal(t, int64(2), st.SuccessfulRequests)
	assert.Equal(t, int64(3), st.FailedRequests)
	assert.Equal(t, int64(60), st.TotalTokens)
	assert.Equal(t, int64(1), st.DispatchFailures)
	assert.Equal(t, int64(1+3), st.Retries, "attempt 2 = 1 retry; 4 attempts = 3 retries")
	assert.Equal(t, 200.0, st.AvgLatencyMs)
	assert.Equal(t, 100.0, st.LatencyP50Ms)
	assert.Equal(t, 300.0, st.LatencyP99Ms)
	assert.Equal(t, 20.0, st.TTFTP50Ms)
	assert.Equal(t, map[string]int64{"503": 1, "403": 1}, st.Unplaced)

	require.Contains(t, st.Nodes, "a")
	assert.Equal(t, int64(2), st.Nodes["a"].TotalRequests)
	assert.Equal(t, int64(1), st.Nodes["a"].DuplicatesDropped)
	assert.Equal(t, int64(1), st.Nodes["b"].FailedRequests)
	assert.Equal(t, int64(1), st.Nodes["b"].DispatchFailures)
	assert.Equal(t, int64(2), st.Tenants["t1"].SuccessfulRequests)
	assert.Equal(t, int64(1), st.Tenants["t1"].DispatchFailures)
	assert.Equal(t, int64(2), st.Tenants["t2"].FailedRequests)
}

func TestMeshState(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	assert.Equal(t, record.MeshInitializing, h.stats().State)

	h.register("a")
	h.register("b")
	for _, id := range []string{"a", "b"} {
		h.ok(id, 10)
		h.ok(id, 10)
		h.waitKV(id, "healthy", stateIs(record.StateHealthy))
	}
	natsembed.Eventually(t, 0, func() error {
		st := h.stats().State
		return natsembed.Check(st == record.MeshReady, "mesh state %s, want %s", st, record.MeshReady)
	})

	for range 3 {
		h.fail("b", wire.CodeInternal)
	}
	h.waitKV("b", "unhealthy", stateIs(record.StateUnhealthy))
	assert.Equal(t, record.MeshDegraded, h.stats().State)
}

func TestGetAndList(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	h.heartbeat("b")
	h.heartbeat("a")
	h.waitKV("b", "written", stateIs(record.StateUnknown))
	h.waitKV("a", "written", stateIs(record.StateUnknown))

	r, werr := h.get("a")
	require.Nil(t, werr)
	assert.Equal(t, "a", r.NodeID)

	cases := []struct {
		name string
		body string
		code int
		want string
	}{
		{"malformed json", `{`, wire.CodeBadRequest, "body"},
		{"empty id", `{}`, wire.CodeBadRequest, "node_id"},
		{"bad id", `{"node_id":"a.b"}`, wire.CodeBadRequest, "node_id"},
		{"unknown node", `{"node_id":"zzz"}`, wire.CodeNotFound, "zzz"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, werr := h.request(h.sp.HealthGet(), []byte(c.body))
			require.NotNil(t, werr)
			assert.Equal(t, c.code, werr.Code)
			assert.Contains(t, werr.Description, c.want)
		})
	}

	data, werr := h.request(h.sp.HealthList(), nil)
	require.Nil(t, werr)
	assert.Contains(t, string(data), `"nodes":[{"node_id":"a"`)
	assert.Contains(t, string(data), `"node_id":"b"`)
}

func TestDeregisteredSilentNodeIsForgotten(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.ForgetAfter = 200 * time.Millisecond
	s := h.start(cfg)
	h.register("gone")
	h.register("kept")
	h.heartbeat("gone")
	h.waitKV("gone", "written", stateIs(record.StateUnknown))
	h.waitKV("kept", "written", stateIs(record.StateUnknown))

	require.NoError(t, h.cat.Delete(t.Context(), "nodes.gone"))
	natsembed.Eventually(t, 0, func() error { return natsembed.Check(h.record("gone") == nil, "fed_health key deleted") })
	_, known := inMemory(s, "gone")
	assert.False(t, known)
	time.Sleep(cfg.ForgetAfter)
	_, known = inMemory(s, "kept")
	assert.True(t, known, "a registered node stays, silent or not")
	assert.NotNil(t, h.record("kept"))
}

// active_streams is the sum of the nodes' latest heartbeats, and a node
// silent past the missed-heartbeat limit counts none.
func TestActiveStreamsFromHeartbeats(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.MissedHeartbeats = 3
	h.start(cfg)
	h.publish(h.sp.Heartbeat("a"), record.Heartbeat{NodeID: "a", Time: time.Now(), InFlight: 4, ActiveStreams: 3, MaxConcurrency: 8})
	h.publish(h.sp.Heartbeat("b"), record.Heartbeat{NodeID: "b", Time: time.Now(), InFlight: 2, ActiveStreams: 2, MaxConcurrency: 8})
	natsembed.Eventually(t, 2*time.Second, func() error {
		st := h.stats()
		return natsembed.Check(st.ActiveStreams == 5, "%+v", st)
	})
	assert.Equal(t, int64(3), h.stats().Nodes["a"].ActiveStreams)
	// Only b keeps heartbeating; a falls silent.
	deadline := time.Now().Add(6 * cfg.HeartbeatInterval)
	for time.Now().Before(deadline) {
		h.publish(h.sp.Heartbeat("b"), record.Heartbeat{NodeID: "b", Time: time.Now(), ActiveStreams: 2, MaxConcurrency: 8})
		time.Sleep(cfg.HeartbeatInterval / 2)
	}
	st := h.stats()
	assert.Equal(t, int64(2), st.ActiveStreams, "%+v", st)
	assert.Zero(t, st.Nodes["a"].ActiveStreams)
}

// Each outcome subject carries its publisher's kind only: a node cannot
// report a dispatch failure against another node on fed.outcome.*, a
// client cannot report a completion on fed.client.duplicate.*.
func TestOutcomeKindBySubject(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	for range 5 { // would open the circuit (5 failures) if counted
		h.publish(h.sp.Outcome("n1"), record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: "n1", Code: wire.CodeNoCapacity})
		h.publish(h.sp.ClientDuplicate("n1"), record.Outcome{Kind: record.OutcomeCompleted, NodeID: "n1", Code: wire.CodeInternal})
	}
	h.fail("n1", wire.CodeInternal) // a marker on the right subject
	r := h.waitKV("n1", "one failure", func(r *record.Health) bool { return r.ConsecutiveFailures > 0 })
	assert.Equal(t, 1, r.ConsecutiveFailures, "only the marker counted")
	assert.Equal(t, record.CircuitClosed, r.Circuit)
}
