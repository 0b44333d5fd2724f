package health

import (
	"sort"
	"strconv"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// counters is one slice of fed.stats (overall, a node, a tenant) with the
// windows its percentiles come from.
type counters struct {
	c      record.Counters
	latSum float64
	latN   int64
	lat    window // latency of recent successful requests
	ttft   window // time to first token of recent successful streams
}

func newCounters(size int) counters {
	return counters{lat: newWindow(size), ttft: newWindow(size)}
}

// addCompleted counts a request a node finished.
func (c *counters) addCompleted(o *record.Outcome) {
	c.c.TotalRequests++
	c.addRetries(o.Attempt)
	c.c.TotalTokens += int64(o.Tokens)
	if !o.OK {
		c.c.FailedRequests++
		return
	}
	c.c.SuccessfulRequests++
	c.latSum += o.LatencyMs
	c.latN++
	c.lat.add(o.LatencyMs)
	if o.TTFTMs > 0 {
		c.ttft.add(o.TTFTMs)
	}
}

// addUnplaced counts a request no node took: failed, after its attempts.
func (c *counters) addUnplaced(u *record.Unplaced) {
	c.c.TotalRequests++
	c.c.FailedRequests++
	c.addRetries(u.Attempts)
}

// addRetries: a request that ended on attempt k was retried k-1 times.
func (c *counters) addRetries(attempt int) {
	if attempt > 1 {
		c.c.Retries += int64(attempt - 1)
	}
}

func (c *counters) snapshot() record.Counters {
	out := c.c
	if c.latN > 0 {
		out.AvgLatencyMs = c.latSum / float64(c.latN)
	}
	p := c.lat.percentiles(50, 99)
	out.LatencyP50Ms, out.LatencyP99Ms = p[0], p[1]
	out.TTFTP50Ms = c.ttft.percentiles(50)[0]
	return out
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
	m.unplaced[strconv.Itoa(u.Code)]++
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

// stats renders fed.stats. Runs under Service.mu.
func (s *Service) stats() record.Stats {
	out := record.Stats{
		State:    s.mesh.state,
		Counters: s.mesh.all.snapshot(),
		Nodes:    make(map[string]record.Counters, len(s.nodes)),
		Tenants:  make(map[string]record.Counters, len(s.mesh.tenants)),
		Unplaced: make(map[string]int64, len(s.mesh.unplaced)),
	}
	// active_streams comes from the nodes' latest heartbeats (DESIGN §7:
	// up on start, down on end): a node silent for the missed-heartbeat
	// limit counts none.
	stale := time.Now().Add(-s.cfg.staleAfter())
	for id, n := range s.nodes {
		c := n.stats.snapshot()
		if n.lastHeartbeat.After(stale) {
			c.ActiveStreams = int64(n.activeStreams)
		}
		out.Nodes[id] = c
		out.ActiveStreams += c.ActiveStreams
	}
	for name, t := range s.mesh.tenants {
		out.Tenants[name] = t.snapshot()
	}
	for code, v := range s.mesh.unplaced {
		out.Unplaced[code] = v
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
