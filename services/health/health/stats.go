package health

import (
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// counters is one slice of fed.stats (overall, a node, a tenant) with the
// windows its percentiles come from.
type counters struct {
	c      record.Counters
	latSum float64 // sum of latency_ms over the latN successful requests
	latN   int64
	lat    window // latency of recent successful requests
	ttft   window // time to first token of recent successful streams

	// percentiles cached at the windows' generations (sorting a window on
	// every read would cost 10,000 sorts a second at scale)
	latGen, ttftGen  uint64
	p50, p99, ttft50 float64
}

func newCounters(size int) counters {
	return counters{lat: newWindow(size), ttft: newWindow(size)}
}

// addCompleted counts a request a node finished.
func (c *counters) addCompleted(o *record.Outcome) {
	c.c.TotalRequests = satAdd(c.c.TotalRequests, 1)
	c.addRetries(o.Attempt)
	c.c.TotalTokens = satAdd(c.c.TotalTokens, int64(o.Tokens))
	if !o.OK {
		c.c.FailedRequests = satAdd(c.c.FailedRequests, 1)
		return
	}
	c.c.SuccessfulRequests = satAdd(c.c.SuccessfulRequests, 1)
	if o.LatencyMs >= 0 && o.LatencyMs <= record.MaxLatencyMs { // false for NaN too
		c.latSum += o.LatencyMs
		c.latN = satAdd(c.latN, 1)
	}
	c.lat.add(o.LatencyMs)
	if o.TTFTMs > 0 {
		c.ttft.add(o.TTFTMs)
	}
}

// addUnplaced counts a request no node took: failed, after its attempts.
func (c *counters) addUnplaced(u *record.Unplaced) {
	c.c.TotalRequests = satAdd(c.c.TotalRequests, 1)
	c.c.FailedRequests = satAdd(c.c.FailedRequests, 1)
	c.addRetries(u.Attempts)
}

// addRetries: a request that ended on attempt k was retried k-1 times.
func (c *counters) addRetries(attempt int) {
	if attempt > 1 {
		c.c.Retries = satAdd(c.c.Retries, int64(attempt-1))
	}
}

// percentiles returns p50 and p99 of the latency window and p50 of the
// TTFT window, recomputed only when samples arrived since the last call.
func (c *counters) percentiles() (p50, p99, ttft50 float64) {
	if c.latGen != c.lat.gen {
		v := c.lat.percentiles(50, 99)
		c.p50, c.p99, c.latGen = v[0], v[1], c.lat.gen
	}
	if c.ttftGen != c.ttft.gen {
		c.ttft50, c.ttftGen = c.ttft.percentiles(50)[0], c.ttft.gen
	}
	return c.p50, c.p99, c.ttft50
}

// slice is this instance's own view of c in the persisted form.
func (c *counters) slice() statSlice {
	p50, p99, ttft := c.percentiles()
	return statSlice{
		TotalRequests:      c.c.TotalRequests,
		SuccessfulRequests: c.c.SuccessfulRequests,
		FailedRequests:     c.c.FailedRequests,
		TotalTokens:        c.c.TotalTokens,
		Retries:            c.c.Retries,
		DuplicatesDropped:  c.c.DuplicatesDropped,
		DispatchFailures:   c.c.DispatchFailures,
		LatencySumMs:       finite(c.latSum),
		LatencyN:           c.latN,
		LatencyP50Ms:       roundMs(p50),
		LatencyP99Ms:       roundMs(p99),
		TTFTP50Ms:          roundMs(ttft),
		Samples:            int64(c.lat.len()),
	}
}

// seed starts c from a persisted slice (at service start, before any event
// is counted): the counters and the latency sum continue from there; the
// windows start empty, and answers show the stored percentiles until the
// own window has as many samples (mergeSlice).
func (c *counters) seed(p statSlice) {
	c.c.TotalRequests, c.c.SuccessfulRequests, c.c.FailedRequests = p.TotalRequests, p.SuccessfulRequests, p.FailedRequests
	c.c.TotalTokens, c.c.Retries = p.TotalTokens, p.Retries
	c.c.DuplicatesDropped, c.c.DispatchFailures = p.DuplicatesDropped, p.DispatchFailures
	c.latSum, c.latN = p.LatencySumMs, p.LatencyN
}

func (c *counters) snapshot() record.Counters { return c.slice().counters() }

// satAdd adds without wrapping: a counter fed absurd values (an attempt of
// 2^62 from a hostile publisher) sticks at the maximum instead of turning
// negative.
func satAdd(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// roundMs is a latency as records carry it: finite, to 0.1 ms. The
// windows hold float32 samples, so an unrounded percentile reads
// 821.2061157226562 for 821.2; a tenth of a millisecond is far below what
// routing or an operator can tell apart.
func roundMs(v float64) float64 {
	v = finite(v)
	if math.Abs(v) >= 1e15 {
		return v // float64 holds no tenths here, and v*10 could overflow
	}
	return math.Round(v*10) / 10
}

// finite is the belt under the decoders: no float that reaches a response
// or a record may be NaN or ±Inf (encoding/json refuses them, and one such
// value made fed.stats fail for good). Non-finite becomes 0.
func finite(v float64) float64 {
	if !isFinite(v) {
		return 0
	}
	return v
}

// maxTenants bounds the per-tenant stats map: tenants are caller-chosen
// strings, and beyond this many they are counted under otherTenant.
const maxTenants = 10000

const otherTenant = "_other"

// meshStats is the service-wide part of fed.stats. Guarded by Service.mu.
type meshStats struct {
	all      counters
	tenants  map[string]*counters
	unplaced map[string]int64 // by wire code
	state    string
}

func newMeshStats(size int) meshStats {
	return meshStats{all: newCounters(size), tenants: map[string]*counters{}, unplaced: map[string]int64{},
		state: record.MeshInitializing}
}

func (m *meshStats) tenant(name string, size int) *counters {
	if name == "" {
		return nil
	}
	if len(name) > record.MaxTenantLen {
		name = otherTenant // the decoders refuse these; never a map key
	}
	t := m.tenants[name]
	if t == nil {
		if len(m.tenants) >= maxTenants {
			name = otherTenant
			if t = m.tenants[name]; t != nil {
				return t
			}
		}
		c := newCounters(size)
		t = &c
		m.tenants[name] = t
	}
	return t
}

func (m *meshStats) addUnplaced(u *record.Unplaced, size int) {
	m.all.addUnplaced(u)
	if t := m.tenant(u.Tenant, size); t != nil {
		t.addUnplaced(u)
	}
	code := strconv.Itoa(u.Code)
	m.unplaced[code] = satAdd(m.unplaced[code], 1)
}

// meshState derives DESIGN §7's mesh state from the nodes: initializing
// until a registered node is known and one node has proven itself, then
// ready, or degraded while some node is unhealthy or has an open circuit.
func meshState(nodes map[string]*node) string {
	registered, up, down := 0, 0, 0
	for _, n := range nodes {
		if n.registered {
			registered++
		}
		switch st := n.effectiveState(); {
		case st == record.StateUnhealthy || n.circuit == record.CircuitOpen:
			down++
		case st == record.StateHealthy || st == record.StateDegraded:
			up++
		}
	}
	switch {
	case registered == 0 || up+down == 0:
		return record.MeshInitializing
	case down > 0:
		return record.MeshDegraded
	default:
		return record.MeshReady
	}
}

// updateMeshState recomputes the mesh state and logs a transition.
func (s *Service) updateMeshState() {
	st := meshState(s.nodes)
	if st == s.mesh.state {
		return
	}
	s.log.Info().Str("from", s.mesh.state).Str("to", st).Int("nodes", len(s.nodes)).Msg("mesh state changed")
	s.mesh.state = st
}

// stats renders fed.stats: own counters merged with the stored ones
// (statsync.go), so every instance gives the same answer. Runs under
// Service.mu.
func (s *Service) stats() record.Stats {
	v := s.view()
	out := record.Stats{
		State:    s.mesh.state,
		Counters: v.mesh.counters(),
		Nodes:    make(map[string]record.Counters, len(v.nodes)),
		Tenants:  make(map[string]record.Counters, len(v.tenants)),
		Unplaced: v.unplaced,
	}
	// active_streams comes from the nodes' latest heartbeats (DESIGN §7:
	// up on start, down on end): a node silent for the missed-heartbeat
	// limit counts none. Every instance sees the heartbeats; not stored.
	stale := time.Now().Add(-s.cfg.staleAfter())
	for id, p := range v.nodes {
		c := p.counters()
		if n := s.nodes[id]; n != nil && n.lastHeartbeat.After(stale) {
			c.ActiveStreams = int64(n.activeStreams)
		}
		out.Nodes[id] = c
		out.ActiveStreams += c.ActiveStreams
	}
	for name, p := range v.tenants {
		out.Tenants[name] = p.counters()
	}
	return out
}

// sortedIDs lists node ids in order, for stable list answers.
func sortedIDs(nodes map[string]*node) []string {
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// eventTime is the version an event gives a node: its own timestamp when
// plausible, so instances seeing the same event agree, else local time.
func eventTime(ts, now time.Time) time.Time {
	if ts.IsZero() || ts.After(now.Add(time.Minute)) || ts.Before(now.Add(-time.Hour)) {
		return now
	}
	return ts
}
