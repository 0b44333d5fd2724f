package record

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Decoders of records and events as they come off the bus or out of a
// bucket. Everything there is untrusted: each decoder returns an error for
// anything it cannot trust completely, names the node and request it
// concerns, and its caller then changes nothing. Every consumer uses these
// (catalog, health, router, CLI); none unmarshals these types by hand.

// Bounds of event fields that end up as map keys or in logs.
const (
	MaxTenantLen     = wire.MaxTenantLen
	MaxInstanceIDLen = 256
	MaxRequestIDLen  = wire.MaxRequestIDLen
	// MaxLatencyMs bounds a reported latency: a day. Larger values are
	// poison (a float window that reaches +Inf never recovers), not data.
	MaxLatencyMs = 24 * 60 * 60 * 1000
)

// DecodeNode decodes a fed_catalog value stored under key and checks that
// it is a valid record of the node the key names.
func DecodeNode(key string, data []byte) (Node, error) {
	var n Node
	id, err := nodeOfKey(key)
	if err != nil {
		return n, err
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return n, fmt.Errorf("catalog record of node %s: %w", id, err)
	}
	if n.NodeID != id {
		return n, fmt.Errorf("catalog record under %s names node %q", key, n.NodeID)
	}
	if err := n.Validate(); err != nil {
		return n, fmt.Errorf("catalog record of node %s: %w", id, err)
	}
	return n, nil
}

// DecodeHealth decodes a fed_health value stored under key.
func DecodeHealth(key string, data []byte) (Health, error) {
	var h Health
	id, err := nodeOfKey(key)
	if err != nil {
		return h, err
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("health record of node %s: %w", id, err)
	}
	if h.NodeID == "" {
		h.NodeID = id
	}
	if h.NodeID != id {
		return h, fmt.Errorf("health record under %s names node %q", key, h.NodeID)
	}
	for _, f := range []struct {
		name string
		v    float64
		max  float64
	}{
		{"latency_p50_ms", h.LatencyP50Ms, MaxLatencyMs}, {"latency_p99_ms", h.LatencyP99Ms, MaxLatencyMs},
		{"throughput_tps", h.ThroughputTPS, math.MaxFloat32}, {"gpu_utilization", h.GPUUtilization, 1},
		{"success_rate", h.SuccessRate, 1},
	} {
		if err := inRange(f.name, f.v, f.max); err != nil {
			return h, fmt.Errorf("health record of node %s: %w", id, err)
		}
	}
	if h.Samples < 0 || h.QueueDepth < 0 || h.InFlight < 0 || h.MaxConcurrency < 0 ||
		h.ConsecutiveFailures < 0 || h.ConsecutiveSuccess < 0 {
		return h, fmt.Errorf("health record of node %s: negative count", id)
	}
	if len(h.InstanceID) > MaxInstanceIDLen {
		return h, fmt.Errorf("health record of node %s: instance_id is longer than %d bytes", id, MaxInstanceIDLen)
	}
	if h.Server != nil {
		if err := h.Server.Validate(); err != nil {
			return h, fmt.Errorf("health record of node %s: %w", id, err)
		}
	}
	if len(h.Models) > MaxModelStats {
		return h, fmt.Errorf("health record of node %s: %d model stats, at most %d", id, len(h.Models), MaxModelStats)
	}
	for k, m := range h.Models {
		for _, f := range []struct {
			name string
			v    float64
			max  float64
		}{
			{"ttft_p50_ms", m.TTFTP50Ms, MaxLatencyMs}, {"ttft_p99_ms", m.TTFTP99Ms, MaxLatencyMs},
			{"tpot_p50_ms", m.TPOTP50Ms, MaxLatencyMs}, {"tpot_p99_ms", m.TPOTP99Ms, MaxLatencyMs},
			{"latency_p50_ms", m.LatencyP50Ms, MaxLatencyMs}, {"latency_p99_ms", m.LatencyP99Ms, MaxLatencyMs},
			{"throughput_tps", m.ThroughputTPS, math.MaxFloat32},
		} {
			if err := inRange(f.name, f.v, f.max); err != nil {
				return h, fmt.Errorf("health record of node %s, models[%.140q]: %w", id, k, err)
			}
		}
		if m.Samples < 0 || m.Streams < 0 {
			return h, fmt.Errorf("health record of node %s, models[%.140q]: negative count", id, k)
		}
	}
	return h, nil
}

// DecodeHeartbeat decodes a heartbeat published on subj. The node id is the
// subject's last token; a body that names another node is refused.
func DecodeHeartbeat(subj string, data []byte) (Heartbeat, error) {
	var hb Heartbeat
	if err := json.Unmarshal(data, &hb); err != nil {
		return hb, fmt.Errorf("heartbeat on %s: %w", subj, err)
	}
	id, err := nodeOfSubject(subj, hb.NodeID)
	if err != nil {
		return hb, err
	}
	hb.NodeID = id
	if len(hb.InstanceID) > MaxInstanceIDLen {
		return hb, fmt.Errorf("heartbeat of node %s: instance_id is longer than %d bytes", id, MaxInstanceIDLen)
	}
	if hb.InFlight < 0 || hb.QueueDepth < 0 || hb.MaxConcurrency < 0 || hb.ActiveStreams < 0 {
		return hb, fmt.Errorf("heartbeat of node %s: negative in_flight/queue_depth/max_concurrency/active_streams", id)
	}
	if err := inRange("gpu_utilization", hb.GPUUtilization, 1); err != nil {
		return hb, fmt.Errorf("heartbeat of node %s: %w", id, err)
	}
	if err := inRange("throughput_tps", hb.ThroughputTPS, math.MaxFloat32); err != nil {
		return hb, fmt.Errorf("heartbeat of node %s: %w", id, err)
	}
	if hb.Server != nil {
		if err := hb.Server.Validate(); err != nil {
			return hb, fmt.Errorf("heartbeat of node %s: %w", id, err)
		}
	}
	return hb, nil
}

// DecodeOutcome decodes an outcome event published on subj (fed.outcome.<node>).
func DecodeOutcome(subj string, data []byte) (Outcome, error) {
	var o Outcome
	if !parseOutcome(data, &o) {
		o = Outcome{}
		if err := json.Unmarshal(data, &o); err != nil {
			return o, fmt.Errorf("outcome on %s: %w", subj, err)
		}
	}
	err := o.check(subj) // sets o.NodeID: before o is returned
	return o, err
}

// check judges a decoded outcome published on subj (DecodeOutcome,
// DecodeOutcomes) and takes its node id from the subject.
func (o *Outcome) check(subj string) error {
	id, err := nodeOfSubject(subj, o.NodeID)
	if err != nil {
		return err
	}
	o.NodeID = id
	switch o.Kind {
	case OutcomeCompleted, OutcomeDispatchFailed, OutcomeDuplicate, OutcomeProbe:
	default:
		return fmt.Errorf("outcome of node %s (request %s): unknown kind %q", id, o.RequestID, o.Kind)
	}
	if !validCode(o.Code) || o.Attempt < 0 || o.Tokens < 0 || len(o.Tenant) > MaxTenantLen || len(o.RequestID) > MaxRequestIDLen ||
		len(o.InstanceID) > MaxInstanceIDLen {
		return fmt.Errorf("outcome of node %s (request %.64s): bad code/attempt/tokens/tenant/request_id/instance_id", id, o.RequestID)
	}
	switch o.Fault {
	case "", FaultNode, FaultClient:
	default:
		return fmt.Errorf("outcome of node %s (request %s): unknown fault %q", id, o.RequestID, o.Fault)
	}
	if err := inRange("latency_ms", o.LatencyMs, MaxLatencyMs); err != nil {
		return fmt.Errorf("outcome of node %s (request %s): %w", id, o.RequestID, err)
	}
	if err := inRange("ttft_ms", o.TTFTMs, MaxLatencyMs); err != nil {
		return fmt.Errorf("outcome of node %s (request %s): %w", id, o.RequestID, err)
	}
	return nil
}

// DecodeUnplaced decodes an event on fed.router.unplaced.
func DecodeUnplaced(data []byte) (Unplaced, error) {
	var u Unplaced
	if err := json.Unmarshal(data, &u); err != nil {
		return u, fmt.Errorf("unplaced event: %w", err)
	}
	if !validCode(u.Code) || u.Attempts < 0 || len(u.Tenant) > MaxTenantLen || len(u.RequestID) > MaxRequestIDLen {
		return u, fmt.Errorf("unplaced event (request %.64s): bad code/attempts/tenant/request_id", u.RequestID)
	}
	return u, nil
}

// Validate checks a node record as the catalog accepts it at registration
// and as every reader of fed_catalog trusts it. Errors name the field.
func (n *Node) Validate() error {
	if err := wire.ValidateID("node_id", n.NodeID); err != nil {
		return err
	}
	if err := wire.ValidateID("region", n.Region); err != nil {
		return err
	}
	if n.Zone != "" {
		if err := wire.ValidateID("zone", n.Zone); err != nil {
			return err
		}
	}
	if n.Clearance > wire.PrivacyRestricted {
		return fmt.Errorf("clearance %d is not a privacy level", n.Clearance)
	}
	if len(n.InstanceID) > MaxInstanceIDLen {
		return fmt.Errorf("instance_id is longer than %d characters", MaxInstanceIDLen)
	}
	if !(n.Cost >= 0 && n.Cost <= 1) {
		return fmt.Errorf("cost %v is outside [0,1]", n.Cost)
	}
	if n.MaxConcurrency < 1 {
		return fmt.Errorf("max_concurrency %d must be >= 1", n.MaxConcurrency)
	}
	if len(n.Models) == 0 {
		return fmt.Errorf("models: a node must serve at least one model")
	}
	seen := make(map[string]bool, len(n.Models))
	for i := range n.Models {
		m := &n.Models[i]
		field := fmt.Sprintf("models[%d].model_id", i)
		if err := wire.ValidateID(field, m.ModelID); err != nil {
			return err
		}
		if seen[m.ModelID] {
			return fmt.Errorf("%s %q is listed twice", field, m.ModelID)
		}
		seen[m.ModelID] = true
		if len(m.Capabilities) == 0 {
			return fmt.Errorf("models[%d].capabilities: model %q needs at least one capability", i, m.ModelID)
		}
		for j, c := range m.Capabilities {
			if err := wire.ValidateCapability(c); err != nil {
				return fmt.Errorf("models[%d].capabilities[%d]: %w", i, j, err)
			}
		}
	}
	return nil
}

func nodeOfKey(key string) (string, error) {
	id := buckets.NodeIDOfKey(key)
	if err := wire.ValidateID("node_id", id); err != nil {
		return "", fmt.Errorf("key %q: %w", key, err)
	}
	return id, nil
}

// nodeOfSubject reads the node id from the last token of a per-node subject
// and checks that the body, when it names a node, names the same one.
func nodeOfSubject(subj, bodyNode string) (string, error) {
	id := subject.LastToken(subj)
	if err := wire.ValidateID("node_id", id); err != nil {
		return "", fmt.Errorf("subject %q: %w", subj, err)
	}
	if bodyNode != "" && bodyNode != id {
		return "", fmt.Errorf("message on %s names node %q", subj, bodyNode)
	}
	return id, nil
}

// inRange accepts a finite v in [0, max].
func inRange(name string, v, max float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > max {
		return fmt.Errorf("%s %v must be a finite number in [0, %v]", name, v, max)
	}
	return nil
}

func validCode(c int) bool { return c == 0 || (c >= 100 && c <= 999) }

// MaxDecisionsBatch bounds a decisions batch a reader accepts.
const MaxDecisionsBatch = 1024

// DecodeDecisions decodes a batch on fed.router.decisions.
func DecodeDecisions(data []byte) (Decisions, error) {
	var d Decisions
	if err := json.Unmarshal(data, &d); err != nil {
		return d, fmt.Errorf("decisions event: %w", err)
	}
	if len(d.Decisions) > MaxDecisionsBatch || len(d.Router) > wire.MaxRequestIDLen {
		return d, fmt.Errorf("decisions event (router %.64s): %d decisions or router id too long", d.Router, len(d.Decisions))
	}
	for i := range d.Decisions {
		x := &d.Decisions[i]
		if x.Attempts < 0 || len(x.Tenant) > MaxTenantLen || len(x.RequestID) > MaxRequestIDLen ||
			math.IsNaN(x.Score) || math.IsInf(x.Score, 0) || inRange("queued_ms", x.QueuedMs, 24*3600e3) != nil ||
			wire.ValidateID("node", x.Node) != nil {
			return d, fmt.Errorf("decisions event (router %.64s): decision %d: bad node/attempts/tenant/request_id/score/queued_ms", d.Router, i)
		}
	}
	return d, nil
}

// MaxStatsEntries bounds the nodes and the tenants of a stats event a
// reader accepts (fed.stats keeps at most 10 000 tenants plus _other).
const MaxStatsEntries = 20_000

// DecodeStatsEvent decodes an event on fed.health.stats and checks every
// counter: a count is never negative, a latency finite in [0, a day].
func DecodeStatsEvent(data []byte) (StatsEvent, error) {
	var e StatsEvent
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("stats event: %w", err)
	}
	bad := func(format string, args ...any) (StatsEvent, error) {
		return e, fmt.Errorf("stats event (health %.64s): "+format, append([]any{e.Health}, args...)...)
	}
	if e.Health == "" || len(e.Health) > MaxInstanceIDLen {
		return bad("health instance id empty or over %d bytes", MaxInstanceIDLen)
	}
	st := &e.Stats
	if len(st.Nodes) > MaxStatsEntries || len(st.Tenants) > MaxStatsEntries || len(st.Unplaced) > MaxStatsEntries {
		return bad("over %d nodes, tenants or codes", MaxStatsEntries)
	}
	switch st.State {
	case "", MeshInitializing, MeshReady, MeshDegraded:
	default:
		return bad("unknown state %.32q", st.State)
	}
	if err := checkCounters(&st.Counters); err != nil {
		return bad("%w", err)
	}
	for id, c := range st.Nodes {
		if err := wire.ValidateID("node", id); err != nil {
			return bad("%w", err)
		}
		if err := checkCounters(&c); err != nil {
			return bad("node %s: %w", id, err)
		}
	}
	for name, c := range st.Tenants {
		if name == "" || len(name) > MaxTenantLen {
			return bad("tenant name empty or over %d bytes", MaxTenantLen)
		}
		if err := checkCounters(&c); err != nil {
			return bad("tenant %.64s: %w", name, err)
		}
	}
	for code, n := range st.Unplaced {
		if len(code) > 3 || n < 0 {
			return bad("unplaced %.8q: %d", code, n)
		}
	}
	return e, nil
}

// checkCounters accepts one slice of fed.stats.
func checkCounters(c *Counters) error {
	for _, n := range []int64{c.TotalRequests, c.SuccessfulRequests, c.FailedRequests, c.TotalTokens,
		c.ActiveStreams, c.Retries, c.DuplicatesDropped, c.DispatchFailures} {
		if n < 0 {
			return fmt.Errorf("negative count %d", n)
		}
	}
	for _, v := range []struct {
		name string
		v    float64
	}{{"avg_latency_ms", c.AvgLatencyMs}, {"latency_p50_ms", c.LatencyP50Ms}, {"latency_p99_ms", c.LatencyP99Ms}, {"ttft_p50_ms", c.TTFTP50Ms}} {
		if err := inRange(v.name, v.v, MaxLatencyMs); err != nil {
			return err
		}
	}
	return nil
}
