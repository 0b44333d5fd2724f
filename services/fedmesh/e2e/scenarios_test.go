package e2e

// The reference scenarios of DESIGN §7.4, on a real mesh: open, and secured
// (operator mode, every part on its own credential) with no permission
// violation.

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestScenarioHappyPath(t *testing.T) { bothModes(t, scenarioHappyPath) }

func scenarioHappyPath(t *testing.T, start starter) {
	e := start(t, node("n1", "us-west", wire.PrivacyInternal, synthetic.Config{}))
	assert.Equal(t, "n1", e.servedBy(client.Request{Body: []byte("hello")}))
	natsembed.Eventually(t, 5*time.Second, func() error {
		s := e.stats()
		return natsembed.Check(s.TotalRequests == 1 && s.SuccessfulRequests == 1, "stats: %+v", s)
	})
}

// The first node fails (its process is gone but the mesh does not know yet),
// the second serves the request.
func TestScenarioRetrySuccess(t *testing.T) { bothModes(t, scenarioRetrySuccess) }

func scenarioRetrySuccess(t *testing.T, start starter) {
	fast := node("fast", "us-west", wire.PrivacyInternal, synthetic.Config{})
	slow := node("slow", "us-west", wire.PrivacyInternal, synthetic.Config{TTFT: 30 * time.Millisecond})
	slow.Cost = 0.9 // fast is the better candidate on cost too
	e := start(t, fast, slow)
	require.NoError(t, e.mesh.KillNode("fast"))
	assert.Equal(t, "slow", e.servedBy(client.Request{}))
	natsembed.Eventually(t, 5*time.Second, func() error {
		s := e.stats()
		return natsembed.Check(s.Retries == 1, "stats: %+v", s)
	})
}

func TestScenarioCircuitTrip(t *testing.T) { bothModes(t, scenarioCircuitTrip) }

func scenarioCircuitTrip(t *testing.T, start starter) {
	// The failing node answers after 150 ms, so five requests sent at once all
	// reach it before health's verdict does: 3 failures already make a node
	// unhealthy, and routers skip unhealthy nodes (DESIGN §6).
	bad := node("bad", "us-west", wire.PrivacyInternal, synthetic.Config{FailureRate: 1, TTFT: 150 * time.Millisecond},
		record.Model{ModelID: "fragile", Capabilities: []string{wire.CapGenerate}})
	good := node("good", "us-west", wire.PrivacyInternal, synthetic.Config{})
	e := start(t, bad, good)
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = e.infer(client.Request{Model: "fragile"}) }()
	}
	wg.Wait()
	for i, err := range errs {
		assert.Equal(t, wire.CodeInternal, codeOf(err), "request %d: %v", i+1, err)
	}
	e.waitCircuit("bad", record.CircuitOpen, 3*time.Second)
	e.waitEligible("bad", wire.CapGenerate, false) // the router has read it too
	// While open: no traffic to it, the model has no capacity.
	_, err := e.infer(client.Request{Model: "fragile"})
	assert.Equal(t, wire.CodeNoCapacity, codeOf(err), "%v", err)
	assert.Equal(t, "good", e.servedBy(client.Request{}))
	assert.Equal(t, 5, int(e.stats().Nodes["bad"].TotalRequests), "open circuit: no sixth request reached bad")
	// After the reset timeout it is half-open and admits a probe again.
	e.waitCircuit("bad", record.CircuitHalfOpen, 5*time.Second)
	e.waitEligible("bad", wire.CapGenerate, true)
	_, err = e.infer(client.Request{Model: "fragile"})
	assert.Equal(t, wire.CodeInternal, codeOf(err), "the half-open probe reached the failing node")
	e.waitCircuit("bad", record.CircuitOpen, 3*time.Second) // a failed probe reopens the circuit
}

func TestScenarioMultiRegion(t *testing.T) { bothModes(t, scenarioMultiRegion) }

func scenarioMultiRegion(t *testing.T, start starter) {
	near := node("fast-50", "eu-west", wire.PrivacyInternal, synthetic.Config{TTFT: 50 * time.Millisecond, Tokens: 1})
	far := node("slow-120", "eu-west", wire.PrivacyInternal, synthetic.Config{TTFT: 120 * time.Millisecond, Tokens: 1})
	near.Models = []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}, {ModelID: "only-fast", Capabilities: []string{wire.CapGenerate}}}
	far.Models = []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}, {ModelID: "only-slow", Capabilities: []string{wire.CapGenerate}}}
	e := start(t, near, far)
	// Give each node a latency history.
	for i := 0; i < 3; i++ {
		_, err := e.infer(client.Request{Model: "only-fast"})
		require.NoError(t, err)
		_, err = e.infer(client.Request{Model: "only-slow"})
		require.NoError(t, err)
	}
	natsembed.Eventually(t, 5*time.Second, func() error {
		fast, slow := e.health("fast-50"), e.health("slow-120")
		return natsembed.Check(fast.LatencyP50Ms >= 40 && slow.LatencyP50Ms >= 100,
			"p50 fast-50 %.1f ms, slow-120 %.1f ms", fast.LatencyP50Ms, slow.LatencyP50Ms)
	})
	var cands api.CandidatesResponse
	natsembed.Eventually(t, 5*time.Second, func() error {
		cands = e.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}, wire.HdrModel: {"m1"}})
		// Wait until the warm-up requests have drained from both nodes'
		// in-flight counts, so load is equal and latency alone differs.
		chosen := ""
		for _, c := range cands.Candidates {
			if c.Scores["load"] < 1 {
				return fmt.Errorf("%s still has requests in flight: %+v", c.NodeID, cands)
			}
			if c.Chosen {
				chosen = c.NodeID
			}
		}
		return natsembed.Check(chosen == "fast-50", "candidates: %+v", cands)
	})
	assert.Equal(t, "ttft", cands.Decisive, "expected_ttft, the default: its own TTFT decided; candidates: %+v", cands)
	assert.Equal(t, "fast-50", e.servedBy(client.Request{Model: "m1"}))
}

func TestScenarioPrivacy(t *testing.T) { bothModes(t, scenarioPrivacy) }

func scenarioPrivacy(t *testing.T, start starter) {
	e := start(t,
		node("public-us", "us-west", wire.PrivacyInternal, synthetic.Config{}),
		node("cleared-eu", "eu-west", wire.PrivacyConfidential, synthetic.Config{}))
	for i := 0; i < 10; i++ {
		assert.Equal(t, "cleared-eu", e.servedBy(client.Request{Privacy: "confidential"}))
	}
	_, err := e.infer(client.Request{Privacy: "restricted"})
	assert.Equal(t, wire.CodePrivacy, codeOf(err), "%v", err)
	_, err = e.infer(client.Request{Privacy: "confidential", Regions: []string{"us-west"}})
	assert.Equal(t, wire.CodePrivacy, codeOf(err), "residency: the only cleared node is outside the allowed regions")
}

func TestScenarioGracefulDegradation(t *testing.T) { bothModes(t, scenarioGracefulDegradation) }

func scenarioGracefulDegradation(t *testing.T, start starter) {
	e := start(t,
		node("n1", "us-west", wire.PrivacyInternal, synthetic.Config{}),
		node("n2", "us-west", wire.PrivacyInternal, synthetic.Config{}),
		node("n3", "us-west", wire.PrivacyInternal, synthetic.Config{}))
	require.NoError(t, e.mesh.KillNode("n1"))
	require.NoError(t, e.mesh.KillNode("n2"))
	for i := 0; i < 30; i++ {
		resp, err := e.infer(client.Request{})
		require.NoError(t, err, "request %d", i)
		assert.Equal(t, "n3", resp.Node)
	}
	natsembed.Eventually(t, 5*time.Second, func() error {
		n1, n2 := e.health("n1"), e.health("n2")
		return natsembed.Check(n1.State == record.StateUnhealthy && n2.State == record.StateUnhealthy,
			"dead nodes become unhealthy within 3 heartbeat intervals: n1 %s, n2 %s", n1.State, n2.State)
	})
	assert.Equal(t, record.MeshDegraded, e.stats().State)
}
