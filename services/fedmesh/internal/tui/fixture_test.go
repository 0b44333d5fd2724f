package tui

import (
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// meshFixture is one moment of a three-node mesh, as the services would
// have written and published it: catalog and health records, fed_config
// writes (a rejected policy among them), a router's decisions, the nodes'
// outcomes, an unplaced request and a fed.stats answer.
type meshFixture struct {
	nodes     []record.Node
	health    []record.Health
	config    [][2]string // key, value in write order
	decisions record.Decisions
	outcomes  []record.Outcome
	unplaced  []record.Unplaced
	beats     []record.Heartbeat
	stats     []record.Stats // successive answers
}

const (
	nodeUS = "us-west-gpu-1"
	nodeEU = "eu-west-gpu-1"
	nodeAP = "ap-south-cpu-1"

	badPolicy       = `{"strategy":"fastest"}`
	badPolicyReason = `strategy "fastest"`
)

func newMeshFixture(now time.Time) meshFixture {
	chat := record.Model{ModelID: "llama-3-8b", Name: "Llama 3 8B Instruct", Capabilities: []string{wire.CapGenerate}, Parameters: "8B"}
	code := record.Model{ModelID: "qwen-coder-7b", Capabilities: []string{wire.CapCode, wire.CapGenerate}, Parameters: "7B"}
	embed := record.Model{ModelID: "bge-small", Capabilities: []string{wire.CapEmbed}}
	node := func(id, region string, gpu bool, cost float64, cl wire.Privacy, models ...record.Model) record.Node {
		return record.Node{NodeID: id, Region: region, Zone: region + "a", Subject: "fed.node." + id + ".infer", GPU: gpu,
			Cost: cost, Clearance: cl, MaxConcurrency: 16, Labels: map[string]string{"demo": "true"}, Models: models,
			AgentVersion: "test", RegisteredAt: now.Add(-time.Minute)}
	}
	f := meshFixture{
		nodes: []record.Node{
			node(nodeUS, "us-west", true, 0.6, wire.PrivacyInternal, chat, code, embed),
			node(nodeEU, "eu-west", true, 0.8, wire.PrivacyConfidential, chat, embed),
			node(nodeAP, "ap-south", false, 0, wire.PrivacyInternal, chat, code),
		},
		health: []record.Health{
			{NodeID: nodeUS, State: record.StateHealthy, Circuit: record.CircuitClosed, LatencyP50Ms: 45, LatencyP99Ms: 230,
				Samples: 100, InFlight: 3, MaxConcurrency: 16, ThroughputTPS: 50, GPUUtilization: 0.5, SuccessRate: 0.99,
				ConsecutiveSuccess: 7, LastHeartbeat: now, UpdatedAt: now},
			{NodeID: nodeEU, State: record.StateDegraded, Circuit: record.CircuitHalfOpen, LatencyP50Ms: 1500, LatencyP99Ms: 2600,
				Samples: 40, SuccessRate: 0.5, CircuitOpenedAt: now.Add(-40 * time.Second), ConsecutiveSuccess: 1,
				LastHeartbeat: now, UpdatedAt: now,
				Server: &record.ServerLoad{Running: 5, Waiting: 2, KVUsage: 0.75, PrefixHitRate: 0.4, ScrapedAt: now},
				Models: map[string]record.ModelStats{record.ModelStatsKey(wire.CapEmbed, "bge-small"): {
					LatencyP50Ms: 31, LatencyP99Ms: 77, TTFTP50Ms: 12, TPOTP50Ms: 3.5, Samples: 9, Streams: 4}}},
			{NodeID: nodeAP, State: record.StateUnhealthy, Circuit: record.CircuitOpen, LatencyP50Ms: 800, LatencyP99Ms: 9100,
				Samples: 20, SuccessRate: 0.2, CircuitOpenedAt: now.Add(-10 * time.Second), ConsecutiveFailures: 5,
				LastHeartbeat: now, UpdatedAt: now},
		},
		config: [][2]string{
			{record.ConfigKeyPolicy, `{"strategy":"round_robin"}`},
			{record.ConfigKeyPolicy, badPolicy},
			{record.ConfigKeyRegions, `{"ap-south":{"cost":0.3},"eu-west":{"privacy":"internal"}}`},
			{record.ConfigKeyTenants, `{"acme":{"requests_per_second":5},"*":{"requests_per_second":100,"burst":200}}`},
		},
		decisions: record.Decisions{Router: "router-1", Decisions: []record.Decision{
			{RequestID: "req-ok", Capability: wire.CapGenerate, Model: "llama-3-8b", Tenant: "acme", Node: nodeUS,
				Score: 1.065, DecidedBy: "latency", Strategy: record.StrategyRoundRobin, Attempts: 1, Time: now,
				PredictedTTFTMs: 42, PrefixMatch: 0.5},
			{RequestID: "req-probe", Capability: wire.CapGenerate, Model: "llama-3-8b", Tenant: "beta", Node: nodeEU,
				Score: 0.701, DecidedBy: "health", Strategy: record.StrategyRoundRobin, Attempts: 2, Time: now},
			{RequestID: "req-fail", Capability: wire.CapCode, Model: "qwen-coder-7b", Node: nodeUS,
				Score: 0.9, Strategy: record.StrategyRoundRobin, Attempts: 1, Time: now},
		}},
		outcomes: []record.Outcome{
			{Kind: record.OutcomeCompleted, NodeID: nodeUS, RequestID: "req-ok", OK: true, Model: "llama-3-8b", Tenant: "acme",
				Attempt: 1, LatencyMs: 120, TTFTMs: 20, Tokens: 11, Time: now},
			{Kind: record.OutcomeCompleted, NodeID: nodeUS, RequestID: "req-fail", Code: 500, Error: "backend failed",
				Model: "qwen-coder-7b", Attempt: 1, Time: now},
		},
		unplaced: []record.Unplaced{
			{RequestID: "req-lost", Capability: wire.CapEmbed, Code: 503, Error: "no eligible node", Attempts: 4, Time: now},
		},
		beats: []record.Heartbeat{
			{NodeID: nodeUS, Time: now, InFlight: 4, QueueDepth: 1, MaxConcurrency: 16, ThroughputTPS: 55, ActiveStreams: 2},
		},
	}
	st := record.Stats{State: record.MeshDegraded,
		Counters: record.Counters{TotalRequests: 100, SuccessfulRequests: 90, FailedRequests: 10, TotalTokens: 1100,
			LatencyP50Ms: 50, LatencyP99Ms: 400, TTFTP50Ms: 20, Retries: 3, DispatchFailures: 2},
		Nodes: map[string]record.Counters{
			nodeUS: {TotalRequests: 80, SuccessfulRequests: 79, FailedRequests: 1, LatencyP99Ms: 230},
			nodeAP: {TotalRequests: 15, SuccessfulRequests: 6, FailedRequests: 9, LatencyP99Ms: 9100},
		},
		Tenants: map[string]record.Counters{
			"acme": {TotalRequests: 70, SuccessfulRequests: 69, FailedRequests: 1, LatencyP99Ms: 300},
			"beta": {TotalRequests: 30, SuccessfulRequests: 21, FailedRequests: 9, LatencyP99Ms: 900},
		},
		Unplaced: map[string]int64{"503": 4, "403": 1},
	}
	more := st
	more.TotalRequests += 20
	more.Nodes = map[string]record.Counters{nodeUS: {TotalRequests: 100, FailedRequests: 1, LatencyP99Ms: 250},
		nodeAP: st.Nodes[nodeAP]}
	more.Tenants = map[string]record.Counters{"acme": {TotalRequests: 90, LatencyP99Ms: 310}, "beta": st.Tenants["beta"]}
	f.stats = []record.Stats{st, more}
	return f
}

// state applies the fixture as Live would, the stats answers one second apart.
func (f meshFixture) state(now time.Time) *state {
	s := newState(now.Add(-time.Minute))
	for _, n := range f.nodes {
		s.applyCatalog("nodes."+n.NodeID, false, mustJSON(n))
	}
	for _, h := range f.health {
		s.applyHealth("nodes."+h.NodeID, false, mustJSON(h))
	}
	for i, c := range f.config {
		s.applyConfig(c[0], uint64(i+1), now, false, []byte(c[1]))
	}
	s.applyDecisions(f.decisions, now)
	for _, o := range f.outcomes {
		s.applyOutcome(o)
	}
	for _, u := range f.unplaced {
		s.applyUnplaced(u, now)
	}
	for _, hb := range f.beats {
		s.applyHeartbeat(hb, now)
	}
	for i, st := range f.stats {
		s.applyStats("", st, now.Add(time.Duration(i-len(f.stats))*time.Second))
	}
	return s
}

func (f meshFixture) data(now time.Time) Data {
	d := f.state(now).snapshot(now)
	d.Conn = Conn{State: ConnConnected, URL: "nats://127.0.0.1:4222"}
	d.ResetTimeout, d.HalfOpenSuccesses = DefaultResetTimeout, DefaultHalfOpenSuccesses
	return d
}
