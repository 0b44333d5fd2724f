package health

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// endpointsAnswer calls fed.stats, fed.health.get and fed.health.list and
// checks each answers with a body that decodes, every float finite.
func (h *harness) endpointsAnswer(id string) record.Stats {
	h.t.Helper()
	st := h.stats()
	for _, v := range []float64{st.AvgLatencyMs, st.LatencyP50Ms, st.LatencyP99Ms, st.TTFTP50Ms} {
		assert.False(h.t, math.IsNaN(v) || math.IsInf(v, 0), "fed.stats float %v", v)
	}
	r, werr := h.get(id)
	require.Nil(h.t, werr, "fed.health.get %s", id)
	assert.Equal(h.t, id, r.NodeID)
	data, werr := h.request(h.sp.HealthList(), nil)
	require.Nil(h.t, werr, "fed.health.list")
	var list api.HealthListResponse
	require.NoError(h.t, json.Unmarshal(data, &list))
	require.NotEmpty(h.t, list.Nodes)
	return st
}

// Issue 12 defect 7: one outcome with latency_ms 1e308 turned the float32
// window into +Inf and fed.stats failed to marshal for good. Every poison
// value is dropped by the decoders, and the endpoints answer right after.
func TestPoisonEventsNeverSilenceEndpoints(t *testing.T) {
	h := newHarness(t)
	s := h.start(testConfig())
	h.register("n1")
	h.heartbeat("n1")
	h.ok("n1", 10)
	h.ok("n1", 20)
	waitTotal(t, s, 2)
	before := h.endpointsAnswer("n1")

	huge := strings.Repeat("t", 200)
	poison := []struct{ subj, data string }{
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"latency_ms":1e308}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"latency_ms":1e39}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"latency_ms":"NaN"}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"latency_ms":NaN}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"latency_ms":"+Inf"}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"ttft_ms":1e308}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"latency_ms":-1}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"tokens":-5}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"tokens":1e30}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":false,"attempt":-1}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":false,"code":-504}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":false,"fault":"nobody"}`},
		{h.sp.Outcome("n1"), `{"kind":"completed","ok":true,"tenant":"` + huge + `"}`},
		{h.sp.Heartbeat("n1"), `{"gpu_utilization":"Infinity"}`},
		{h.sp.Heartbeat("n1"), `{"gpu_utilization":1e308}`},
		{h.sp.Heartbeat("n1"), `{"throughput_tps":1e308}`},
		{h.sp.Heartbeat("n1"), `{"in_flight":-1,"max_concurrency":-4}`},
		{h.sp.Unplaced(), `{"code":503,"attempts":-1}`},
		{h.sp.Unplaced(), `{"code":503,"tenant":"` + huge + `"}`},
	}
	for _, p := range poison {
		require.NoError(t, h.nc.Publish(p.subj, []byte(p.data)))
	}
	// Poison stored where fed.stats reads from, too.
	_, err := h.kv.Put(context.Background(), statsMeshKey, []byte(`{"mesh":{"latency_p99_ms":1e308,"total_requests":-1}}`))
	require.NoError(t, err)
	_, err = h.kv.Put(context.Background(), statsTenantKey(0), []byte(`{"tenants":{"`+huge+`":{"total_requests":5}}}`))
	require.NoError(t, err)

	// A good event after the poison: once it is counted, all were seen.
	h.ok("n1", 30)
	waitTotal(t, s, 3)
	after := h.endpointsAnswer("n1")
	assert.Equal(t, int64(3), after.SuccessfulRequests)
	assert.Equal(t, 20.0, after.AvgLatencyMs)
	assert.Equal(t, 30.0, after.LatencyP99Ms)
	assert.Equal(t, before.TotalTokens, after.TotalTokens)
	assert.Empty(t, after.Tenants, "no tenant from a poison event or record")
	assert.Empty(t, after.Unplaced)
	r, _ := h.get("n1")
	assert.Equal(t, 3, r.Samples)
	assert.Equal(t, 30.0, r.LatencyP99Ms)
}

// The belt under the decoders: even values they would refuse, applied
// directly, never make an endpoint, a fed_health write or a stats write fail.
func TestNonFiniteValuesNeverReachAnAnswer(t *testing.T) {
	h := newHarness(t)
	s := h.start(testConfig())
	h.register("n1")
	h.ok("n1", 10)
	waitTotal(t, s, 1)

	now := time.Now()
	s.mu.Lock()
	for _, v := range []float64{math.Inf(1), math.NaN(), math.Inf(-1), 1e308, -5} {
		s.applyOutcome(&record.Outcome{Kind: record.OutcomeCompleted, NodeID: "n1", OK: true, LatencyMs: v, TTFTMs: v,
			Tenant: strings.Repeat("x", 300), Attempt: math.MaxInt, Tokens: math.MaxInt, Time: now}, now)
	}
	s.applyHeartbeat(&record.Heartbeat{NodeID: "n1", GPUUtilization: math.NaN(), ThroughputTPS: math.Inf(1), Time: now}, now)
	s.mu.Unlock()

	st := h.endpointsAnswer("n1")
	assert.Equal(t, int64(6), st.TotalRequests)
	assert.Equal(t, int64(math.MaxInt64), st.TotalTokens, "saturates, never wraps negative")
	assert.Equal(t, int64(math.MaxInt64), st.Retries)
	assert.Equal(t, 10.0, st.LatencyP99Ms, "non-finite and out-of-range samples never enter the window")
	assert.Contains(t, st.Tenants, otherTenant, "an over-long tenant is never a map key")
	r, _ := h.get("n1")
	assert.Zero(t, r.GPUUtilization)
	assert.Zero(t, r.ThroughputTPS)

	// Both writers still produce values their readers accept.
	h.waitKV("n1", "written, with only the one sane sample", func(r *record.Health) bool { return r.Samples == 1 && r.ThroughputTPS == 0 })
	natsembed.Eventually(t, 0, func() error {
		e, err := h.kv.Get(context.Background(), statsMeshKey)
		if err != nil {
			return err
		}
		r, err := decodeStats(e.Key(), e.Value())
		if err != nil {
			return err
		}
		return natsembed.Check(r.Mesh != nil && r.Mesh.TotalRequests == 6, "stored %+v", r.Mesh)
	})
}
