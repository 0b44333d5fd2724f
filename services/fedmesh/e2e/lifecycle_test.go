package e2e

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// A node whose connection is cut without a goodbye becomes unhealthy within
// three heartbeat intervals and leaves the catalog after node_ttl.
func TestKilledNodeBecomesUnhealthyThenLeavesCatalog(t *testing.T) {
	e := start(t,
		node("victim", "us-west", wire.PrivacyInternal, synthetic.Config{}),
		node("survivor", "us-west", wire.PrivacyInternal, synthetic.Config{}))
	killed := time.Now()
	require.NoError(t, e.mesh.KillNode("victim"))

	natsembed.Eventually(t, 5*time.Second, func() error {
		h := e.health("victim")
		return natsembed.Check(h.State == record.StateUnhealthy, "victim is %s", h.State)
	})
	// 3 intervals plus the health service's check period and scheduling slack.
	assert.Less(t, time.Since(killed), 3*hbInterval+time.Second, "unhealthy too late")

	natsembed.Eventually(t, 10*time.Second, func() error {
		_, err := e.kv.Catalog.Get(context.Background(), buckets.NodeKey("victim"))
		return natsembed.Check(errors.Is(err, jetstream.ErrKeyNotFound), "killed node still in fed_catalog")
	})
	assert.GreaterOrEqual(t, time.Since(killed), 10*hbInterval-hbInterval, "removed before node_ttl")

	_, err := e.kv.Catalog.Get(context.Background(), buckets.NodeKey("survivor"))
	require.NoError(t, err, "the live node must stay")
	assert.Equal(t, "survivor", e.servedBy(client.Request{}))
}

// A policy put into fed_config changes where traffic goes, with no restart:
// least_latency keeps choosing the faster node; round_robin spreads evenly.
func TestLivePolicyChangeMovesTraffic(t *testing.T) {
	quick := node("quick", "us-west", wire.PrivacyInternal, synthetic.Config{})
	slow := node("sluggish", "us-west", wire.PrivacyInternal, synthetic.Config{TTFT: 20 * time.Millisecond})
	quick.Models = append(quick.Models, record.Model{ModelID: "only-quick", Capabilities: []string{wire.CapGenerate}})
	slow.Models = append(slow.Models, record.Model{ModelID: "only-sluggish", Capabilities: []string{wire.CapGenerate}})
	e := start(t, quick, slow)
	// Latency history for both, so least_latency has something to go by.
	for i := 0; i < 3; i++ {
		for _, m := range []string{"only-quick", "only-sluggish"} {
			_, err := e.infer(client.Request{Model: m})
			require.NoError(t, err)
		}
	}
	natsembed.Eventually(t, 5*time.Second, func() error {
		h := e.health("sluggish")
		return natsembed.Check(h.LatencyP50Ms >= 15, "sluggish p50 %.1f ms", h.LatencyP50Ms)
	})
	count := func(n int) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			got[e.servedBy(client.Request{Model: "m1"})]++
		}
		return got
	}
	before := count(20)
	assert.Greater(t, before["quick"], before["sluggish"], "least_latency favours the fast node: %v", before)

	_, err := e.kv.Config.Put(context.Background(), record.ConfigKeyPolicy, []byte(`{"strategy":"round_robin"}`))
	require.NoError(t, err)
	natsembed.Eventually(t, 5*time.Second, func() error {
		return natsembed.Check(e.candidates(hdr(wire.HdrCapability, wire.CapGenerate)).Strategy == record.StrategyRoundRobin,
			"router never picked up the new policy")
	})
	after := count(20)
	assert.Equal(t, 10, after["quick"], "round robin spreads evenly: %v", after)
	assert.Equal(t, 10, after["sluggish"], "round robin spreads evenly: %v", after)

	// An invalid value is refused and the last good policy stays.
	_, err = e.kv.Config.Put(context.Background(), record.ConfigKeyPolicy, []byte(`{"strategy":"fastest_please"}`))
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // let the watch deliver it; nothing to poll for
	assert.Equal(t, record.StrategyRoundRobin, e.candidates(hdr(wire.HdrCapability, wire.CapGenerate)).Strategy)
}

func hdr(k, v string) nats.Header { return nats.Header{k: {v}} }

// A node past its max concurrency answers busy and the work goes elsewhere:
// two routers both prefer the cheap one-slot node, the second one to reach it
// is refused and retries on the roomy node; nothing fails.
func TestBusyNodeSendsWorkElsewhere(t *testing.T) {
	tiny := node("tiny", "us-west", wire.PrivacyInternal, synthetic.Config{TTFT: 300 * time.Millisecond, Tokens: 1})
	tiny.MaxConcurrency, tiny.Cost = 1, 0.05
	roomy := node("roomy", "us-west", wire.PrivacyInternal, synthetic.Config{TTFT: 300 * time.Millisecond, Tokens: 1})
	roomy.MaxConcurrency, roomy.Cost = 64, 0.95
	e := startWith(t, func(o *devmesh.Options) { o.Routers = 2 }, tiny, roomy)

	const n = 12
	var wg sync.WaitGroup
	nodes := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.infer(client.Request{})
			errs[i] = err
			if err == nil {
				nodes[i] = resp.Node
			}
		}()
	}
	wg.Wait()
	perNode := map[string]int{}
	for i := range n {
		require.NoError(t, errs[i], "request %d", i)
		perNode[nodes[i]]++
	}
	assert.LessOrEqual(t, perNode["tiny"], 2, "one slot: at most one request per router can have been accepted: %v", perNode)
	assert.GreaterOrEqual(t, perNode["roomy"], n-2, "%v", perNode)
	natsembed.Eventually(t, 5*time.Second, func() error {
		st := e.stats()
		return natsembed.Check(st.TotalRequests == n, "stats count %d requests", st.TotalRequests)
	})
	st := e.stats()
	assert.Equal(t, int64(n), st.SuccessfulRequests, "%+v", st)
	t.Logf("per node %v, dispatch failures %d, retries %d", perNode, st.DispatchFailures, st.Retries)
	assert.GreaterOrEqual(t, st.DispatchFailures, int64(1), "the second router to reach tiny must have been refused")
	assert.Equal(t, st.DispatchFailures, st.Retries, "every refused dispatch was retried: %+v", st)
}
