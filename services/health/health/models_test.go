package health

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// done is a successful completed outcome of capability/model.
func done(capability, model string, stream bool, latencyMs, ttftMs float64, tokens int) record.Outcome {
	return record.Outcome{Kind: record.OutcomeCompleted, NodeID: "n1", OK: true, Capability: capability, Model: model,
		Stream: stream, LatencyMs: latencyMs, TTFTMs: ttftMs, Tokens: tokens}
}

var (
	gen   = record.ModelStatsKey(wire.CapGenerate, "llama-3-8b")
	embed = record.ModelStatsKey(wire.CapEmbed, "bge-small")
)

func TestModelStatsWindow(t *testing.T) {
	failed := done(wire.CapGenerate, "llama-3-8b", true, 500, 100, 10)
	failed.OK, failed.Code = false, wire.CodeInternal
	dispatchFailed := done(wire.CapGenerate, "llama-3-8b", true, 500, 100, 10)
	dispatchFailed.Kind = record.OutcomeDispatchFailed
	warmup := done(wire.CapGenerate, "llama-3-8b", true, 130, 40, 4)
	warmup.Kind = record.OutcomeProbe
	failedWarmup := warmup
	failedWarmup.OK, failedWarmup.Code = false, wire.CodeInternal

	cases := []struct {
		name string
		in   []record.Outcome
		want map[string]record.ModelStats
	}{
		{"nothing", nil, nil},
		{"a whole answer sets latency only: its ttft is its latency",
			[]record.Outcome{done(wire.CapGenerate, "llama-3-8b", false, 800, 799.9, 40)},
			map[string]record.ModelStats{gen: {LatencyP50Ms: 800, LatencyP99Ms: 800, Samples: 1}}},
		{"a stream: ttft, tpot = (latency - ttft) / (tokens - 1), decode throughput",
			[]record.Outcome{done(wire.CapGenerate, "llama-3-8b", true, 1000, 100, 10)},
			map[string]record.ModelStats{gen: {TTFTP50Ms: 100, TTFTP99Ms: 100, TPOTP50Ms: 100, TPOTP99Ms: 100,
				LatencyP50Ms: 1000, LatencyP99Ms: 1000, ThroughputTPS: 10, Samples: 1, Streams: 1}}},
		{"a one-token stream has a ttft but no tpot or throughput",
			[]record.Outcome{done(wire.CapGenerate, "llama-3-8b", true, 50, 50, 1)},
			map[string]record.ModelStats{gen: {TTFTP50Ms: 50, TTFTP99Ms: 50, LatencyP50Ms: 50, LatencyP99Ms: 50,
				Samples: 1, Streams: 1}}},
		{"an embedding does not touch generate's stats",
			[]record.Outcome{
				done(wire.CapGenerate, "llama-3-8b", true, 1000, 100, 10),
				done(wire.CapEmbed, "bge-small", false, 31, 31, 8),
			},
			map[string]record.ModelStats{
				gen: {TTFTP50Ms: 100, TTFTP99Ms: 100, TPOTP50Ms: 100, TPOTP99Ms: 100,
					LatencyP50Ms: 1000, LatencyP99Ms: 1000, ThroughputTPS: 10, Samples: 1, Streams: 1},
				embed: {LatencyP50Ms: 31, LatencyP99Ms: 31, Samples: 1},
			}},
		{"the same model under two capabilities is two entries",
			[]record.Outcome{
				done(wire.CapGenerate, "qwen", false, 100, 0, 5),
				done(wire.CapCode, "qwen", false, 300, 0, 5),
			},
			map[string]record.ModelStats{
				record.ModelStatsKey(wire.CapGenerate, "qwen"): {LatencyP50Ms: 100, LatencyP99Ms: 100, Samples: 1},
				record.ModelStatsKey(wire.CapCode, "qwen"):     {LatencyP50Ms: 300, LatencyP99Ms: 300, Samples: 1},
			}},
		{"throughput is the window's decode tokens over its decode time: a burst cannot explode it",
			[]record.Outcome{
				done(wire.CapGenerate, "llama-3-8b", true, 1100, 100, 11),   // 10 tokens in 1000 ms
				done(wire.CapGenerate, "llama-3-8b", true, 100.001, 100, 2), // 1 token in 0.001 ms
			},
			map[string]record.ModelStats{gen: {TTFTP50Ms: 100, TTFTP99Ms: 100, TPOTP50Ms: 0, TPOTP99Ms: 100,
				LatencyP50Ms: 100, LatencyP99Ms: 1100, ThroughputTPS: 11, Samples: 2, Streams: 2}}},
		{"rounded to 0.1",
			[]record.Outcome{done(wire.CapGenerate, "llama-3-8b", true, 1000.0061157226562, 100.04, 8)},
			map[string]record.ModelStats{gen: {TTFTP50Ms: 100, TTFTP99Ms: 100, TPOTP50Ms: 128.6, TPOTP99Ms: 128.6,
				LatencyP50Ms: 1000, LatencyP99Ms: 1000, ThroughputTPS: 7.8, Samples: 1, Streams: 1}}},
		{"a stream whose ttft exceeds its latency gives no timing but its latency",
			[]record.Outcome{done(wire.CapGenerate, "llama-3-8b", true, 100, 200, 10)},
			map[string]record.ModelStats{gen: {LatencyP50Ms: 100, LatencyP99Ms: 100, Samples: 1}}},
		{"a stream without ttft gives no ttft or tpot",
			[]record.Outcome{done(wire.CapGenerate, "llama-3-8b", true, 100, 0, 10)},
			map[string]record.ModelStats{gen: {LatencyP50Ms: 100, LatencyP99Ms: 100, Samples: 1}}},
		{"a node's warm-up (a probe naming its model) counts like a stream",
			[]record.Outcome{warmup},
			map[string]record.ModelStats{gen: {TTFTP50Ms: 40, TTFTP99Ms: 40, TPOTP50Ms: 30, TPOTP99Ms: 30,
				LatencyP50Ms: 130, LatencyP99Ms: 130, ThroughputTPS: 33.3, Samples: 1, Streams: 1}}},
		{"failures, failed warm-ups, dispatch failures, bad or missing ids count nowhere",
			[]record.Outcome{
				failed, failedWarmup, dispatchFailed,
				done("", "llama-3-8b", false, 10, 0, 1),
				done(wire.CapGenerate, "", false, 10, 0, 1),
				done("bogus", "llama-3-8b", false, 10, 0, 1),
				done(wire.CapGenerate, "a/b", false, 10, 0, 1),
				done(wire.CapGenerate, string(make([]byte, 129)), false, 10, 0, 1),
			},
			nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms := newModels(DefaultModelWindow)
			for _, o := range tc.in {
				ms.add(&o)
			}
			assert.Equal(t, tc.want, ms.render())
		})
	}
}

func TestModelStatsPercentilesOverTheLastWindow(t *testing.T) {
	ms := newModels(100)
	// 50 old streams far slower, then 100 with ttft 1..100 ms and tpot
	// 2..200 ms: only the last 100 count.
	for range 50 {
		o := done(wire.CapGenerate, "m", true, 100000, 50000, 2)
		ms.add(&o)
	}
	for i := 1; i <= 100; i++ {
		o := done(wire.CapGenerate, "m", true, float64(i)+float64(2*i)*10, float64(i), 11)
		ms.add(&o)
	}
	got := ms.render()[record.ModelStatsKey(wire.CapGenerate, "m")]
	assert.Equal(t, 100, got.Samples)
	assert.Equal(t, 100, got.Streams)
	assert.Equal(t, 50.0, got.TTFTP50Ms)
	assert.Equal(t, 99.0, got.TTFTP99Ms)
	assert.Equal(t, 100.0, got.TPOTP50Ms)
	assert.Equal(t, 198.0, got.TPOTP99Ms)
	assert.Equal(t, 1050.0, got.LatencyP50Ms)
	// 1000 tokens over 2 × (1 + … + 100) × 10 ms = 101 s
	assert.Equal(t, 9.9, got.ThroughputTPS)
}

func TestModelStatsEvictTheLeastRecentlyUpdated(t *testing.T) {
	ms := newModels(8)
	add := func(i int) {
		o := done(wire.CapGenerate, fmt.Sprintf("m%02d", i), false, float64(i+1), 0, 1)
		ms.add(&o)
	}
	for i := range record.MaxModelStats {
		add(i)
	}
	add(0) // m00 is the most recent now; m01 the least
	require.Len(t, ms.render(), record.MaxModelStats)
	add(record.MaxModelStats)
	got := ms.render()
	assert.Len(t, got, record.MaxModelStats)
	assert.Contains(t, got, record.ModelStatsKey(wire.CapGenerate, "m00"))
	assert.NotContains(t, got, record.ModelStatsKey(wire.CapGenerate, "m01"))
	assert.Contains(t, got, record.ModelStatsKey(wire.CapGenerate, fmt.Sprintf("m%02d", record.MaxModelStats)))
	assert.Equal(t, 2, got[record.ModelStatsKey(wire.CapGenerate, "m00")].Samples)

	// Many more keys: still bounded, and the newest always kept.
	for i := range 1000 {
		add(100 + i)
	}
	got = ms.render()
	assert.Len(t, got, record.MaxModelStats)
	assert.Contains(t, got, record.ModelStatsKey(wire.CapGenerate, "m1099"))
	assert.NotContains(t, got, record.ModelStatsKey(wire.CapGenerate, "m00"))
}

func TestModelStatsWindowIsBounded(t *testing.T) {
	ms := newModels(4)
	for i := range 10 {
		o := done(wire.CapGenerate, "m", true, float64(100+i), 10, 2)
		ms.add(&o)
	}
	got := ms.render()[record.ModelStatsKey(wire.CapGenerate, "m")]
	assert.Equal(t, 4, got.Samples)
	assert.Equal(t, 4, got.Streams)
	assert.Equal(t, 107.0, got.LatencyP50Ms, "nearest rank over 106..109")
	e := ms.m[record.ModelStatsKey(wire.CapGenerate, "m")]
	for _, w := range []window{e.lat, e.ttft, e.tpot, e.decodeTokens, e.decodeMs} {
		assert.Equal(t, 4, w.len(), "every window holds at most its size")
	}
}

// Records share the rendered map: a new sample must build a new one, not
// change what a record already written (or being encoded) holds.
func TestModelStatsRenderedMapIsNeverMutated(t *testing.T) {
	ms := newModels(8)
	o := done(wire.CapGenerate, "m", false, 10, 0, 1)
	ms.add(&o)
	first := ms.render()
	again := ms.render()
	assert.Equal(t, fmt.Sprintf("%p", first), fmt.Sprintf("%p", again), "unchanged: the same map, no re-render")
	o = done(wire.CapGenerate, "m", false, 30, 0, 1)
	ms.add(&o)
	o = done(wire.CapEmbed, "e", false, 5, 0, 1)
	ms.add(&o)
	assert.Len(t, first, 1)
	assert.Equal(t, 1, first[record.ModelStatsKey(wire.CapGenerate, "m")].Samples)
	assert.Equal(t, 2, ms.render()[record.ModelStatsKey(wire.CapGenerate, "m")].Samples)
}

func TestModelStatsSeed(t *testing.T) {
	stored := map[string]record.ModelStats{
		gen:            {LatencyP50Ms: 900, LatencyP99Ms: 950, TTFTP50Ms: 80, Samples: 200, Streams: 150},
		embed:          {LatencyP50Ms: 31, LatencyP99Ms: 31, Samples: 3},
		"not-a-key":    {Samples: 1},
		"generate/a/b": {Samples: 1},
		"bogus/model":  {Samples: 1},
	}
	ms := newModels(8)
	ms.seed(stored)
	assert.Equal(t, map[string]record.ModelStats{gen: stored[gen], embed: stored[embed]}, ms.render(),
		"valid keys shown as stored until own samples")
	o := done(wire.CapEmbed, "bge-small", false, 12, 0, 1)
	ms.add(&o)
	got := ms.render()
	assert.Equal(t, record.ModelStats{LatencyP50Ms: 12, LatencyP99Ms: 12, Samples: 1}, got[embed], "own samples replace the stored ones")
	assert.Equal(t, stored[gen], got[gen])

	// Seeded entries are the first to go.
	for i := range record.MaxModelStats - 2 {
		o := done(wire.CapGenerate, fmt.Sprintf("m%02d", i), false, 1, 0, 1)
		ms.add(&o)
	}
	o = done(wire.CapGenerate, "one-more", false, 1, 0, 1)
	ms.add(&o)
	got = ms.render()
	assert.Len(t, got, record.MaxModelStats)
	assert.NotContains(t, got, gen)
	assert.Contains(t, got, embed)
}

func TestSameModelsForRouting(t *testing.T) {
	base := record.ModelStats{TTFTP50Ms: 100, TTFTP99Ms: 200, TPOTP50Ms: 20, TPOTP99Ms: 40, LatencyP50Ms: 1000,
		LatencyP99Ms: 2000, ThroughputTPS: 50, Samples: 30, Streams: 25}
	with := func(f func(m *record.ModelStats)) map[string]record.ModelStats {
		m := base
		f(&m)
		return map[string]record.ModelStats{gen: m}
	}
	cases := []struct {
		name string
		b    map[string]record.ModelStats
		same bool
	}{
		{"identical", with(func(*record.ModelStats) {}), true},
		{"latency 4 % up", with(func(m *record.ModelStats) { m.LatencyP50Ms = 1040 }), true},
		{"latency 6 % up", with(func(m *record.ModelStats) { m.LatencyP50Ms = 1060 }), false},
		{"ttft p99 6 % down", with(func(m *record.ModelStats) { m.TTFTP99Ms = 188 }), false},
		{"tpot p50 10 % up", with(func(m *record.ModelStats) { m.TPOTP50Ms = 22 }), false},
		{"throughput 3 % down", with(func(m *record.ModelStats) { m.ThroughputTPS = 48.5 }), true},
		{"throughput gone", with(func(m *record.ModelStats) { m.ThroughputTPS = 0 }), false},
		{"more samples, same side of the p99 threshold", with(func(m *record.ModelStats) { m.Samples = 200 }), true},
		{"below the p99 threshold", with(func(m *record.ModelStats) { m.Samples = minSamplesForP99 - 1 }), false},
		{"first stream", with(func(m *record.ModelStats) { m.Streams = 0 }), false},
		{"another key", map[string]record.ModelStats{embed: base}, false},
		{"a key more", map[string]record.ModelStats{gen: base, embed: base}, false},
		{"none", nil, false},
	}
	a := map[string]record.ModelStats{gen: base}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.same, sameModels(a, tc.b))
			assert.Equal(t, tc.same, sameModels(tc.b, a), "symmetric")
			ra, rb := record.Health{Models: a}, record.Health{Models: tc.b}
			assert.Equal(t, tc.same, sameForRouting(&ra, &rb), "sameForRouting compares models")
		})
	}
	assert.True(t, sameModels(nil, map[string]record.ModelStats{}), "nil and empty agree")
}

func TestSameServerForRouting(t *testing.T) {
	base := record.ServerLoad{Running: 4, Waiting: 1, KVUsage: 0.42, PrefixHitRate: 0.6}
	with := func(f func(l *record.ServerLoad)) *record.ServerLoad {
		l := base
		f(&l)
		return &l
	}
	cases := []struct {
		name string
		b    *record.ServerLoad
		same bool
	}{
		{"identical", with(func(*record.ServerLoad) {}), true},
		{"only scraped later", with(func(l *record.ServerLoad) { l.ScrapedAt = l.ScrapedAt.Add(1e9) }), true},
		{"running changed", with(func(l *record.ServerLoad) { l.Running = 5 }), false},
		{"waiting changed", with(func(l *record.ServerLoad) { l.Waiting = 0 }), false},
		{"kv usage a hair", with(func(l *record.ServerLoad) { l.KVUsage = 0.425 }), true},
		{"kv usage moved", with(func(l *record.ServerLoad) { l.KVUsage = 0.5 }), false},
		{"prefix hit rate moved", with(func(l *record.ServerLoad) { l.PrefixHitRate = 0.3 }), false},
		{"gone", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.same, sameServer(&base, tc.b))
			assert.Equal(t, tc.same, sameServer(tc.b, &base))
			ra, rb := record.Health{Server: &base}, record.Health{Server: tc.b}
			assert.Equal(t, tc.same, sameForRouting(&ra, &rb))
		})
	}
	assert.True(t, sameServer(nil, nil))
}

func TestNear(t *testing.T) {
	cases := []struct {
		a, b float64
		want bool
	}{
		{0, 0, true}, {0, 0.1, false}, {100, 105, true}, {100, 105.3, false}, {105.3, 100, false},
		{1e300, 1.04e300, true}, {math.MaxFloat64, math.MaxFloat64, true},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, near(tc.a, tc.b), "near(%v, %v)", tc.a, tc.b)
	}
}

// Heartbeats with the model server's load and outcomes as node agents
// publish them, on a real nats-server: fed_health carries per-model stats
// and the server load, and the node's own throughput stays the
// heartbeat's whatever a whole answer's timing says.
func TestFedHealthCarriesModelsAndServerLoad(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	s := h.start(cfg)
	load := &record.ServerLoad{Running: 3, Waiting: 1, KVUsage: 0.42, PrefixHitRate: 0.61, ScrapedAt: time.Now().UTC()}
	beat := func(queue int, server *record.ServerLoad) {
		h.publish(h.sp.Heartbeat("n1"), record.Heartbeat{NodeID: "n1", Time: time.Now(), MaxConcurrency: 4,
			QueueDepth: queue, ThroughputTPS: 42.5, Server: server})
	}
	outcome := func(o record.Outcome) {
		o.Time = time.Now()
		h.publish(h.sp.Outcome("n1"), o)
	}
	beat(0, load)
	// One embedding (a whole answer: ttft = latency), one whole generate
	// answer, three streams of 10 tokens.
	outcome(done(wire.CapEmbed, "bge-small", false, 31, 31, 8))
	outcome(done(wire.CapGenerate, "llama-3-8b", false, 800, 799.9, 40))
	for range 3 {
		outcome(done(wire.CapGenerate, "llama-3-8b", true, 1000, 100, 10))
	}
	// fed.health.get answers from memory: once it shows every outcome, a
	// heartbeat with a new queue depth makes the next record carry them all.
	natsembed.Eventually(t, 0, func() error {
		r, werr := h.get("n1")
		if werr != nil {
			return werr
		}
		return natsembed.Check(r.Models[gen].Samples == 4 && r.Models[embed].Samples == 1, "models %+v", r.Models)
	})
	beat(7, load)
	r := h.waitKV("n1", "queue depth 7", func(r *record.Health) bool { return r.QueueDepth == 7 })

	assert.Equal(t, map[string]record.ModelStats{
		gen: {TTFTP50Ms: 100, TTFTP99Ms: 100, TPOTP50Ms: 100, TPOTP99Ms: 100,
			LatencyP50Ms: 1000, LatencyP99Ms: 1000, ThroughputTPS: 10, Samples: 4, Streams: 3},
		embed: {LatencyP50Ms: 31, LatencyP99Ms: 31, Samples: 1},
	}, r.Models)
	require.NotNil(t, r.Server)
	assert.Equal(t, load.Running, r.Server.Running)
	assert.Equal(t, load.Waiting, r.Server.Waiting)
	assert.Equal(t, load.KVUsage, r.Server.KVUsage)
	assert.Equal(t, load.PrefixHitRate, r.Server.PrefixHitRate)
	assert.True(t, load.ScrapedAt.Equal(r.Server.ScrapedAt))
	assert.Equal(t, 42.5, r.ThroughputTPS, "the node's throughput is the heartbeat's, never derived from outcomes")
	assert.Equal(t, 5, r.Samples, "node-level latency: every successful request")
	assert.Equal(t, 1000.0, r.LatencyP50Ms)
	e, err := h.kv.Get(context.Background(), buckets.NodeKey("n1"))
	require.NoError(t, err)
	assert.Contains(t, string(e.Value()), `"embed/bge-small":{"latency_p50_ms":31,"latency_p99_ms":31,"samples":1}`,
		"the stored JSON itself: no timing fields for a whole answer")

	// A model's first sample alone is worth a routine write (a latency of
	// 1000 ms leaves every node-level field as it was).
	outcome(done(wire.CapCode, "qwen-coder-7b", true, 1000, 40, 5))
	qwen := record.ModelStatsKey(wire.CapCode, "qwen-coder-7b")
	r = h.waitKV("n1", "the new model", func(r *record.Health) bool { return r.Models[qwen].Streams == 1 })
	assert.Equal(t, 240.0, r.Models[qwen].TPOTP50Ms)
	assert.Equal(t, 1000.0, r.LatencyP50Ms)
	assert.Equal(t, 1000.0, r.LatencyP99Ms)

	// A second instance starting now shows the stored models until it has
	// samples of its own.
	s2 := h.start(cfg)
	m, ok := inMemory(s2, "n1")
	require.True(t, ok)
	assert.Equal(t, r.Models, m.Models)
	assert.NotNil(t, m.Server)

	// Heartbeats stop carrying the load: the record drops it.
	beat(7, nil)
	r = h.waitKV("n1", "no server load", func(r *record.Health) bool { return r.Server == nil })
	assert.Len(t, r.Models, 3, "models stay")
	m, _ = inMemory(s, "n1")
	assert.Nil(t, m.Server)
}

// FuzzModelStats: outcomes come from any NATS client and stored records
// from any writer of fed_health. Whatever the decoders accept must render
// per-model stats that DecodeHealth accepts back, bounded, with timing
// from streams only.
func FuzzModelStats(f *testing.F) {
	f.Add([]byte(`{"kind":"completed","ok":true,"capability":"generate","model":"m","stream":true,"latency_ms":1000,"ttft_ms":100,"tokens":10}`),
		[]byte(`{"models":{"embed/e":{"latency_p50_ms":31,"samples":1}}}`))
	f.Fuzz(func(t *testing.T, outcome, stored []byte) {
		ms := newModels(4)
		if h, err := record.DecodeHealth("nodes.n1", stored); err == nil {
			ms.seed(h.Models)
		}
		o, err := record.DecodeOutcome("fed.outcome.n1", outcome)
		if err == nil {
			for range 3 {
				ms.add(&o)
			}
		}
		got := ms.render()
		data, err := json.Marshal(record.Health{NodeID: "n1", Models: got})
		if err != nil {
			t.Fatalf("encode %+v: %v", got, err)
		}
		back, err := record.DecodeHealth("nodes.n1", data)
		if err != nil {
			t.Fatalf("rendered models refused: %v\n%s", err, data)
		}
		if len(back.Models) > record.MaxModelStats {
			t.Fatalf("%d models", len(back.Models))
		}
		if e := ms.m[record.ModelStatsKey(o.Capability, o.Model)]; err == nil && !o.Stream && e != nil && e.ttft.len() > 0 {
			t.Fatalf("a whole answer counted as a stream: %+v", got)
		}
		for k, e := range ms.m {
			// seeded values are shown as stored; own ones must be consistent
			if m := got[k]; !validModelKey(k) || e.lat.len() > 0 && (m.Streams > m.Samples || m.Samples > 4) {
				t.Fatalf("models[%q] = %+v", k, m)
			}
		}
	})
}

// A node agent's warm-up (a probe outcome naming its model) gives the node
// its per-model TTFT before any request, and counts as a success towards
// its state, but is no request: the request counters, the node-level
// latency and the success rate do not move, and failed warm-ups leave the
// circuit alone.
func TestWarmupProbeSeedsModelStats(t *testing.T) {
	h := newHarness(t)
	s := h.start(testConfig())
	h.publish(h.sp.Heartbeat("n1"), record.Heartbeat{NodeID: "n1", Time: time.Now(), MaxConcurrency: 4})
	h.publish(h.sp.Heartbeat("n2"), record.Heartbeat{NodeID: "n2", Time: time.Now(), MaxConcurrency: 4})
	warm := done(wire.CapGenerate, "llama-3-8b", true, 130, 40, 4)
	warm.Kind, warm.RequestID, warm.Time = record.OutcomeProbe, "warmup", time.Now()
	h.publish(h.sp.Outcome("n1"), warm)
	r := h.waitKV("n1", "the warm-up's model stats", func(r *record.Health) bool { return r.Models[gen].Streams == 1 })
	m, ok := inMemory(s, "n1")
	require.True(t, ok)
	assert.Equal(t, record.StateUnknown, m.State, "one success of the %d that make a node healthy", DefaultConfig().HealthyAfter)
	assert.Equal(t, 40.0, r.Models[gen].TTFTP50Ms)
	assert.Zero(t, r.Samples, "node-level latency counts requests only")
	assert.Zero(t, r.LatencyP50Ms)

	failed := warm
	failed.NodeID, failed.OK, failed.Code, failed.Error = "n2", false, wire.CodeInternal, "connection refused"
	for range DefaultConfig().FailureThreshold + 1 {
		failed.Time = time.Now()
		h.publish(h.sp.Outcome("n2"), failed)
	}
	r2 := h.waitKV("n2", "failed warm-ups judged", func(r *record.Health) bool { return r.State == record.StateUnhealthy })
	assert.Equal(t, record.CircuitClosed, r2.Circuit, "a warm-up is not a request: the circuit stays closed")
	assert.Equal(t, 1.0, r2.SuccessRate, "the rate of a node without requests, as before its warm-ups")
	assert.Empty(t, r2.Models)

	st := h.stats()
	assert.Zero(t, st.TotalRequests, "warm-ups are not requests")
	assert.Zero(t, st.Nodes["n1"].TotalRequests)
	assert.Zero(t, st.Nodes["n2"].FailedRequests)
}
