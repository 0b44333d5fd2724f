package health

import (
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// node is everything one health instance knows about one node. All fields
// are guarded by Service.mu; there is no goroutine per node.
type node struct {
	id         string
	registered bool   // present in fed_catalog
	catalogMax int    // max_concurrency from the catalog
	instance   string // agent instance of the latest heartbeat

	// state machine (state.go) and circuit breaker (breaker.go)
	state       string // state from requests and probes; stale overrides it
	stale       bool   // no heartbeat for MissedHeartbeats intervals
	consecFail  int    // consecutive failures (requests and probes)
	consecOK    int    // consecutive fast successes
	circuit     string
	openedAt    time.Time
	breakerFail int // consecutive request failures, for the breaker only
	halfOpenOK  int

	lastAlive   time.Time // last heartbeat (local clock), or first sight
	aliveUntil  time.Time // a good probe keeps a silent node alive until then
	lastReport  time.Time // anything received about the node (forget rule)
	lastOutcome time.Time // last request outcome (probe rule)
	lastProbe   time.Time
	probing     bool
	// version is updated_at: the time of the latest event applied. Event
	// times come from the events themselves, so instances that applied the
	// same events agree on it (writer.go compares it on conflicts).
	version time.Time

	// load, from the latest heartbeat
	lastHeartbeat time.Time // the node's own timestamp, for display
	inFlight      int
	queueDepth    int
	hbMax         int
	gpu           float64
	tps           float64
	draining      bool
	activeStreams int
	server        *record.ServerLoad // the latest heartbeat's; never mutated (records share it)

	models models // per capability/model (models.go)

	results outcomes // success/failure of recent requests
	stats   counters // per-node stats; stats.lat is the health latency window
	// seeded holds the percentiles fed_health had at start, shown until
	// this instance has samples of its own, so joining does not zero them.
	seeded *record.Health

	// KV sync (writer.go)
	kvRev     uint64         // revision of the key as last seen; 0: absent
	kvSeen    *record.Health // the value the bucket holds, as last seen
	lastWrite time.Time
}

func newNode(id string, size, modelSize int, now time.Time) *node {
	return &node{
		id:          id,
		state:       record.StateUnknown,
		circuit:     record.CircuitClosed,
		lastAlive:   now,
		lastReport:  now,
		lastOutcome: now,
		results:     outcomes{size: size},
		stats:       newCounters(size),
		models:      newModels(modelSize),
	}
}

// effectiveState is what routers see: a silent node is unhealthy whatever
// its requests said.
func (n *node) effectiveState() string {
	if n.stale {
		return record.StateUnhealthy
	}
	return n.state
}

// percentiles returns p50/p99 of the latency window, recomputed only when
// new samples arrived.
func (n *node) percentiles() (p50, p99 float64) {
	p50, p99, _ = n.stats.percentiles()
	return p50, p99
}

// record renders the fed_health value.
func (n *node) record() record.Health {
	p50, p99 := n.percentiles()
	samples, rate := n.stats.lat.len(), n.results.rate()
	if samples == 0 && n.seeded != nil {
		p50, p99, samples = n.seeded.LatencyP50Ms, n.seeded.LatencyP99Ms, n.seeded.Samples
	}
	if len(n.results.buf) == 0 && n.seeded != nil {
		rate = n.seeded.SuccessRate
	}
	maxC := n.hbMax
	if maxC == 0 {
		maxC = n.catalogMax
	}
	return record.Health{
		NodeID:              n.id,
		State:               n.effectiveState(),
		LatencyP50Ms:        roundMs(p50),
		LatencyP99Ms:        roundMs(p99),
		Samples:             samples,
		ThroughputTPS:       finite(n.tps),
		GPUUtilization:      finite(n.gpu),
		QueueDepth:          n.queueDepth,
		InFlight:            n.inFlight,
		MaxConcurrency:      maxC,
		SuccessRate:         finite(rate),
		Circuit:             n.circuit,
		CircuitOpenedAt:     n.openedAt,
		ConsecutiveFailures: n.consecFail,
		ConsecutiveSuccess:  n.consecOK,
		Draining:            n.draining,
		LastHeartbeat:       n.lastHeartbeat,
		InstanceID:          n.instance,
		UpdatedAt:           n.version,
		Server:              n.server,
		Models:              n.models.render(),
	}
}

// urgentChange reports a change routers must see at once (state, circuit,
// draining), compared with what the bucket holds.
func urgentChange(kv *record.Health, r *record.Health) bool {
	return kv == nil || kv.State != r.State || kv.Circuit != r.Circuit || kv.Draining != r.Draining ||
		!kv.CircuitOpenedAt.Equal(r.CircuitOpenedAt)
}

// minSamplesForP99 is where routers start trusting p99 (below it they use p50).
const minSamplesForP99 = 20

// sameForRouting reports whether two records agree on everything a router
// or an operator acts on; timestamps and the success streak are left out so
// an idle or steadily healthy node is not rewritten every interval.
func sameForRouting(a, b *record.Health) bool {
	return !urgentChange(a, b) &&
		a.LatencyP50Ms == b.LatencyP50Ms && a.LatencyP99Ms == b.LatencyP99Ms &&
		(a.Samples >= minSamplesForP99) == (b.Samples >= minSamplesForP99) &&
		a.ThroughputTPS == b.ThroughputTPS && a.GPUUtilization == b.GPUUtilization &&
		a.QueueDepth == b.QueueDepth && a.InFlight == b.InFlight && a.MaxConcurrency == b.MaxConcurrency &&
		a.SuccessRate == b.SuccessRate && a.ConsecutiveFailures == b.ConsecutiveFailures && a.InstanceID == b.InstanceID &&
		sameServer(a.Server, b.Server) && sameModels(a.Models, b.Models)
}

// seed adopts a record another instance (or a previous run) wrote, for a
// node this instance has not judged yet, so a restart does not reset a
// tripped circuit or forget a failure streak.
func (n *node) seed(r *record.Health, rev uint64) {
	switch r.State {
	case record.StateHealthy, record.StateDegraded, record.StateUnhealthy, record.StateUnknown:
		n.state = r.State
	}
	switch r.Circuit {
	case record.CircuitClosed, record.CircuitOpen, record.CircuitHalfOpen:
		n.circuit = r.Circuit
	}
	n.openedAt = r.CircuitOpenedAt
	n.consecFail = max(r.ConsecutiveFailures, 0)
	n.breakerFail = n.consecFail
	n.consecOK = max(r.ConsecutiveSuccess, 0)
	n.draining = r.Draining
	n.inFlight, n.queueDepth, n.tps, n.gpu = r.InFlight, r.QueueDepth, r.ThroughputTPS, r.GPUUtilization
	n.hbMax = r.MaxConcurrency
	n.lastHeartbeat = r.LastHeartbeat
	if n.instance == "" {
		n.instance = r.InstanceID // so the first heartbeat of a restarted agent is seen as one
	}
	n.server = r.Server
	n.models.seed(r.Models)
	if r.UpdatedAt.After(n.version) {
		n.version = r.UpdatedAt
	}
	n.kvRev = rev
	seen := *r
	n.kvSeen = &seen
	n.seeded = &seen
}
