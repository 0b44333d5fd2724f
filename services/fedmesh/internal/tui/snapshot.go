// Package tui is `fedmesh top`: a live view of the mesh (nodes, health,
// stats) built only from the micro endpoints fed.catalog.list,
// fed.health.list and fed.stats, polled over NATS.
package tui

import (
	"context"
	"sort"
	"time"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/record"
)

// Fetcher takes one snapshot of the mesh. The NATS implementation lives in
// the cli package; tests use a fake.
type Fetcher interface {
	Fetch(ctx context.Context) (Snapshot, error)
}

// Node is one row of the nodes table: catalog record, health record and
// the node's fed.stats counters joined by node id.
type Node struct {
	ID        string
	Region    string
	GPU       bool
	Clearance string
	Models    []string
	// Registered is false for a node fed_health knows but the catalog no
	// longer lists (deregistered or expired).
	Registered bool

	State         string
	Circuit       string
	P50Ms         float64
	P99Ms         float64
	InFlight      int
	MaxInFlight   int
	ThroughputTPS float64

	Requests int64
	Failures int64
}

// Snapshot is one refresh of the view.
type Snapshot struct {
	Time    time.Time
	NATSURL string
	// Mesh is fed.stats' state: initializing, ready or degraded.
	Mesh     string
	Totals   record.Counters
	Unplaced map[string]int64 // by wire error code
	Nodes    []Node
	// ReqPerSec is the request rate since the previous snapshot; valid only
	// when RateKnown (not on the first refresh).
	ReqPerSec float64
	RateKnown bool
}

// BuildSnapshot joins the answers of fed.catalog.list, fed.health.list and
// fed.stats. Nodes are the catalog's plus any that only fed_health still
// knows; a node without a health record is unknown with a closed circuit.
func BuildSnapshot(cat api.ListResponse, hl api.HealthListResponse, st record.Stats, now time.Time) Snapshot {
	s := Snapshot{Time: now, Mesh: st.State, Totals: st.Counters, Unplaced: st.Unplaced}
	health := make(map[string]record.Health, len(hl.Nodes))
	for _, h := range hl.Nodes {
		health[h.NodeID] = h
	}
	seen := make(map[string]bool, len(cat.Nodes))
	for _, n := range cat.Nodes {
		seen[n.NodeID] = true
		row := Node{ID: n.NodeID, Region: n.Region, GPU: n.GPU, Clearance: n.Clearance.String(),
			Registered: true, MaxInFlight: n.MaxConcurrency}
		for _, m := range n.Models {
			row.Models = append(row.Models, m.ModelID)
		}
		s.Nodes = append(s.Nodes, fill(row, health, st.Nodes))
	}
	for _, h := range hl.Nodes {
		if !seen[h.NodeID] {
			seen[h.NodeID] = true
			s.Nodes = append(s.Nodes, fill(Node{ID: h.NodeID}, health, st.Nodes))
		}
	}
	sort.Slice(s.Nodes, func(i, j int) bool { return s.Nodes[i].ID < s.Nodes[j].ID })
	return s
}

func fill(row Node, health map[string]record.Health, counters map[string]record.Counters) Node {
	row.State, row.Circuit = record.StateUnknown, record.CircuitClosed
	if h, ok := health[row.ID]; ok {
		if h.State != "" {
			row.State = h.State
		}
		if h.Circuit != "" {
			row.Circuit = h.Circuit
		}
		row.P50Ms, row.P99Ms = h.LatencyP50Ms, h.LatencyP99Ms
		row.InFlight, row.ThroughputTPS = h.InFlight, h.ThroughputTPS
		if h.MaxConcurrency > 0 {
			row.MaxInFlight = h.MaxConcurrency
		}
	}
	if c, ok := counters[row.ID]; ok {
		row.Requests, row.Failures = c.TotalRequests, c.FailedRequests
	}
	return row
}

// WithRate sets s's request rate from the previous snapshot.
func (s Snapshot) WithRate(prev Snapshot) Snapshot {
	dt := s.Time.Sub(prev.Time).Seconds()
	if prev.Time.IsZero() || dt <= 0 || s.Totals.TotalRequests < prev.Totals.TotalRequests {
		// first refresh, clock oddity or a health restart that reset the counters
		s.ReqPerSec, s.RateKnown = 0, false
		return s
	}
	s.ReqPerSec = float64(s.Totals.TotalRequests-prev.Totals.TotalRequests) / dt
	s.RateKnown = true
	return s
}

// UnplacedTotal sums the unplaced counters over every error code.
func (s Snapshot) UnplacedTotal() int64 {
	var n int64
	for _, v := range s.Unplaced {
		n += v
	}
	return n
}
