package record

import "time"

// Node states (DESIGN §6).
const (
	StateHealthy   = "healthy"
	StateDegraded  = "degraded"
	StateUnhealthy = "unhealthy"
	StateUnknown   = "unknown"
)

// Circuit breaker states.
const (
	CircuitClosed   = "closed"
	CircuitOpen     = "open"
	CircuitHalfOpen = "half_open"
)

// Health is a fed_health value, key nodes.<node_id>.
type Health struct {
	NodeID              string    `json:"node_id"`
	State               string    `json:"state"`
	LatencyP50Ms        float64   `json:"latency_p50_ms"`
	LatencyP99Ms        float64   `json:"latency_p99_ms"`
	Samples             int       `json:"samples"` // requests behind the percentiles
	ThroughputTPS       float64   `json:"throughput_tps"`
	GPUUtilization      float64   `json:"gpu_utilization"`
	QueueDepth          int       `json:"queue_depth"`
	InFlight            int       `json:"in_flight"`
	MaxConcurrency      int       `json:"max_concurrency,omitempty"`
	SuccessRate         float64   `json:"success_rate"`
	Circuit             string    `json:"circuit"`
	CircuitOpenedAt     time.Time `json:"circuit_opened_at,omitzero"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	ConsecutiveSuccess  int       `json:"consecutive_successes"`
	Draining            bool      `json:"draining,omitempty"`
	LastHeartbeat       time.Time `json:"last_heartbeat,omitzero"`
	// InstanceID is the agent instance whose heartbeats the record judges,
	// so a health instance that starts later knows a restart when it sees one.
	InstanceID string    `json:"instance_id,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Server is the model server's own load from the latest heartbeat that
	// carried one (DESIGN §5.2); nil when the node does not scrape it.
	Server *ServerLoad `json:"server,omitempty"`
	// Models are the request statistics per capability and model, keyed
	// "<capability>/<model_id>" (DESIGN §5.2); at most MaxModelStats.
	Models map[string]ModelStats `json:"models,omitempty"`
}

// MaxModelStats bounds Health.Models.
const MaxModelStats = 64

// ModelStatsKey is the Health.Models key of a capability and model.
func ModelStatsKey(capability, model string) string { return capability + "/" + model }

// ModelStats are one (capability, model)'s statistics on one node: TTFT
// and time per output token only from streams (a whole answer's first
// token is its last), latency from every successful request, throughput
// from streamed decode time only. Milliseconds rounded to 0.1; 0 = no data.
type ModelStats struct {
	TTFTP50Ms    float64 `json:"ttft_p50_ms,omitempty"`
	TTFTP99Ms    float64 `json:"ttft_p99_ms,omitempty"`
	TPOTP50Ms    float64 `json:"tpot_p50_ms,omitempty"`
	TPOTP99Ms    float64 `json:"tpot_p99_ms,omitempty"`
	LatencyP50Ms float64 `json:"latency_p50_ms,omitempty"`
	LatencyP99Ms float64 `json:"latency_p99_ms,omitempty"`
	// ThroughputTPS is decode tokens/s: (tokens − 1) / (latency − TTFT) of
	// streams with more than one token.
	ThroughputTPS float64 `json:"throughput_tps,omitempty"`
	Samples       int     `json:"samples"`           // successful requests behind the latency percentiles
	Streams       int     `json:"streams,omitempty"` // of those, streams behind TTFT/TPOT
}

// ServerLoad is what a node's model server reports of its own load,
// scraped from its Prometheus endpoint (vLLM names by default): requests
// running in its batch and waiting for one, KV cache use (0–1) and the
// prefix-cache hit rate (0–1) since the previous scrape.
type ServerLoad struct {
	Running       int       `json:"running"`
	Waiting       int       `json:"waiting"`
	KVUsage       float64   `json:"kv_usage"`
	PrefixHitRate float64   `json:"prefix_hit_rate"`
	ScrapedAt     time.Time `json:"scraped_at"`
}

// Heartbeat is what a node publishes on fed.heartbeat.<node_id> every interval.
type Heartbeat struct {
	NodeID         string    `json:"node_id"`
	InstanceID     string    `json:"instance_id,omitempty"`
	Time           time.Time `json:"ts"`
	InFlight       int       `json:"in_flight"`
	QueueDepth     int       `json:"queue_depth"`
	MaxConcurrency int       `json:"max_concurrency"`
	GPUUtilization float64   `json:"gpu_utilization"`
	ThroughputTPS  float64   `json:"throughput_tps"` // recent tokens/s
	Draining       bool      `json:"draining,omitempty"`
	// ActiveStreams is how many of InFlight are streams (fed.stats active_streams).
	ActiveStreams int `json:"active_streams,omitempty"`
	// Server is the model server's load as last scraped; nil when the
	// node does not scrape one (DESIGN §9.1).
	Server *ServerLoad `json:"server,omitempty"`
}

// Outcome kinds.
const (
	// OutcomeCompleted: a node finished a request it accepted (ok or error).
	OutcomeCompleted = "completed"
	// OutcomeDispatchFailed: a router could not hand a request to the node
	// (busy, draining, no responders, ack timeout). Counts against its health.
	OutcomeDispatchFailed = "dispatch_failed"
	// OutcomeDuplicate: a client dropped a second node's stream for a request.
	OutcomeDuplicate = "duplicate"
	// OutcomeProbe: an active health probe's result.
	OutcomeProbe = "probe"
)

// Outcome is one event on fed.outcome.<node_id>.
type Outcome struct {
	Kind       string  `json:"kind"`
	NodeID     string  `json:"node_id"`
	RequestID  string  `json:"request_id,omitempty"`
	OK         bool    `json:"ok"`
	Code       int     `json:"code,omitempty"` // wire error code when !OK
	Error      string  `json:"error,omitempty"`
	Capability string  `json:"capability,omitempty"`
	Model      string  `json:"model,omitempty"`
	Tenant     string  `json:"tenant,omitempty"`
	Attempt    int     `json:"attempt,omitempty"` // 1-based dispatch attempt
	LatencyMs  float64 `json:"latency_ms,omitempty"`
	TTFTMs     float64 `json:"ttft_ms,omitempty"`
	Tokens     int     `json:"tokens,omitempty"`
	Stream     bool    `json:"stream,omitempty"`
	// Fault says whose failure a failed outcome is: FaultClient for what
	// the request itself caused (its own deadline too short, a bad body,
	// too large, cancelled), which never counts against the node's health;
	// FaultNode or "" for the node's own failures.
	Fault string `json:"fault,omitempty"`
	// Silent: the node sent the client no final (the attempt was withdrawn,
	// or its publish failed), so someone else must answer it.
	Silent bool `json:"silent,omitempty"`
	// AtOnce: the node answered where the dispatch arrived and acked it
	// done after the final (DESIGN §4, Fed-Ack-Done): the router that
	// placed it has settled it already, and no ack counted it in the
	// node's load, so routers do not take a slot back for it.
	AtOnce bool `json:"at_once,omitempty"`
	// InstanceID is the agent instance the outcome is about (routers set
	// it on dispatch_failed: the instance their catalog named when they
	// dispatched). Health judges a node's current instance only by
	// outcomes about it, so a restarted agent does not inherit the
	// failures of the process that died.
	InstanceID string    `json:"instance_id,omitempty"`
	Time       time.Time `json:"ts"`
}

// Fault values of Outcome.Fault.
const (
	FaultNode   = "node"
	FaultClient = "client"
)

// Unplaced is a request the router answered itself (no node took it).
type Unplaced struct {
	RequestID  string    `json:"request_id,omitempty"`
	Capability string    `json:"capability,omitempty"`
	Model      string    `json:"model,omitempty"`
	Tenant     string    `json:"tenant,omitempty"`
	Code       int       `json:"code"`
	Error      string    `json:"error"`
	Attempts   int       `json:"attempts"`
	Time       time.Time `json:"ts"`
}

// Decision is one placement a router made (DESIGN §9.5): which node took
// the request and why. Routers publish them in batches (Decisions); the
// request's outcome follows on the node's outcome subject.
type Decision struct {
	RequestID  string  `json:"request_id,omitempty"`
	Capability string  `json:"capability,omitempty"`
	Model      string  `json:"model,omitempty"`
	Tenant     string  `json:"tenant,omitempty"`
	Node       string  `json:"node"`
	Score      float64 `json:"score"`
	// DecidedBy names the policy term that separated the node from the
	// runner-up (DESIGN §9.5); omitted when there was no runner-up.
	DecidedBy string `json:"decided_by,omitempty"`
	Strategy  string `json:"strategy,omitempty"`
	Attempts  int    `json:"attempts"`
	// Takeover is the lost node whose request this placement saved.
	Takeover string  `json:"takeover,omitempty"`
	QueuedMs float64 `json:"queued_ms,omitempty"`
	// PredictedTTFTMs and PrefixMatch: expected_ttft's judgement (§6.7);
	// omitted under other strategies.
	PredictedTTFTMs float64   `json:"predicted_ttft_ms,omitempty"`
	PrefixMatch     float64   `json:"prefix_match,omitempty"`
	Time            time.Time `json:"ts"`
}

// Decisions is one batch of a router's placements.
type Decisions struct {
	Router    string     `json:"router"`
	Decisions []Decision `json:"decisions"`
}
