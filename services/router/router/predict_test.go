package router

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Each input moves the expected TTFT the way it should, and cost tolerance
// is a continuous scale.
func TestPredict(t *testing.T) {
	base := func() *entry {
		c := buildCache(t, tnode{id: "n", region: "r", cost: 0.5, maxConc: 10, health: healthy(100)})
		return c.lookup("n")
	}
	q := newPlacementQuery(wire.CapGenerate, specWith(nil), "")
	q.q.callerID = -1
	ref := predict(base(), &q, 0, 0).ms
	require.Positive(t, ref)

	cases := []struct {
		name   string
		change func(e *entry, q *placementQuery) float64 // the match to use
		want   string                                    // "more", "same" or "less" than ref
	}{
		{"in flight", func(e *entry, _ *placementQuery) float64 { e.load.Store(5); return 0 }, "more"},
		{"server queue", func(e *entry, _ *placementQuery) float64 {
			e.server.set(&record.ServerLoad{Running: 4, Waiting: 6})
			return 0
		}, "more"},
		{"KV cache nearly full", func(e *entry, _ *placementQuery) float64 {
			e.server.set(&record.ServerLoad{Running: 4, KVUsage: 0.98})
			return 0
		}, "more"},
		{"prefix cached", func(*entry, *placementQuery) float64 { return 1 }, "less"},
		{"degraded by failures", func(e *entry, _ *placementQuery) float64 {
			e.state, e.failing = record.StateDegraded, true
			return 0
		}, "more"},
		{"degraded only by slow answers (its TTFT says so already)", func(e *entry, _ *placementQuery) float64 {
			e.state = record.StateDegraded
			return 0
		}, "same"},
		{"own TTFT for the model", func(e *entry, _ *placementQuery) float64 {
			e.ttft = []ttftStat{{capability: wire.CapGenerate, model: "m1", ms: 20}}
			return 0
		}, "less"},
		{"other region than the caller", func(e *entry, q *placementQuery) float64 { q.q.callerID = e.regionID + 1; return 0 }, "more"},
		{"cheaper", func(e *entry, _ *placementQuery) float64 { e.cost = 0.1; return 0 }, "less"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, q2 := base(), q
			got := predict(e, &q2, 0, tc.change(e, &q2)).ms
			switch tc.want {
			case "more":
				assert.Greater(t, got, ref)
			case "same":
				assert.InDelta(t, ref, got, 1e-9)
			default:
				assert.Less(t, got, ref)
			}
		})
	}

	// cost tolerance 0 … 100 weighs cost less and less, continuously
	var last float64
	for i, tol := range []int{0, 25, 50, 75, 100} {
		q := newPlacementQuery(wire.CapGenerate, specWith(func(s *wire.Spec) { s.CostTolerance = tol; s.PreferGPU = false }), "")
		q.q.callerID = -1
		got := predict(base(), &q, 0, 0).ms
		if i > 0 {
			assert.Less(t, got, last, "tolerance %d", tol)
		}
		last = got
	}
	assert.InDelta(t, 100, last, 0.01, "at 100 cost does not count")

	// a node without data is expected a little faster than the fleet, so it gets traffic
	fresh := buildCache(t, tnode{id: "new", region: "r", maxConc: 10, health: &record.Health{State: record.StateHealthy}}).lookup("new")
	assert.InDelta(t, 400*newNodeOptimism, predict(fresh, &q, 400, 0).base, 0.01)
}

// Chained block hashes make equal hashes mean equal prefixes; the index
// finds the nodes sent a leading run of blocks and stays bounded.
func TestPrefixIndex(t *testing.T) {
	sys := strings.Repeat("You are a helpful assistant. ", 40) // ≈ 1.1 KB
	a := blockHashes(nil, []byte(sys+"What is the capital of France?"+strings.Repeat(" pad", 40)))
	b := blockHashes(nil, []byte(sys+"Name three rivers in Spain, please."+strings.Repeat(" pad", 40)))
	shared := 0
	for shared < len(a) && shared < len(b) && a[shared] == b[shared] {
		shared++
	}
	assert.Equal(t, len(sys)/prefixBlockBytes, shared, "hashes agree exactly over the shared blocks")
	assert.Len(t, blockHashes(nil, make([]byte, prefixBlockBytes*(maxPrefixBlocks+5))), maxPrefixBlocks)
	assert.Empty(t, blockHashes(nil, []byte("short")))

	c := buildCache(t, tnode{id: "x", region: "r"}, tnode{id: "y", region: "r"})
	x, y := c.lookup("x"), c.lookup("y")
	idx := newPrefixIndex(0)
	idx.add(x, a)
	var buf [8]prefixMatch
	got := idx.match(b, buf[:0])
	require.Len(t, got, 1)
	assert.Equal(t, x, got[0].e)
	assert.Equal(t, shared, got[0].blocks)
	idx.add(y, b)
	got = idx.match(b, buf[:0])
	require.Len(t, got, 2)
	byNode := map[*entry]int{got[0].e: got[0].blocks, got[1].e: got[1].blocks}
	assert.Equal(t, len(b), byNode[y], "y was sent all of b")
	assert.Equal(t, shared, byNode[x])

	small := newPrefixIndex(64)
	for i := range 100 {
		small.add(x, blockHashes(nil, []byte(strings.Repeat(string(rune('a'+i%26)), 200)+strings.Repeat("z", i*prefixBlockBytes%4000))))
	}
	assert.LessOrEqual(t, small.size(), 2*64, "two generations at most")
}

// Requests that share a long prefix go where the first of them went (its
// server has the prefix cached), and a node whose server reports a queue
// in its ack stops getting new work.
func TestIntegrationPrefixAffinityAndServerLoad(t *testing.T) {
	e := newEnv(t, nil)
	for _, id := range []string{"a", "b", "c"} {
		e.addNode(tnode{id: id, region: "eu", maxConc: 16, health: healthy(50)})
		e.fakeNode(id, always(wire.StatusAccepted))
	}
	e.waitEligible("a", "b", "c")
	require.Eventually(t, func() bool { return e.healthLoaded("a") && e.healthLoaded("b") && e.healthLoaded("c") }, 3*time.Second, 10*time.Millisecond)
	prompt := func(group, i int) []byte {
		return []byte(strings.Repeat("system prompt of group "+strconv.Itoa(group)+". ", 60) + "question " + strconv.Itoa(i))
	}
	served := map[int]map[string]int{}
	for i := range 4 {
		for g := range 3 {
			resp, err := e.infer(client.Request{Body: prompt(g, i)})
			require.NoError(t, err)
			// the client may have its answer before the router has read
			// the outcome: the next request must not find this one in
			// flight (a prompt queued behind another's prefill is slower)
			require.Eventually(t, func() bool { return e.svc.cache.lookup(resp.Node).inFlight() == 0 }, 3*time.Second, time.Millisecond)
			if served[g] == nil {
				served[g] = map[string]int{}
			}
			served[g][resp.Node]++
		}
	}
	for g, nodes := range served {
		assert.Len(t, nodes, 1, "group %d was spread over %v", g, nodes)
	}
	out, werr := e.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}})
	require.Nil(t, werr)
	assert.Equal(t, record.StrategyExpectedTTFT, out.Strategy)

	// the server behind b reports a long queue in its acks: b stops getting work
	e2 := newEnv(t, nil)
	e2.addNode(tnode{id: "busy", region: "eu", maxConc: 16, health: healthy(20)})
	e2.addNode(tnode{id: "idle", region: "eu", maxConc: 16, health: healthy(60)})
	e2.loadedNode("busy", record.ServerLoad{Running: 16, Waiting: 40, KVUsage: 0.97})
	e2.fakeNode("idle", always(wire.StatusAccepted))
	e2.waitEligible("busy", "idle")
	require.Eventually(t, func() bool { return e2.healthLoaded("busy") && e2.healthLoaded("idle") }, 3*time.Second, 10*time.Millisecond)
	first, err := e2.infer(client.Request{})
	require.NoError(t, err)
	assert.Equal(t, "busy", first.Node, "faster on paper until its server says otherwise")
	// the client may have its answer before the router has read the ack:
	// wait until the candidates show what the ack said
	require.Eventually(t, func() bool {
		out, werr := e2.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}})
		if werr != nil {
			return false
		}
		pred := map[string]float64{}
		for _, c := range out.Candidates {
			pred[c.NodeID] = c.PredictedTTFTMs
		}
		return pred["busy"] > pred["idle"]
	}, 3*time.Second, 10*time.Millisecond)
	for range 3 {
		resp, err := e2.infer(client.Request{})
		require.NoError(t, err)
		assert.Equal(t, "idle", resp.Node)
	}
}

// loadedNode is a node agent whose acks carry its server's load.
func (e *env) loadedNode(id string, l record.ServerLoad) {
	e.t.Helper()
	sub, err := e.nc.Subscribe(subject.Default.NodeInferAt(id, "*"), func(m *nats.Msg) {
		_ = m.RespondMsg(&nats.Msg{Header: nats.Header{wire.HdrStatus: {wire.StatusAccepted}, record.HdrServerLoad: {l.Header()}}})
		rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: m.Header.Get(wire.HdrRequestID), Node: id}
		_ = e.nc.PublishMsg(rep.Done([]byte("ok"), wire.DoneInfo{Tokens: 1, LatencyMs: 1}))
		e.publishOutcome(record.Outcome{Kind: record.OutcomeCompleted, NodeID: id, RequestID: m.Header.Get(wire.HdrRequestID), OK: true, Time: time.Now()})
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(e.t, e.nc.Flush())
}

// Among the nodes a prefix was sent to, the most recent gets full credit
// and the earlier ones less (their LRU caches have had other prompts
// since).
func TestPrefixRecency(t *testing.T) {
	c := buildCache(t, tnode{id: "x", region: "r"}, tnode{id: "y", region: "r"}, tnode{id: "z", region: "r"})
	x, y, z := c.lookup("x"), c.lookup("y"), c.lookup("z")
	blocks := blockHashes(nil, []byte(strings.Repeat("shared system prompt. ", 60)))
	idx := newPrefixIndex(0)
	idx.add(z, blocks)
	idx.add(y, blocks)
	idx.add(x, blocks)
	idx.add(y, blocks) // y is the most recent again, x the second, z the third

	var buf [8]prefixMatch
	r := placementQuery{blocks: blocks}
	r.matches = idx.match(blocks, buf[:0])
	for _, tc := range []struct {
		e    *entry
		want float64
	}{{y, rankCredit[0]}, {x, rankCredit[1]}, {z, rankCredit[2]}} {
		assert.InDelta(t, tc.want, r.prefixShare(tc.e), 1e-9, tc.e.id)
	}
}

// Predictions within tieBand of each other are a tie, won by the node
// holding more of the prompt; outside it the lower one wins.
func TestPredictionBeats(t *testing.T) {
	cases := []struct {
		name string
		a, b prediction
		want bool
	}{
		{"lower wins", prediction{ms: 90}, prediction{ms: 100}, true},
		{"higher loses", prediction{ms: 110}, prediction{ms: 100}, false},
		{"a tie goes to the warmer cache", prediction{ms: 101, match: 1}, prediction{ms: 100}, true},
		{"a tie against the warmer cache", prediction{ms: 99, match: 0}, prediction{ms: 100, match: 0.5}, false},
		{"beyond the band the cache does not decide", prediction{ms: 110, match: 1}, prediction{ms: 100}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.a.beats(&tc.b))
		})
	}
}

// A node whose p50 rounds to 0 (health keeps 0.1 ms) has data: it answers
// in under 0.05 ms and must not get the new-node prior, which made a
// backend answering at once lose every placement to a 20 ms node.
func TestBaseTTFTOfAnInstantNode(t *testing.T) {
	cases := []struct {
		name string
		h    record.Health
		want float64
	}{
		{"no samples: no data", record.Health{}, 0},
		{"samples, p50 rounds to 0", record.Health{Samples: 3}, minBaseMs},
		{"samples, p50 3 ms", record.Health{Samples: 3, LatencyP50Ms: 3}, 3},
		{"streams of the model, ttft rounds to 0", record.Health{Samples: 3, LatencyP50Ms: 3,
			Models: map[string]record.ModelStats{"generate/m": {Samples: 3, Streams: 3}}}, minBaseMs},
		{"the model without streams: the node's p50", record.Health{Samples: 3, LatencyP50Ms: 3,
			Models: map[string]record.ModelStats{"generate/m": {Samples: 3}}}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &entry{}
			h := c.h
			e.setHealth(&h)
			assert.Equal(t, c.want, e.baseTTFT("generate", "m"))
		})
	}
}
