package router

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// decided_by names the term that separated the chosen node from the
// runner-up.
func TestDecidedBy(t *testing.T) {
	cases := []struct {
		name     string
		tune     func(n []tnode)
		strategy string
		want     string
	}{
		{name: "faster node", tune: func(n []tnode) { n[1].health = healthy(500) }, want: "latency"},
		{name: "cheaper node", tune: func(n []tnode) { n[1].cost = 0.9 }, want: "cost"},
		{name: "healthier node", tune: func(n []tnode) {
			h := healthy(50)
			h.State = record.StateDegraded
			n[1].health = h
		}, want: "health"},
		{name: "only candidate", tune: func(n []tnode) {}, want: "only"},
		{name: "a tie: the strategy's order", tune: func(n []tnode) {}, want: "strategy"},
		{name: "round robin picks a lower score", tune: func(n []tnode) { n[0].health = healthy(500) }, strategy: record.StrategyRoundRobin, want: "strategy-or-latency"},
		{name: "expected_ttft: faster node", tune: func(n []tnode) { n[1].health = healthy(500) }, strategy: record.StrategyExpectedTTFT, want: "ttft"},
		{name: "expected_ttft: cheaper node", tune: func(n []tnode) { n[1].cost = 0.9 }, strategy: record.StrategyExpectedTTFT, want: "cost"},
		{name: "expected_ttft: healthier node", tune: func(n []tnode) {
			h := healthy(50)
			h.State, h.ConsecutiveFailures = record.StateDegraded, 1 // degraded by a failure, not by slowness
			n[1].health = h
		}, strategy: record.StrategyExpectedTTFT, want: "health"},
		{name: "expected_ttft: a tie", tune: func(n []tnode) {}, strategy: record.StrategyExpectedTTFT, want: "strategy"},
		{name: "expected_ttft: only candidate", tune: func(n []tnode) {}, strategy: record.StrategyExpectedTTFT, want: "only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nodes := equalNodes(2)
			tc.tune(nodes)
			if tc.want == "only" {
				nodes = nodes[:1]
			}
			c := buildCache(t, nodes...)
			pol := strat(record.StrategyLeastLatency) // the composite's terms
			if tc.strategy != "" {
				pol = strat(tc.strategy)
			}
			r := newPlacementQuery(wire.CapGenerate, specWith(nil), "")
			seen := map[string]bool{}
			for rr := range uint64(4) {
				d := c.decide(&r, pol, rr)
				require.NotNil(t, d.e)
				seen[d.decidedBy] = true
			}
			switch tc.want {
			case "only":
				assert.Equal(t, map[string]bool{"": true}, seen)
			case "strategy-or-latency": // rotation: the better node by latency, the other by the strategy
				assert.Equal(t, map[string]bool{"latency": true, "strategy": true}, seen)
			default:
				assert.Equal(t, map[string]bool{tc.want: true}, seen)
			}
		})
	}
}

// Every accepted dispatch is published as a decision, batched, with the
// request, the node and why.
func TestIntegrationDecisionEvents(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "fast", region: "eu", health: healthy(10), instance: "f-1"})
	e.addNode(tnode{id: "slow", region: "eu", health: healthy(900), instance: "s-1"})
	e.stageNode("fast", 0, false)
	e.stageNode("slow", 0, false)
	e.waitEligible("fast", "slow")
	require.Eventually(t, func() bool { return e.healthLoaded("fast") && e.healthLoaded("slow") }, 3*time.Second, 10*time.Millisecond)
	ch := make(chan *nats.Msg, 16)
	sub, err := e.nc.ChanSubscribe(subject.Default.Decisions(), ch)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, e.nc.Flush())

	const n = 5
	for i := range n {
		h := streamHeader("dec-"+strconv.Itoa(i), false, false)
		h.Set(wire.HdrTenant, "acme")
		untilFinal(t, e.rawRequest(h), 3*time.Second)
	}
	var got []record.Decision
	deadline := time.After(3 * time.Second)
	for len(got) < n {
		select {
		case m := <-ch:
			b, err := record.DecodeDecisions(m.Data)
			require.NoError(t, err)
			assert.NotEmpty(t, b.Router)
			got = append(got, b.Decisions...)
		case <-deadline:
			t.Fatalf("%d of %d decisions published", len(got), n)
		}
	}
	assert.Less(t, len(got), n+1, "one decision per request")
	seen := map[string]bool{}
	for _, d := range got {
		seen[d.RequestID] = true
	}
	for i := range n {
		assert.True(t, seen["dec-"+strconv.Itoa(i)], "decision of dec-%d (batches may arrive in any order)", i)
	}
	for _, d := range got {
		assert.Equal(t, "fast", d.Node)
		assert.Equal(t, "ttft", d.DecidedBy, "expected_ttft, the default: 10 ms against 900 ms")
		assert.Positive(t, d.PredictedTTFTMs)
		assert.Equal(t, wire.CapGenerate, d.Capability)
		assert.Equal(t, "acme", d.Tenant)
		assert.Equal(t, 1, d.Attempts)
		assert.Positive(t, d.Score)
		assert.NotEmpty(t, d.Strategy)
		assert.Empty(t, d.Takeover)
		assert.WithinDuration(t, time.Now(), d.Time, 5*time.Second)
	}
}

// On the secured subject fed.infer.<capability>.<tenant> the tenant is the
// subject's token, whatever Fed-Tenant says; a token that is not an id is 400.
func TestIntegrationTenantFromSubject(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	e.stageNode("a", 0, false)
	e.waitEligible("a")
	ch := make(chan *nats.Msg, 4)
	sub, err := e.nc.ChanSubscribe(subject.Default.Decisions(), ch)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, e.nc.Flush())

	send := func(subj string) *nats.Msg {
		inbox := nats.NewInbox()
		in, err := e.nc.SubscribeSync(inbox)
		require.NoError(t, err)
		m := &nats.Msg{Subject: subj, Reply: inbox, Header: nats.Header{wire.HdrTenant: {"mallory"}}, Data: []byte("hi")}
		require.NoError(t, e.nc.PublishMsg(m))
		got, err := in.NextMsg(3 * time.Second)
		require.NoError(t, err)
		return got
	}
	final := send(subject.Default.InferAs(wire.CapGenerate, "acme"))
	assert.Equal(t, wire.StatusDone, final.Header.Get(wire.HdrStatus))
	select {
	case m := <-ch:
		b, err := record.DecodeDecisions(m.Data)
		require.NoError(t, err)
		require.Len(t, b.Decisions, 1)
		assert.Equal(t, "acme", b.Decisions[0].Tenant, "the subject's tenant, not the header's")
		assert.Equal(t, wire.CapGenerate, b.Decisions[0].Capability)
	case <-time.After(3 * time.Second):
		t.Fatal("no decision published")
	}
	bad := send("fed.infer.generate.a.b")
	we := wire.ErrorFromHeader(bad.Header)
	require.NotNil(t, we)
	assert.Equal(t, wire.CodeBadRequest, we.Code)
	assert.Contains(t, we.Description, "tenant")
}
