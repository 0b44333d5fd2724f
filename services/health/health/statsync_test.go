package health

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// statsOf is fed.stats as one instance would answer it.
func statsOf(s *Service) record.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updateMeshState()
	return s.stats()
}

// traffic publishes a batch of outcomes and unplaced events over three
// nodes and three tenants; round varies the latencies. It returns how many
// requests it made.
func (h *harness) traffic(round, n int) int64 {
	h.t.Helper()
	var total int64
	for i := range n {
		id := fmt.Sprintf("n%d", i%3)
		tenant := fmt.Sprintf("t%d", i%3)
		switch i % 5 {
		case 4:
			h.publish(h.sp.Outcome(id), record.Outcome{Kind: record.OutcomeCompleted, NodeID: id, Code: wire.CodeInternal,
				Tenant: tenant, Attempt: 2, Time: time.Now()})
		case 3:
			h.publish(h.sp.Unplaced(), record.Unplaced{Code: wire.CodeNoCapacity, Error: "all attempts failed", Attempts: 3, Tenant: tenant})
		default:
			h.publish(h.sp.Outcome(id), record.Outcome{Kind: record.OutcomeCompleted, NodeID: id, OK: true, Tenant: tenant,
				LatencyMs: float64(10 + (round*n+i)%97), TTFTMs: float64(1 + i%7), Tokens: 5, Stream: i%2 == 0, Time: time.Now()})
		}
		total++
		if i%7 == 0 {
			h.publish(h.sp.RouterFailed(id), record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: id, Code: wire.CodeOverloaded, Error: "busy"})
		}
	}
	return total
}

func waitTotal(t *testing.T, s *Service, want int64) {
	t.Helper()
	natsembed.Eventually(t, 0, func() error {
		got := statsOf(s).TotalRequests
		return natsembed.Check(got == want, "total_requests %d, want %d", got, want)
	})
}

// Issue 12: after a health instance restarts, consecutive fed.stats answers
// said 422 and 4153 total requests. Now every answer, whichever instance
// gives it, is the same once the mesh is quiet.
func TestStatsSameWhicheverInstanceAnswers(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	for _, id := range []string{"n0", "n1", "n2"} {
		h.register(id)
	}
	s1 := h.start(cfg)
	s2 := h.start(cfg)
	want := h.traffic(0, 200)
	waitTotal(t, s1, want)
	waitTotal(t, s2, want)

	// Restart one instance, then more traffic.
	require.NoError(t, s2.Stop())
	s3 := h.start(cfg)
	assert.Equal(t, want, statsOf(s3).TotalRequests, "the restarted instance continues from the stored counters")
	want += h.traffic(1, 150)

	// Quiescence: both instances give the same answer, field for field.
	var a record.Stats
	natsembed.Eventually(t, 0, func() error {
		a = statsOf(s1)
		b := statsOf(s3)
		if a.TotalRequests != want {
			return fmt.Errorf("s1 total_requests %d, want %d", a.TotalRequests, want)
		}
		a1, _ := json.Marshal(a)
		b1, _ := json.Marshal(b)
		return natsembed.Check(string(a1) == string(b1), "instances differ:\ns1 %s\ns3 %s", a1, b1)
	})
	assert.Equal(t, int64(40+30), a.Unplaced["503"], "unplaced by code survive the restart")
	require.Len(t, a.Nodes, 3)
	require.Len(t, a.Tenants, 3)
	var nodeSum, tenantSum int64
	for _, c := range a.Nodes {
		nodeSum += c.TotalRequests
	}
	for _, c := range a.Tenants {
		tenantSum += c.TotalRequests
	}
	assert.Equal(t, want-a.Unplaced["503"], nodeSum, "per-node counters survive the restart")
	assert.Equal(t, want, tenantSum, "per-tenant counters survive the restart")
	assert.Positive(t, a.LatencyP99Ms)
	assert.Positive(t, a.AvgLatencyMs)

	// The queue group lets either instance answer: every answer agrees.
	first := h.stats()
	for range 20 {
		st := h.stats()
		assert.Equal(t, first.Counters, st.Counters)
		assert.Equal(t, first.Nodes, st.Nodes)
		assert.Equal(t, first.Tenants, st.Tenants)
		assert.Equal(t, first.Unplaced, st.Unplaced)
	}
	assert.Equal(t, want, first.TotalRequests)
}

// With every instance restarted (one at a time or all at once), fed.stats
// continues from the stored counters instead of starting over.
func TestStatsSurviveRestartOfEveryInstance(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	h.register("n0")
	s1 := h.start(cfg)
	want := h.traffic(0, 40)
	waitTotal(t, s1, want)
	before := statsOf(s1)
	require.NoError(t, s1.Stop()) // the final flush stores everything

	s2 := h.start(cfg)
	after := statsOf(s2)
	assert.Equal(t, before.Counters, after.Counters, "same answer right after the restart, percentiles included")
	assert.Equal(t, before.Tenants, after.Tenants)
	assert.Equal(t, before.Unplaced, after.Unplaced)
	assert.Equal(t, before.Nodes["n0"], after.Nodes["n0"])

	h.ok("n0", 5)
	waitTotal(t, s2, want+1)
	assert.Equal(t, before.SuccessfulRequests+1, statsOf(s2).SuccessfulRequests, "new events add to the seeded counters")
}

// The stats keys live next to nodes.<id> in fed_health: no reader of node
// keys may take them for a node.
func TestStatsKeysAreNotNodes(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	h.register("n0")
	s1 := h.start(cfg)
	h.traffic(0, 20)
	natsembed.Eventually(t, 0, func() error {
		_, err := h.kv.Get(context.Background(), statsMeshKey)
		return err
	})
	keys, err := h.kv.Keys(context.Background())
	require.NoError(t, err)
	var stats int
	for _, k := range keys {
		if strings.HasPrefix(k, buckets.StatsPrefix) {
			stats++
			assert.Empty(t, buckets.NodeIDOfKey(k), "stats key %s reads as a node key", k)
		}
	}
	assert.Positive(t, stats)
	require.NoError(t, s1.Stop())

	logs, log := natsembed.NewLogBuffer(t)
	h.startLogging(cfg, log)
	data, werr := h.request(h.sp.HealthList(), nil)
	require.Nil(t, werr)
	assert.NotContains(t, string(data), "stats")
	assert.NotContains(t, logs.String(), "undecodable")
}

// Another writer stored larger counters (an instance that saw more): the
// answer is the per-counter max, and this instance's next write keeps it.
func TestStatsMergeWithStoredValue(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	s := h.start(cfg)
	h.ok("n0", 10)
	h.ok("n0", 30)
	waitTotal(t, s, 2)
	natsembed.Eventually(t, 0, func() error {
		_, err := h.kv.Get(context.Background(), statsMeshKey)
		return err
	})

	foreign := statsRecord{Mesh: &statSlice{TotalRequests: 1000, FailedRequests: 998, Retries: 7}, Unplaced: map[string]int64{"429": 5}}
	data, err := json.Marshal(foreign)
	require.NoError(t, err)
	_, err = h.kv.Put(context.Background(), statsMeshKey, data)
	require.NoError(t, err)

	natsembed.Eventually(t, 0, func() error {
		st := statsOf(s)
		return natsembed.Check(st.TotalRequests == 1000 && st.SuccessfulRequests == 2 && st.FailedRequests == 998 &&
			st.Retries == 7 && st.Unplaced["429"] == 5 && st.AvgLatencyMs == 20, "merged answer %+v", st)
	})

	h.ok("n0", 20) // own: 3 requests, still below the stored 1000
	natsembed.Eventually(t, 0, func() error {
		e, err := h.kv.Get(context.Background(), statsMeshKey)
		if err != nil {
			return err
		}
		r, err := decodeStats(e.Key(), e.Value())
		if err != nil {
			return err
		}
		m := r.Mesh
		return natsembed.Check(m != nil && m.TotalRequests == 1000 && m.SuccessfulRequests == 3 && m.Retries == 7 &&
			r.Unplaced["429"] == 5, "stored %+v %v", m, r.Unplaced)
	})
}

// A stored stats value that does not decode is ignored (and replaced at
// the next write); it never reaches an answer.
func TestUndecodableStoredStatsReplaced(t *testing.T) {
	h := newHarness(t)
	s := h.start(testConfig())
	_, err := h.kv.Put(context.Background(), statsMeshKey, []byte(`{"mesh":{"total_requests":-5,"latency_p99_ms":1e308}}`))
	require.NoError(t, err)
	h.ok("n0", 10)
	waitTotal(t, s, 1)
	natsembed.Eventually(t, 0, func() error {
		e, err := h.kv.Get(context.Background(), statsMeshKey)
		if err != nil {
			return err
		}
		r, err := decodeStats(e.Key(), e.Value())
		if err != nil {
			return err
		}
		return natsembed.Check(r.Mesh != nil && r.Mesh.TotalRequests == 1, "stored %+v", r.Mesh)
	})
	assert.Equal(t, 10.0, statsOf(s).LatencyP99Ms)
}

func TestMergeSliceIsAJoin(t *testing.T) {
	a := statSlice{TotalRequests: 10, SuccessfulRequests: 8, FailedRequests: 2, TotalTokens: 40, LatencySumMs: 80, LatencyN: 8,
		LatencyP50Ms: 9, LatencyP99Ms: 20, TTFTP50Ms: 3, Samples: 8}
	b := statSlice{TotalRequests: 12, SuccessfulRequests: 7, FailedRequests: 5, Retries: 3, LatencySumMs: 70, LatencyN: 7,
		LatencyP50Ms: 11, LatencyP99Ms: 30, Samples: 7, DispatchFailures: 4}
	c := statSlice{TotalRequests: 3, SuccessfulRequests: 3, LatencySumMs: 33, LatencyN: 3, LatencyP50Ms: 50, LatencyP99Ms: 60,
		Samples: 8, DuplicatesDropped: 2}
	tie := a
	tie.LatencyP99Ms = 25 // same samples and n: the larger values win, on every instance
	for _, tc := range []struct {
		name string
		x, y statSlice
	}{{"a b", a, b}, {"a c", a, c}, {"b c", b, c}, {"a tie", a, tie}} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, mergeSlice(tc.x, tc.y), mergeSlice(tc.y, tc.x), "commutative")
			assert.Equal(t, tc.x, mergeSlice(tc.x, tc.x), "idempotent")
			m := mergeSlice(tc.x, tc.y)
			assert.Equal(t, m, mergeSlice(m, tc.y), "absorbs")
		})
	}
	assert.Equal(t, mergeSlice(mergeSlice(a, b), c), mergeSlice(a, mergeSlice(b, c)), "associative")

	m := mergeSlice(a, b)
	assert.Equal(t, statSlice{TotalRequests: 12, SuccessfulRequests: 8, FailedRequests: 5, TotalTokens: 40, Retries: 3,
		DispatchFailures: 4, LatencySumMs: 80, LatencyN: 8, LatencyP50Ms: 9, LatencyP99Ms: 20, TTFTP50Ms: 3, Samples: 8}, m)
	assert.Equal(t, 10.0, m.counters().AvgLatencyMs)
	assert.Equal(t, 25.0, mergeSlice(a, tie).LatencyP99Ms)
	assert.Equal(t, 20.0, mergeSlice(a, c).LatencyP99Ms, "same samples: the side with more requests behind them (more recent) wins")
}

func TestDecodeStats(t *testing.T) {
	n0 := statsNodeKey(shardOf("n0"))
	t0 := statsTenantKey(shardOf("t0"))
	wrongNode := statsNodeKey((shardOf("n0") + 1) % statsShards)
	cases := []struct {
		name, key, data string
		ok              bool
	}{
		{"mesh", statsMeshKey, `{"mesh":{"total_requests":3,"latency_sum_ms":30,"latency_n":3,"samples":3},"unplaced":{"503":2},"updated_at":"2026-01-01T00:00:00Z"}`, true},
		{"empty", statsMeshKey, `{}`, true},
		{"node", n0, `{"nodes":{"n0":{"total_requests":1}}}`, true},
		{"tenant", t0, `{"tenants":{"t0":{"total_requests":1}}}`, true},
		{"not json", statsMeshKey, `{`, false},
		{"not a stats key", "nodes.n0", `{}`, false},
		{"shard out of range", "stats.nodes.16", `{}`, false},
		{"shard not two digits", "stats.nodes.1", `{}`, false},
		{"negative counter", statsMeshKey, `{"mesh":{"total_requests":-1}}`, false},
		{"huge latency", statsMeshKey, `{"mesh":{"latency_p99_ms":1e308}}`, false},
		{"negative latency sum", statsMeshKey, `{"mesh":{"latency_sum_ms":-1}}`, false},
		{"overflowing latency sum", statsMeshKey, `{"mesh":{"latency_sum_ms":1e309}}`, false},
		{"nan string", statsMeshKey, `{"mesh":{"latency_p50_ms":"NaN"}}`, false},
		{"counter overflows int64", statsMeshKey, `{"mesh":{"total_requests":1e30}}`, false},
		{"too many samples", statsMeshKey, `{"mesh":{"samples":99999999999}}`, false},
		{"bad unplaced code", statsMeshKey, `{"unplaced":{"5000":1}}`, false},
		{"unplaced code with sign", statsMeshKey, `{"unplaced":{"+503":1}}`, false},
		{"negative unplaced", statsMeshKey, `{"unplaced":{"503":-1}}`, false},
		{"nodes under mesh", statsMeshKey, `{"nodes":{"n0":{}}}`, false},
		{"mesh under nodes", n0, `{"mesh":{}}`, false},
		{"node in the wrong shard", wrongNode, `{"nodes":{"n0":{}}}`, false},
		{"bad node id", n0, `{"nodes":{"a b":{}}}`, false},
		{"tenant too long", t0, `{"tenants":{"` + strings.Repeat("x", 129) + `":{}}}`, false},
		{"empty tenant", t0, `{"tenants":{"":{}}}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeStats(c.key, []byte(c.data))
			if c.ok {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err)
			}
		})
	}
}

// FuzzDecodeStats: fed_health is writable by anything with access to the
// bucket. Whatever decodeStats accepts must be safe to merge and to encode
// again (no NaN or Inf reaches fed.stats), and encode to what it decoded.
func FuzzDecodeStats(f *testing.F) {
	f.Add(statsMeshKey, []byte(`{"mesh":{"total_requests":3,"latency_p99_ms":12.5,"samples":3},"unplaced":{"503":1}}`))
	f.Add(statsNodeKey(shardOf("n0")), []byte(`{"nodes":{"n0":{"total_requests":1,"latency_sum_ms":3}}}`))
	f.Add(statsTenantKey(shardOf("t0")), []byte(`{"tenants":{"t0":{"retries":2}}}`))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		r, err := decodeStats(key, data)
		if err != nil {
			return
		}
		slices := []statSlice{}
		if r.Mesh != nil {
			slices = append(slices, *r.Mesh)
		}
		for _, p := range r.Nodes {
			slices = append(slices, p)
		}
		for _, p := range r.Tenants {
			slices = append(slices, p)
		}
		for _, p := range slices {
			if err := p.validate(); err != nil {
				t.Fatalf("accepted invalid slice %+v: %v", p, err)
			}
			if m := mergeSlice(p, p); m != p {
				t.Fatalf("merge not idempotent: %+v -> %+v", p, m)
			}
			if _, err := json.Marshal(p.counters()); err != nil {
				t.Fatalf("accepted slice does not encode as counters: %v", err)
			}
		}
		enc, err := json.Marshal(&r)
		if err != nil {
			t.Fatalf("accepted record does not encode: %v", err)
		}
		again, err := decodeStats(key, enc)
		if err != nil {
			t.Fatalf("re-encoded record refused: %v\n%s", err, enc)
		}
		if !sameStats(&r, &again) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, again)
		}
	})
}
