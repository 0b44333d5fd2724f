package record

import "time"

// Mesh states (DESIGN §7).
const (
	MeshInitializing = "initializing"
	MeshReady        = "ready"
	MeshDegraded     = "degraded"
)

// Counters is one slice of fed.stats: overall, one node or one tenant.
type Counters struct {
	TotalRequests      int64   `json:"total_requests"`
	SuccessfulRequests int64   `json:"successful_requests"`
	FailedRequests     int64   `json:"failed_requests"`
	TotalTokens        int64   `json:"total_tokens"`
	AvgLatencyMs       float64 `json:"avg_latency_ms"`
	LatencyP50Ms       float64 `json:"latency_p50_ms"`
	LatencyP99Ms       float64 `json:"latency_p99_ms"`
	TTFTP50Ms          float64 `json:"ttft_p50_ms"`
	ActiveStreams      int64   `json:"active_streams"`
	Retries            int64   `json:"retries"`
	DuplicatesDropped  int64   `json:"duplicates_dropped"`
	// DispatchFailures counts dispatches a router could not hand to a node
	// (busy, draining, no responders, ack timeout). Addition to DESIGN §7.
	DispatchFailures int64 `json:"dispatch_failures"`
}

// Stats is the answer of fed.stats.
type Stats struct {
	State string `json:"state"`
	Counters
	Nodes   map[string]Counters `json:"nodes"`
	Tenants map[string]Counters `json:"tenants"`
	// Unplaced counts requests the router answered itself, by wire error
	// code ("403", "404", "503"...). Addition to DESIGN §7.
	Unplaced map[string]int64 `json:"unplaced,omitempty"`
}

// StatsEvent is what a health instance publishes on fed.health.stats
// (DESIGN §9.6): its fed.stats answer, at start and then at most once a
// second when it changed.
type StatsEvent struct {
	// Health is the publishing instance's id (a NUID per process).
	Health string    `json:"health"`
	TS     time.Time `json:"ts"`
	Stats  Stats     `json:"stats"`
}
